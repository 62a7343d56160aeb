from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import png
import pytest
from PIL import Image

from subpixel.errors import ImageError
from subpixel.images import open_image

# What the camera stored for an upright picture, by EXIF orientation: the inverse of the turn
# a reader applies (Pillow's ImageOps.exif_transpose checks these for 8 bits below).
_STORED: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirrored
    3: lambda a: a[::-1, ::-1],  # upside down
    4: lambda a: a[::-1],  # flipped
    5: lambda a: np.swapaxes(a, 0, 1),  # transposed
    6: lambda a: np.rot90(a, 1),  # turned anticlockwise: the reader turns it clockwise
    7: lambda a: np.swapaxes(a[::-1, ::-1], 0, 1),  # transversed (across the other diagonal)
    8: lambda a: np.rot90(a, -1),  # turned clockwise
}


def _png_with_orientation(pixels: np.ndarray, bits: int, orientation: int) -> bytes:
    """A PNG (written by pypng, so 16-bit colour is possible) with an eXIf chunk."""
    height, width, planes = pixels.shape
    writer = png.Writer(width, height, greyscale=planes < 3, alpha=planes in (2, 4), bitdepth=bits)
    stream = io.BytesIO()
    writer.write(stream, pixels.reshape(height, width * planes).tolist())
    data = stream.getvalue()
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "camera"  # Make: kept, so the written EXIF is not empty
    body = exif.tobytes().removeprefix(b"Exif\x00\x00")
    chunk = b"eXIf" + body
    chunk = struct.pack(">I", len(body)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    end_of_header = 8 + 4 + 4 + 13 + 4  # signature, then IHDR's length, type, data, CRC
    return data[:end_of_header] + chunk + data[end_of_header:]


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("planes", [1, 2, 3, 4], ids=["gray", "gray-alpha", "rgb", "rgba"])
def test_every_orientation_comes_out_upright_and_tagged_normal(
    tmp_path: Path, orientation: int, bits: int, planes: int
) -> None:
    dtype = np.uint16 if bits == 16 else np.uint8
    # 5 x 7, every pixel different, so any turn or mirror shows.
    upright = np.arange(5 * 7 * planes).reshape(5, 7, planes).astype(dtype) * (
        3 if bits == 8 else 1000
    )
    stored = np.ascontiguousarray(_STORED[orientation](upright))
    path = tmp_path / "oriented.png"
    path.write_bytes(_png_with_orientation(stored, bits, orientation))

    if bits == 16 and planes == 2:  # Pillow reads it as 8-bit RGBA: refused, not cut
        with pytest.raises(ImageError, match="unsupported 16-bit layout"):
            open_image(path)
        return
    read = open_image(path)
    pixels = np.asarray(read.pixels)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    assert pixels.dtype == dtype
    np.testing.assert_array_equal(pixels, upright)
    assert read.size == (7, 5)
    # The EXIF written back keeps the rest but must not turn the upright pixels again.
    assert read.exif is not None
    exif = Image.Exif()
    exif.load(read.exif)
    assert exif.get(0x0112, 1) == 1 and exif[0x010F] == "camera"


def test_decoding_holds_the_image_once(tmp_path: Path) -> None:
    # Peak memory of reading an upright JPEG: the decoded pixels once (Pillow keeps RGB in 4
    # bytes a pixel), not a second copy made to close the file or to turn it upright.
    source = tmp_path / "big.jpg"
    Image.new("RGB", (8000, 6000), (10, 200, 90)).save(source, quality=50)
    # The peak is this process's own (VmHWM, reset once the imports are done): ru_maxrss would
    # count the parent's pages too, since Linux keeps it across fork and exec.
    script = (
        "import sys\n"
        "from subpixel.images import open_image\n"
        "def status(key):\n"
        "    line = next(x for x in open('/proc/self/status') if x.startswith(key + ':'))\n"
        "    return int(line.split()[1]) * 1024\n"
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        "held = status('VmRSS')\n"
        "image = open_image(sys.argv[1])\n"
        "print(status('VmHWM') - held)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(source)], capture_output=True, text=True, check=True
    )
    decoded = 8000 * 6000 * 4
    assert int(done.stdout) < 1.5 * decoded, f"{int(done.stdout) / decoded:.2f} times the image"
