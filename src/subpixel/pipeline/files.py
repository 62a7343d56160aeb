"""One input file to one output file through an ``Upscaler``: what every front end shares.

The CLI, the Ray backend and the web app all upscale a file the same way: read it (16-bit,
alpha, EXIF orientation; refusing what is too big), upscale it, write it atomically in the
output's format with its ICC profile and EXIF kept. ``upscale_file`` does that for an image or
a video; ``upscale_bytes`` does it for an image held in memory, inside a private temporary
folder, and answers the bytes of the result in the input's format (or ``format``).
``FileBatches`` does it for the jobs of a batch run with ``FileOptions.batch`` images read
ahead and upscaled together (``Upscaler.upscale_batch``: one upload and one network call for
images of one size on a GPU).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from subpixel.errors import ScaleError, SubpixelError
from subpixel.images import (
    DEFAULT_MAX_PIXELS,
    ImageFile,
    Pixels,
    open_image,
    output_format,
    palette_note,
    write_image,
)
from subpixel.pipeline.batch import VIDEO_EXTENSIONS, Job
from subpixel.upscaler import Upscaler

__all__ = ["FileBatches", "FileOptions", "Progress", "is_video", "upscale_bytes", "upscale_file"]

Progress = Callable[[int, int | None], None]
"""``progress(done, total)``: tiles of an image or frames of a video (total None if unknown)."""


@dataclass(frozen=True)
class FileOptions:
    """How a file is upscaled and written; the defaults are the CLI's.

    ``scale`` None is the network's own. ``format`` None writes the output's extension's
    format. ``quality`` applies to JPEG and WebP; ``codec``, ``crf`` and ``preset`` to videos.
    ``batch``: frames of a video upscaled together, and images of a batch run read ahead and
    upscaled together (``FileBatches``); the outputs are the same as one at a time's.
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
    batch: int = 1

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")


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
    result = upscaler(
        opened.pixels,
        scale=options.scale,
        tile=options.tile,
        max_memory=options.max_memory,
        alpha=options.alpha,
        progress=progress,
    )
    return _write(opened, result, source, target, options)


def _write(
    opened: ImageFile,
    result: Image.Image | np.ndarray,
    source: Path,
    target: Path,
    options: FileOptions,
) -> list[str]:
    """Write ``result`` (the upscaled ``opened``) to ``target``; returns the notes."""
    image_format = output_format(target, options.format)
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


class FileBatches:
    """``upscale_file`` for the jobs of a batch run, ``options.batch`` images at a time.

    Call it on each job in the order of ``jobs`` (as ``pipeline.batch.run_jobs`` does): the
    first call for an image reads it and the next ``batch - 1`` images still to do, upscales
    them together (``Upscaler.upscale_batch``) and keeps the results until their jobs come;
    each output is then written as ``upscale_file`` writes it, and is the same. Videos go
    through ``upscale_file`` (their frames in batches of ``options.batch``). An image that
    cannot be read or upscaled fails alone, raising its error when its own job comes;
    nothing is written before its job comes, so an interruption loses only results in memory.
    """

    def __init__(
        self,
        jobs: Sequence[Job],
        upscaler: Upscaler,
        options: FileOptions = FileOptions(),
        *,
        overwrite: bool = False,
    ) -> None:
        self.upscaler = upscaler
        self.options = options
        self._images = [
            job for job in jobs if not job.is_video and (overwrite or not job.target.exists())
        ]
        self._position = {job: index for index, job in enumerate(self._images)}
        self._ready: dict[Job, tuple[ImageFile, Image.Image | np.ndarray] | Exception] = {}

    def __call__(self, job: Job, *, progress: Progress | None = None) -> list[str]:
        """Upscale ``job``'s file into its target; returns ``upscale_file``'s notes."""
        if self.options.batch == 1 or job not in self._position:
            options, upscaler = self.options, self.upscaler
            return upscale_file(job.source, job.target, upscaler, options, progress=progress)
        if job not in self._ready:
            start = self._position[job]
            self._read_ahead(self._images[start : start + self.options.batch])
        outcome = self._ready.pop(job)
        if isinstance(outcome, Exception):
            raise outcome
        opened, result = outcome
        return _write(opened, result, job.source, job.target, self.options)

    def _read_ahead(self, jobs: Sequence[Job]) -> None:
        opened: dict[Job, ImageFile] = {}
        for job in jobs:
            try:
                opened[job] = open_image(job.source, max_pixels=self.options.max_pixels)
            except Exception as error:  # this file's alone, raised when its job comes
                self._ready[job] = error
        try:
            results = self._upscaled([image.pixels for image in opened.values()])
        except Exception:  # one bad image in a batch: each alone, so its error is its own
            for job, image in opened.items():
                try:
                    self._ready[job] = (image, self._upscaled([image.pixels])[0])
                except Exception as error:
                    self._ready[job] = error
            return
        for (job, image), result in zip(opened.items(), results, strict=True):
            self._ready[job] = (image, result)

    def _upscaled(self, images: list[Pixels]) -> list[Image.Image | np.ndarray]:
        return self.upscaler.upscale_batch(
            images,
            scale=self.options.scale,
            tile=self.options.tile,
            max_memory=self.options.max_memory,
            alpha=self.options.alpha,
        )


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
        batch=options.batch,
    )
