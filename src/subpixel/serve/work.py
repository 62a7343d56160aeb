"""One upload to one answer: the request's fields checked, the model ready, the file upscaled.

The upload's file name is used for two things only: its extension (the format to read and
write) and the name the result is offered for download under, both taken from a cleaned
copy. Bytes go to ``subpixel.pipeline.files.upscale_bytes`` (images) or ``upscale_file``
(videos), inside a private temporary folder, so no path from a request reaches the file
system.
"""

from __future__ import annotations

import math
import mimetypes
import shutil
import tempfile
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from subpixel.catalogue import ModelEntry, catalogue
from subpixel.engines import PRECISIONS
from subpixel.errors import MissingExtraError, SubpixelError
from subpixel.images import IMAGE_EXTENSIONS
from subpixel.limits import MAX_SCALE
from subpixel.pipeline.batch import VIDEO_EXTENSIONS
from subpixel.pipeline.files import FileOptions, Progress, upscale_bytes, upscale_file
from subpixel.streams import HEAD_SIZE, identify
from subpixel.upscaler import Upscaler, load_model
from subpixel.weights import DEFAULT_MODEL, DEFAULT_SCALE, choose_native_scale

__all__ = [
    "PRECISION_CHOICES",
    "Answer",
    "BadRequest",
    "Order",
    "Upscalers",
    "download_name",
    "parse_order",
    "safe_filename",
    "upscale_upload",
    "usable_models",
]

PRECISION_CHOICES = ("auto", *PRECISIONS)
_NAME_LENGTH = 120


class BadRequest(Exception):
    """A request the server will not serve; ``status`` is its HTTP status (4xx)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def usable_models() -> dict[str, ModelEntry]:
    """The models a request may name: bundled weights, or none needed (bicubic)."""
    return {entry.name: entry for entry in catalogue() if entry.usable}


def safe_filename(name: str | None) -> str:
    """A file name fit to show and to offer for download: no folders, no control or quoting
    characters, no leading dots; ``"image"`` when nothing is left."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = unicodedata.normalize("NFC", base)
    base = "".join(c if c.isalnum() or c in "._-+ ()[]" else "_" for c in base)
    base = base.strip(" .")[-_NAME_LENGTH:].strip(" .")
    if not Path(base).stem.strip("._ "):
        return "image" + Path(base).suffix if Path(base).suffix[1:].isalnum() else "image"
    return base


@dataclass(frozen=True)
class Order:
    """A checked request: what to upscale and how."""

    filename: str  # cleaned (``safe_filename``)
    extension: str  # ".png", ".jpg", ".mp4", ...: the format read and written
    model: str
    scale: float | None  # None: the network's own
    precision: str

    @property
    def is_video(self) -> bool:
        return self.extension in VIDEO_EXTENSIONS

    @property
    def native_scale(self) -> int:
        """The network scale the model loads at (as ``subpixel upscale`` picks it)."""
        scales = list(usable_models()[self.model].scales)
        return choose_native_scale(scales, self.scale or DEFAULT_SCALE)


def parse_order(filename: str | None, fields: Mapping[str, str], head: bytes) -> Order:
    """The request's file name and fields (``model``, ``scale``, ``precision``; empty means
    the default) checked; ``head``, the upload's first bytes, names the format of a file
    sent without an extension.

    Raises:
        BadRequest: an unknown model, a scale off (1, 16], an unknown precision (400), or a
            file that is neither an image nor a video by its extension or signature (415).
    """
    name = safe_filename(filename)
    models = usable_models()
    model = fields.get("model") or DEFAULT_MODEL
    if model not in models:
        raise BadRequest(f"unknown model {model!r}; choose from {', '.join(models)}")
    scale = _scale(fields.get("scale") or "")
    precision = fields.get("precision") or "auto"
    if precision not in PRECISION_CHOICES:
        choices = ", ".join(PRECISION_CHOICES)
        raise BadRequest(f"unknown precision {precision!r}; choose from {choices}")
    return Order(name, _extension(name, head), model, scale, precision)


def _scale(text: str) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise BadRequest(f"scale must be a number, got {text!r}") from None
    if not (math.isfinite(value) and 1 < value <= MAX_SCALE):
        raise BadRequest(f"scale must be above 1 and at most {MAX_SCALE}, got {text!r}")
    return value


def _extension(name: str, head: bytes) -> str:
    suffix = Path(name).suffix.lower()
    if suffix in IMAGE_EXTENSIONS or suffix in VIDEO_EXTENSIONS:
        return suffix
    known = " ".join((*IMAGE_EXTENSIONS, *VIDEO_EXTENSIONS))
    if suffix:
        raise BadRequest(f"{name}: unsupported file type {suffix!r}; send one of {known}", 415)
    if not head:
        raise BadRequest(f"{name} is empty (0 bytes)")
    try:
        return identify(head[:HEAD_SIZE], name).extension
    except SubpixelError as error:
        raise BadRequest(f"{error}; or name the file with one of {known}", 415) from error


def download_name(order: Order, scale: float) -> str:
    """``photo.png`` upscaled x3 is offered as ``photo_x3.png``."""
    stem = Path(order.filename).stem if Path(order.filename).suffix else order.filename
    return f"{stem}_x{scale:g}{order.extension}"


class Upscalers:
    """Ready models by (model, network scale, precision), the last few kept: the engine is
    built on a model's first image and reused after."""

    def __init__(self, device: torch.device, keep: int = 4) -> None:
        self.device = device
        self.keep = keep
        self._ready: OrderedDict[tuple[str, int, str], Upscaler] = OrderedDict()

    def get(self, model: str, scale: int, precision: str) -> Upscaler:
        key = (model, scale, precision)
        if key not in self._ready:
            self._ready[key] = load_model(
                model, scale=scale, device=self.device, precision=precision
            )
            while len(self._ready) > self.keep:
                self._ready.popitem(last=False)
        self._ready.move_to_end(key)
        return self._ready[key]


@dataclass
class Answer:
    """The upscaled file: ``content`` (an image), or ``path`` (a video, in a temporary
    folder that ``cleanup`` removes)."""

    media_type: str
    filename: str
    content: bytes | None = None
    path: Path | None = None
    cleanup: Callable[[], None] = field(default=lambda: None)


def upscale_upload(
    order: Order,
    data: bytes,
    upscalers: Upscalers,
    max_pixels: int | None,
    progress: Progress | None = None,
) -> Answer:
    """Upscale the uploaded ``data`` as ``order`` says (on the caller's thread).

    Raises:
        SubpixelError: a bad image or video (empty, corrupt, truncated, too many pixels), or
            a scale the file cannot take; the message names the upload by its file name.
    """
    upscaler = upscalers.get(order.model, order.native_scale, order.precision)
    options = FileOptions(scale=order.scale, max_pixels=max_pixels)
    media_type = mimetypes.guess_type(f"x{order.extension}")[0] or "application/octet-stream"
    name = download_name(order, order.scale or upscaler.scale)
    if not order.is_video:
        content = upscale_bytes(
            data, order.extension, upscaler, options, name=order.filename, progress=progress
        )
        return Answer(media_type, name, content=content)
    folder = tempfile.mkdtemp(prefix="subpixel-serve-")
    try:
        source = Path(folder, f"input{order.extension}")
        target = Path(folder, f"output{order.extension}")
        source.write_bytes(data)
        _check_frame_size(source, max_pixels, order.filename)
        try:
            upscale_file(source, target, upscaler, options, progress=progress)
        except SubpixelError as error:
            message = str(error).replace(str(source), order.filename)
            raise SubpixelError(message.replace(str(target), "output")) from error
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return Answer(
        media_type, name, path=target, cleanup=lambda: shutil.rmtree(folder, ignore_errors=True)
    )


def _check_frame_size(path: Path, max_pixels: int | None, name: str) -> None:
    """Refuse a video whose frames have more than ``max_pixels`` pixels before decoding it."""
    try:
        import av
    except ImportError as error:
        raise MissingExtraError("videos need PyAV: pip install 'subpixel[video]'") from error
    if max_pixels is None:
        return
    try:
        with av.open(str(path)) as container:
            streams = container.streams.video
            width, height = (streams[0].width, streams[0].height) if streams else (0, 0)
    except (av.FFmpegError, OSError, ValueError):
        return  # upscale_file says what is wrong with it
    if width * height > max_pixels:
        raise SubpixelError(
            f"{name} has {width}x{height} = {width * height:,} pixels a frame, over the limit "
            f"of {max_pixels:,}"
        )
