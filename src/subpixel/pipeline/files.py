"""One input file to one output file through an ``Upscaler``: what every front end shares.

The CLI, the Ray backend and the web app all upscale a file the same way: read it (16-bit,
alpha, EXIF orientation; refusing what is too big), upscale it, write it atomically in the
output's format with its ICC profile and EXIF kept. ``upscale_file`` does that for an image or
a video; ``upscale_bytes`` does it for an image held in memory, inside a private temporary
folder, and answers the bytes of the result in the input's format (or ``format``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from subpixel.errors import ScaleError, SubpixelError
from subpixel.images import DEFAULT_MAX_PIXELS, open_image, output_format, palette_note, write_image
from subpixel.pipeline.batch import VIDEO_EXTENSIONS
from subpixel.upscaler import Upscaler

__all__ = ["FileOptions", "Progress", "is_video", "upscale_bytes", "upscale_file"]

Progress = Callable[[int, int | None], None]
"""``progress(done, total)``: tiles of an image or frames of a video (total None if unknown)."""


@dataclass(frozen=True)
class FileOptions:
    """How a file is upscaled and written; the defaults are the CLI's.

    ``scale`` None is the network's own. ``format`` None writes the output's extension's
    format. ``quality`` applies to JPEG and WebP; ``codec``, ``crf`` and ``preset`` to videos.
    """

    scale: float | None = None
    tile: int | None = None
    max_memory: int | None = None
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    alpha: str = "bicubic"
    format: str | None = None
    quality: int = 95
    codec: str = "libx264"
    crf: int = 18
    preset: str = "medium"


def is_video(path: str | Path) -> bool:
    """Whether ``path`` names a video, by its extension."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def upscale_file(
    source: str | Path,
    target: str | Path,
    upscaler: Upscaler,
    options: FileOptions = FileOptions(),
    *,
    progress: Progress | None = None,
) -> list[str]:
    """Upscale the image or video ``source`` into ``target`` (written atomically).

    Returns notes worth telling the user (a palette image written as RGB, say); errors are
    raised as ``SubpixelError`` naming the file, or as the decoder's own exception.
    """
    source, target = Path(source), Path(target)
    if is_video(source):
        _upscale_video(source, target, upscaler, options, progress)
        return []
    opened = open_image(source, max_pixels=options.max_pixels)
    image_format = output_format(target, options.format)
    result = upscaler(
        opened.pixels,
        scale=options.scale,
        tile=options.tile,
        max_memory=options.max_memory,
        alpha=options.alpha,
        progress=progress,
    )
    extra = {"quality": options.quality} if image_format in ("JPEG", "WEBP") else {}
    write_image(
        result,
        target,
        format=options.format,
        icc_profile=opened.icc_profile,
        exif=opened.exif,
        **extra,
    )
    palette = isinstance(opened.pixels, Image.Image) and opened.pixels.mode == "P"
    if palette and isinstance(result, Image.Image):
        return [palette_note(source, target, result.mode)]
    return []


def upscale_bytes(
    data: bytes,
    extension: str,
    upscaler: Upscaler,
    options: FileOptions = FileOptions(),
    *,
    name: str = "input",
    progress: Progress | None = None,
) -> bytes:
    """Upscale an image held in memory; returns the encoded result.

    ``extension`` (``.png``, ``.jpg``, ...) says the input's format and, unless
    ``options.format`` says otherwise, the output's. Nothing touches the file system outside a
    private temporary folder, removed on return; errors name the image ``name``.
    """
    suffix = "." + extension.lower().lstrip(".")
    if suffix in VIDEO_EXTENSIONS or not suffix[1:].isalnum():
        raise SubpixelError(f"{name}: not an image extension: {extension!r}")
    out_suffix = "." + options.format.lower().lstrip(".") if options.format else suffix
    if not out_suffix[1:].isalnum():
        raise SubpixelError(f"{name}: not an image format: {options.format!r}")
    with tempfile.TemporaryDirectory(prefix="subpixel-") as folder:
        source = Path(folder, f"input{suffix}")
        target = Path(folder, f"output{out_suffix}")
        source.write_bytes(data)
        try:
            upscale_file(source, target, upscaler, options, progress=progress)
        except SubpixelError as error:
            raise SubpixelError(_renamed(str(error), {source: name, target: "output"})) from error
        return target.read_bytes()


def _renamed(message: str, names: dict[Path, str]) -> str:
    for path, name in names.items():
        message = message.replace(str(path), name)
    return message


def _upscale_video(
    source: Path,
    target: Path,
    upscaler: Upscaler,
    options: FileOptions,
    progress: Progress | None,
) -> None:
    from subpixel.pipeline.video import upscale_video

    if options.scale is not None and options.scale != upscaler.scale:
        raise ScaleError(f"videos are upscaled at the network's own scale (x{upscaler.scale})")
    upscale_video(
        source,
        target,
        upscaler,
        codec=options.codec,
        crf=options.crf,
        preset=options.preset,
        progress=progress,
    )
