"""Reading and writing image files: clear errors, upright pixels, metadata kept, atomic writes.

Policy for image kinds (what ``subpixel.inference`` does with each Pillow mode):

- ``RGB``: colour. ``L``: grayscale. ``RGBA`` / ``LA``: colour or grayscale plus alpha.
- 16-bit files: grayscale PNG/TIFF (Pillow's ``I;16``) and 16-bit RGB/RGBA PNG and TIFF (read
  with pypng / tifffile, since Pillow would cut them to 8 bits) are computed in float and
  written back at 16 bits.
- ``P`` (palette): converted to ``RGBA`` when it has transparency, else ``RGB``; the result
  is not a palette image. ``1`` (bilevel) becomes ``L``; ``CMYK``, ``YCbCr``, ``LAB`` and
  ``HSV`` become ``RGB``.
- Anything else (32-bit integer or float images) is refused with an ``ImageError``.

EXIF orientation is applied when reading, so pixels are upright and the written EXIF says
"normal" orientation; the ICC profile and the rest of the EXIF data are written back.
Images with more than ``max_pixels`` pixels (default: Pillow's decompression-bomb limit,
about 89 megapixels) are refused before they are decoded.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from subpixel.errors import ImageError
from subpixel.temporaries import temporary_name

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageFile",
    "open_image",
    "output_format",
    "read_image",
    "write_image",
]

DEFAULT_MAX_PIXELS: int = Image.MAX_IMAGE_PIXELS or 89_478_485
_METADATA_FORMATS = {"PNG", "JPEG", "WEBP", "TIFF"}
Pixels = Image.Image | np.ndarray


@dataclass(frozen=True)
class ImageFile:
    """Decoded pixels and the metadata to write back.

    ``pixels`` is a PIL image, or a uint16 (H, W, 3 or 4) array for 16-bit colour files.
    """

    pixels: Pixels
    icc_profile: bytes | None = None
    exif: bytes | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        if isinstance(self.pixels, Image.Image):
            return self.pixels.size
        return self.pixels.shape[1], self.pixels.shape[0]


@contextlib.contextmanager
def _our_pixel_limit() -> Iterator[None]:
    # The limit is enforced below, with a clear message and an override; Pillow's own
    # warning/error would otherwise fire first.
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ImageError(f"input not found: {path}")
    if not path.is_file():
        raise ImageError(f"input is not a file: {path}")
    if path.stat().st_size == 0:
        raise ImageError(f"input is empty (0 bytes): {path}")


def _decode(path: Path, max_pixels: int | None) -> tuple[Image.Image, str | None]:
    """The decoded image, and the format (PNG/TIFF) if the file holds 16-bit colour."""
    try:
        with _our_pixel_limit(), Image.open(path) as handle:
            width, height = handle.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageError(
                    f"{path} has {width}x{height} = {width * height:,} pixels, over the limit of "
                    f"{max_pixels:,}; allow it with --max-pixels"
                )
            handle.load()  # decode now, so truncation surfaces here and not later
            image = handle.copy()
            image.info = dict(handle.info)
            sixteen_bit_colour = handle.format if _is_sixteen_bit_colour(handle) else None
    except UnidentifiedImageError as error:
        raise ImageError(f"not an image Pillow can read: {path}") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"cannot decode image {path}: {error}") from error
    return image, sixteen_bit_colour


def _is_sixteen_bit_colour(handle: Image.Image) -> bool:
    if handle.mode not in ("RGB", "RGBA"):
        return False
    if handle.format == "PNG":
        return _png_bit_depth(handle) == 16
    if handle.format == "TIFF":
        bits = getattr(handle, "tag_v2", {}).get(258)
        return bool(bits) and max(bits if isinstance(bits, tuple) else (bits,)) == 16
    return False


def _png_bit_depth(handle: Image.Image) -> int | None:
    filename = getattr(handle, "filename", None)
    if not filename:
        return None
    with open(filename, "rb") as stream:
        header = stream.read(26)
    return header[24] if len(header) == 26 and header[12:16] == b"IHDR" else None


def read_image(path: str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open and fully decode an image file, upright (EXIF orientation applied).

    Raises:
        ImageError: the file is missing, empty, not an image, truncated, or has more than
            ``max_pixels`` pixels (``None``: no limit).
    """
    return _read(Path(path), max_pixels)[0]


def _read(path: Path, max_pixels: int | None) -> tuple[Image.Image, str | None]:
    _check_file(path)
    image, sixteen_bit_colour = _decode(path, max_pixels)
    upright = ImageOps.exif_transpose(image)
    return (upright if upright is not None else image), sixteen_bit_colour


def open_image(path: str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageFile:
    """Read pixels (16-bit colour as a uint16 array) and the ICC profile and EXIF to keep."""
    path = Path(path)
    image, sixteen_bit_colour = _read(path, max_pixels)
    icc = image.info.get("icc_profile")
    exif = image.getexif()
    exif_bytes = exif.tobytes() if len(exif) else None
    pixels: Pixels = image
    if sixteen_bit_colour:
        pixels = _read_sixteen_bit_colour(path, sixteen_bit_colour, image.size)
    return ImageFile(pixels, icc_profile=icc or None, exif=exif_bytes)


def _read_sixteen_bit_colour(path: Path, file_format: str, size: tuple[int, int]) -> np.ndarray:
    try:
        if file_format == "TIFF":
            import tifffile

            array = np.asarray(tifffile.imread(path))
        else:
            import png

            width, height, rows, info = png.Reader(filename=str(path)).asDirect()
            planes = info["planes"]
            array = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows])
            array = array.reshape(height, width, planes)
    except Exception as error:  # the decoders raise their own error types
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        if "imagecodecs" in reason:
            reason += " (pip install imagecodecs)"
        raise ImageError(f"cannot decode 16-bit image {path}: {reason}") from error
    if array.dtype != np.uint16 or array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ImageError(f"unsupported 16-bit layout {array.dtype} {array.shape} in {path}")
    # Apply the same orientation as the 8-bit decode did.
    if (array.shape[1], array.shape[0]) != size:
        array = np.ascontiguousarray(np.rot90(array))
    return array


def output_format(path: str | Path, format: str | None = None) -> str:
    """The Pillow format name for ``format`` or the path's extension (``.png`` -> ``PNG``)."""
    if format:
        name = format.upper().replace("JPG", "JPEG").replace("TIF", "TIFF").replace("TIFFF", "TIFF")
        if name not in Image.SAVE:
            raise ImageError(f"unknown output format {format!r}")
        return name
    extension = Path(path).suffix.lower()
    formats = Image.registered_extensions()
    if extension not in formats or formats[extension] not in Image.SAVE:
        raise ImageError(f"cannot tell the output format from {str(path)!r}; use .png, .jpg, ...")
    return formats[extension]


def write_image(
    pixels: Pixels,
    path: str | Path,
    *,
    format: str | None = None,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    **options: object,
) -> Path:
    """Save through a temporary file and a rename: no partial file is ever left at ``path``.

    ``options`` go to ``Image.save`` (for example ``quality=95`` for JPEG). uint16 colour
    arrays are written as 16-bit PNG or TIFF.
    """
    path = Path(path)
    image_format = output_format(path, format)
    if not path.parent.is_dir():
        raise ImageError(f"output folder does not exist: {path.parent}")
    if isinstance(pixels, Image.Image):
        if image_format == "JPEG" and pixels.mode not in ("RGB", "L", "CMYK"):
            raise ImageError(f"JPEG cannot store a {pixels.mode} image; use .png for {path}")
        if image_format in _METADATA_FORMATS:
            if icc_profile:
                options["icc_profile"] = icc_profile
            if exif:
                options["exif"] = exif
    elif image_format not in ("PNG", "TIFF"):
        raise ImageError(f"{image_format} cannot store 16-bit colour; use .png or .tif for {path}")
    try:
        temporary = temporary_beside(path)
    except OSError as error:
        raise ImageError(f"cannot write to {path.parent}: {error.strerror}") from error
    try:
        with open(temporary, "wb") as stream:
            if isinstance(pixels, Image.Image):
                pixels.save(stream, format=image_format, **options)
        if not isinstance(pixels, Image.Image):
            _write_sixteen_bit_colour(Path(temporary), pixels, image_format, icc_profile)
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        if isinstance(error, (OSError, ValueError, KeyError, TypeError)):
            raise ImageError(f"cannot write {path}: {error}") from error
        raise
    return path


def temporary_beside(path: Path, suffix: str = "") -> Path:
    """A new empty file beside ``path`` (hidden, ending ``.tmp`` + ``suffix``, named by
    ``subpixel.temporaries.temporary_name``) to write and then rename onto it.

    Created like an ordinary file (mode 0o666 less the umask), not 0o600 as ``mkstemp``
    would, so the renamed result has the permissions the user expects. Raises OSError.
    """
    while True:
        candidate = temporary_name(path, suffix)
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return candidate


def _write_sixteen_bit_colour(
    path: Path, array: np.ndarray, image_format: str, icc_profile: bytes | None
) -> None:
    height, width, planes = array.shape
    if image_format == "TIFF":
        import tifffile

        tifffile.imwrite(path, array, photometric="rgb", iccprofile=icc_profile)
        return
    import png

    writer = png.Writer(width, height, greyscale=False, alpha=planes == 4, bitdepth=16)
    with path.open("wb") as stream:
        writer.write(stream, array.reshape(height, width * planes).tolist())
