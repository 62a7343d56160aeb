"""Reading and writing image files: clear errors, upright pixels, metadata kept, atomic writes.

Policy for image kinds (what ``subpixel.pipeline.image`` does with each Pillow mode):

- ``RGB``: colour. ``L``: grayscale. ``RGBA`` / ``LA``: colour or grayscale plus alpha.
- 16-bit files: grayscale PNG/TIFF (Pillow's ``I;16``) and 16-bit RGB/RGBA PNG and TIFF (read
  with pypng / tifffile, since Pillow would cut them to 8 bits) are computed in float and
  written back at 16 bits.
- ``P`` (palette): converted to ``RGBA`` when it has transparency, else ``RGB``; the result
  is not a palette image (written as GIF it is one again, with a new palette;
  :func:`palette_note` says which). ``1`` (bilevel) becomes ``L``; ``CMYK``, ``YCbCr``,
  ``LAB`` and ``HSV`` become ``RGB``.
- Anything else (32-bit integer or float images) is refused with an ``ImageError``, and so
  are animations (GIF, APNG, WebP) and multi-page files (TIFF): only their first frame would
  be kept.

EXIF orientation is applied when reading, so pixels are upright and the written EXIF says
"normal" orientation; the ICC profile and the rest of the EXIF data are written back.
Images with more than ``max_pixels`` pixels (default: Pillow's decompression-bomb limit,
about 89 megapixels) are refused before they are decoded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from subpixel.errors import ImageError
from subpixel.files import atomic_path

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "ImageFile",
    "open_image",
    "output_format",
    "palette_note",
    "read_image",
    "write_image",
]

DEFAULT_MAX_PIXELS: int = Image.MAX_IMAGE_PIXELS or 89_478_485
#: What counts as an image file when a folder is listed (batches, evaluation, training data).
IMAGE_EXTENSIONS = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".tif",
    ".tiff",
    ".webp",
    ".gif",
    ".ppm",
    ".pgm",
    ".tga",
)
_METADATA_FORMATS = {"PNG", "JPEG", "WEBP", "TIFF"}
_ANIMATED_FORMATS = {"GIF", "PNG", "WEBP", "AVIF", "FLI"}  # APNG is "PNG"
# Camera MPO files hold the photo then previews or a stereo partner; PSD files the composite
# then its layers: the first frame is the picture.
_FIRST_FRAME_IS_THE_IMAGE = {"MPO", "PSD"}
Pixels = Image.Image | np.ndarray
_ORIENTATION = 0x0112  # the EXIF tag
# EXIF orientation -> what turns the stored (H, W, C) pixels upright, as ImageOps.exif_transpose
# does for Pillow images: 2 mirrored, 3 upside down, 4 flipped, 5 transposed, 6 turned a
# quarter anticlockwise (so turn it clockwise), 7 transversed, 8 turned clockwise.
_UPRIGHT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


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
        with _our_pixel_limit():
            handle = Image.open(path)
        try:
            width, height = handle.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageError(
                    f"{path} has {width}x{height} = {width * height:,} pixels, over the limit of "
                    f"{max_pixels:,}; allow it with --max-pixels"
                )
            _refuse_many_frames(handle, path)
            with _our_pixel_limit():
                handle.load()  # decode now, so truncation surfaces here and not later
            sixteen_bit_colour = handle.format if _is_sixteen_bit_colour(handle) else None
        except BaseException:
            handle.close()
            raise
    except UnidentifiedImageError as error:
        raise ImageError(f"not an image Pillow can read: {path}") from error
    except (OSError, SyntaxError, ValueError, RuntimeError) as error:  # AVIF: RuntimeError
        raise ImageError(f"cannot decode image {path}: {error}") from error
    if handle.fp is None:  # a single frame: Pillow closed the file once it was decoded
        return handle, sixteen_bit_colour
    image = handle.copy()  # formats that keep the file open for more frames: keep a copy
    image.info = dict(handle.info)
    handle.close()
    return image, sixteen_bit_colour


def _refuse_many_frames(handle: Image.Image, path: Path) -> None:
    """Refuse animations and multi-page files rather than keep their first frame silently."""
    frames = int(getattr(handle, "n_frames", 1))
    if frames < 2 or handle.format in _FIRST_FRAME_IS_THE_IMAGE:
        return
    if handle.format in _ANIMATED_FORMATS:
        kind, hint = f"animated image with {frames} frames", "e.g. ffmpeg -i IN frame%04d.png"
    else:
        kind, hint = f"multi-page image with {frames} pages", "one file per page"
    raise ImageError(f"{path}: {kind}; subpixel upscales still images only; split it ({hint})")


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


def _read(path: Path, max_pixels: int | None) -> tuple[Image.Image, str | None, int]:
    """The upright image, the format if the file holds 16-bit colour, and the EXIF
    orientation that was applied (1..8; 1: none)."""
    _check_file(path)
    image, sixteen_bit_colour = _decode(path, max_pixels)
    try:
        _check_exif(image)
        orientation = image.getexif().get(_ORIENTATION, 1)
        upright = ImageOps.exif_transpose(image, in_place=True)  # no copy when already upright
    except Exception as error:  # Pillow's EXIF parser raises SyntaxError, struct.error, ...
        raise ImageError(f"corrupt EXIF data in {path}: {_first_line(error)}") from error
    if not isinstance(orientation, int) or orientation not in _UPRIGHT:
        orientation = 1  # exif_transpose ignores values outside 2..8 too
    return (upright if upright is not None else image), sixteen_bit_colour, orientation


def _check_exif(image: Image.Image) -> None:
    """Parse the file's raw EXIF block on its own: some decoders (JPEG) parse it while opening
    and keep an empty table when it is corrupt, which would drop the metadata silently."""
    raw = image.info.get("exif")
    if raw:
        Image.Exif().load(raw)


def open_image(path: str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageFile:
    """Read pixels (16-bit colour as a uint16 array) and the ICC profile and EXIF to keep."""
    path = Path(path)
    image, sixteen_bit_colour, orientation = _read(path, max_pixels)
    icc = image.info.get("icc_profile")
    try:
        exif = image.getexif()
        exif_bytes = exif.tobytes() if len(exif) else None
    except Exception as error:  # as in _read
        raise ImageError(f"corrupt EXIF data in {path}: {_first_line(error)}") from error
    pixels: Pixels = image
    if sixteen_bit_colour:
        stored = _read_sixteen_bit_colour(path, sixteen_bit_colour)
        pixels = np.ascontiguousarray(_UPRIGHT[orientation](stored))
    return ImageFile(pixels, icc_profile=icc or None, exif=exif_bytes)


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _read_sixteen_bit_colour(path: Path, file_format: str) -> np.ndarray:
    """The (H, W, 3 or 4) uint16 pixels as stored (not yet turned upright)."""
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
    return array


def output_format(path: str | Path, format: str | None = None) -> str:
    """The Pillow format name for ``format`` or the path's extension (``.png`` -> ``PNG``).

    ``format`` is a format name or an extension (``jpg``, ``.tif``, ``WebP``).

    Raises:
        ImageError: Pillow cannot write that format, or the path has no known extension.
    """
    Image.init()  # Pillow loads its plugins lazily; until then Image.SAVE lacks most formats
    extensions = Image.registered_extensions()
    if format:
        name = format.lower().lstrip(".")
        pillow_name = extensions.get(f".{name}", name.upper())
        if pillow_name not in Image.SAVE:
            raise ImageError(f"unknown output format {format!r}")
        return pillow_name
    extension = Path(path).suffix.lower()
    if extension not in extensions or extensions[extension] not in Image.SAVE:
        raise ImageError(f"cannot tell the output format from {str(path)!r}; use .png, .jpg, ...")
    return extensions[extension]


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
        with atomic_path(path) as temporary:
            try:
                if isinstance(pixels, Image.Image):
                    with open(temporary, "wb") as stream:
                        pixels.save(stream, format=image_format, **options)
                else:
                    _write_sixteen_bit_colour(temporary, pixels, image_format, icc_profile)
            except (OSError, ValueError, KeyError, TypeError) as error:
                raise ImageError(f"cannot write {path}: {error}") from error
    except OSError as error:  # the temporary could not be made, or the rename failed
        raise ImageError(f"cannot write to {path.parent}: {error.strerror}") from error
    return path


def palette_note(source: str | Path, target: str | Path, upscaled_mode: str) -> str:
    """What became of a palette image ``source`` upscaled in ``upscaled_mode`` and written to
    ``target``, read back from the file (a GIF is a palette image again, RGB is not)."""
    try:
        with Image.open(target) as written:
            mode, kind = written.mode, written.format
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"cannot read back {target}: {error}") from error
    if mode == "P":
        return (
            f"{source} is a palette image; upscaled as {upscaled_mode} and written as a "
            f"{kind} palette image again, with a new palette of up to 256 colours"
        )
    return f"{source} is a palette image; written as {mode} {kind}"


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
