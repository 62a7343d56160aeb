"""Reading and writing image files with Pillow: clear errors, atomic writes.

Policy for image kinds (what ``subpixel.inference`` does with each Pillow mode):

- ``RGB``: colour. ``L``: grayscale. ``RGBA`` / ``LA``: colour or grayscale plus alpha; the
  alpha channel is upscaled by bicubic, not by the network.
- ``I;16`` (16-bit grayscale PNG/TIFF): computed in float, written back at 16 bits.
- ``P`` (palette): converted to ``RGBA`` when it has transparency, else ``RGB``; the result
  is not a palette image. ``1`` (bilevel) becomes ``L``; ``CMYK``, ``YCbCr``, ``LAB`` and
  ``HSV`` become ``RGB``.
- Anything else (32-bit integer or float images) is refused with an ``ImageError``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from subpixel.errors import ImageError

__all__ = ["output_format", "read_image", "write_image"]


def read_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image file.

    Raises:
        ImageError: the file is missing, empty, not an image, truncated or a decompression
            bomb (more pixels than Pillow's ``Image.MAX_IMAGE_PIXELS`` limit).
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"input not found: {path}")
    if not path.is_file():
        raise ImageError(f"input is not a file: {path}")
    if path.stat().st_size == 0:
        raise ImageError(f"input is empty (0 bytes): {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as handle:
                handle.load()  # decode now, so truncation surfaces here and not later
                image = handle.copy()
                image.format = handle.format
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(f"refusing a very large image: {path} ({error})") from error
    except UnidentifiedImageError as error:
        raise ImageError(f"not an image Pillow can read: {path}") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"cannot decode image {path}: {error}") from error
    return image


def output_format(path: str | Path) -> str:
    """The Pillow format name for an output path's extension (``.png`` -> ``PNG``)."""
    extension = Path(path).suffix.lower()
    formats = Image.registered_extensions()
    if extension not in formats:
        raise ImageError(f"cannot tell the output format from {str(path)!r}; use .png, .jpg, ...")
    return formats[extension]


def write_image(image: Image.Image, path: str | Path, **options: object) -> Path:
    """Save ``image`` to ``path`` through a temporary file and a rename.

    No partial file is left at ``path`` if encoding fails or the process is interrupted.
    ``options`` go to ``Image.save`` (for example ``quality=95`` for JPEG).
    """
    path = Path(path)
    image_format = output_format(path)
    if image_format == "JPEG" and image.mode not in ("RGB", "L", "CMYK"):
        raise ImageError(f"JPEG cannot store a {image.mode} image; use .png for {path}")
    if not path.parent.is_dir():
        raise ImageError(f"output folder does not exist: {path.parent}")
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            image.save(stream, format=image_format, **options)
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        if isinstance(error, (OSError, ValueError, KeyError)):
            raise ImageError(f"cannot write {path}: {error}") from error
        raise
    return path
