"""Upscaling video files and y4m pipes with PyAV: frames by the network, audio copied.

:func:`upscale_video` decodes the first video stream, upscales every frame and encodes it
(H.264 by default), copying the audio. What is kept:

- **Timing**: every frame keeps its presentation timestamp (in the input stream's time base),
  so constant and variable frame rates both survive; the encoder is told the average rate.
- **Orientation**: the display matrix (the side data behind phone videos' "rotate", flips
  included) is copied to the output stream, its translation terms multiplied by the scale.
  FFmpeg 7+ neither reads nor writes the old ``rotate`` metadata tag, so there is no tag to
  copy. y4m has no place for it.
- **Colour tags and shape**: the matrix, range, primaries, transfer and sample aspect ratio.
- **Audio**: every audio stream, packet for packet (no re-encode), with its language and
  title; none into y4m, which holds video only.
- **Subtitles, data and attachments** (fonts in Matroska): copied likewise where the output
  container holds them (text subtitles: SubRip/ASS in .mkv, mov_text in .mp4/.mov). A stream
  that cannot be kept is left out with a warning (logged) that names it: no container
  conversion is attempted.
- **Metadata**: the container's title, comment, description, copyright, artist, date,
  creation time and location.

Y-channel networks (``card.colour_space == "y"``) work on the decoder's YUV planes: the video's
luma is already 8-bit studio-swing Y (16..235), which is what the networks were trained on, so
Y / 255 goes straight in (full-range video is mapped to studio swing and back); the chroma
planes are upscaled by MATLAB-style bicubic and the output frame is built in yuv420p, with no
round trip through RGB. (The networks were trained on BT.601 luma; HD video's luma is BT.709,
a slightly different mix of R, G and B.) Other pixel formats (4:2:2, 4:4:4, 10-bit) are first
converted to yuv420p. The chroma resize keeps colour where it was: it follows where the
input's chroma samples sit (left-aligned for MPEG/H.264 video, centred for JPEG and y4m's
``420jpeg``; y4m says which in its header) and where the output's will be read (left for
H.264, centred for y4m, whose header PyAV cannot change from ``420jpeg``).

RGB networks get ``frame.to_ndarray(format="rgb24")`` through swscale's accurate path (its
default repeats chroma samples); their output goes back to YUV with the input's matrix and
range, and its chroma is subsampled to the output's siting.

yuv420p needs even sizes. ``r W`` is odd only when both the scale and the width are odd; the
output then drops its last column (and likewise the last row): one HR pixel, a third of an LR
pixel at x3. A stream whose frame size changes midway is refused; interlaced video is
upscaled as progressive frames.

``"-"`` reads stdin and writes stdout, as YUV4MPEG2 (y4m) by default, so that subpixel can sit
in an FFmpeg pipeline::

    ffmpeg -i in.mp4 -f yuv4mpegpipe - | subpixel upscale - -o - |
        ffmpeg -f yuv4mpegpipe -i - out.mp4

Files are written through a temporary file beside the target and a rename, so a failure or
Ctrl-C never leaves a partial output (stdout cannot be taken back).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
import torch
from torch import nn

from subpixel.errors import MissingExtraError, SubpixelError

try:
    import av
    from av.container import InputContainer, OutputContainer
    from av.packet import Packet
    from av.sidedata.sidedata import Type as SideDataType
    from av.stream import Stream
    from av.video.frame import VideoFrame
    from av.video.reformatter import Interpolation
    from av.video.stream import VideoStream
except ImportError as error:
    if (error.name or "av").partition(".")[0] != "av":
        raise
    raise MissingExtraError("videos need PyAV: pip install 'subpixel[video]'") from error

from subpixel.bicubic import sited_phase_weights
from subpixel.files import atomic_path
from subpixel.images import IMAGE_EXTENSIONS
from subpixel.pipeline.muxer import BackgroundMuxer
from subpixel.upscaler import Upscaler, as_upscaler

__all__ = ["VideoError", "VideoReport", "upscale_video"]

logger = logging.getLogger(__name__)

#: Where ``"-"`` and file objects get their format when none is given.
PIPE_FORMAT = "yuv4mpegpipe"

_CONTAINER_TAGS = (
    "title",
    "comment",
    "description",
    "copyright",
    "artist",
    "date",
    "creation_time",
    "location",
)
_STREAM_TAGS = ("language", "title")
_JPEG_RANGE = 2  # AVCOL_RANGE_JPEG: full-swing 0..255 luma
# Horizontal position of 4:2:0 chroma, in luma pixels right of the left of its two columns.
_LEFT, _CENTRE = 0.0, 0.5
# swscale's default yuv420p <-> rgb24 path repeats each chroma sample (nearest neighbour);
# accurate rounding forces its filtering path, full chroma interpolation each RGB pixel's own.
_SWSCALE_FLAGS = Interpolation.BICUBIC | Interpolation.FULL_CHR_H_INT | Interpolation.ACCURATE_RND

Source = str | Path | IO[bytes]
Target = str | Path | IO[bytes]
Progress = Callable[[int, int | None], None]


class VideoError(SubpixelError):
    """A video is missing, empty, corrupt, truncated, or uses a codec or format we cannot handle."""


@dataclass(frozen=True)
class VideoReport:
    """What :func:`upscale_video` did.

    Attributes:
        frames: frames decoded, upscaled and written.
        seconds: wall-clock time of the whole job (decode, network, encode).
        fps: ``frames / seconds``.
        input_size: (width, height) of the decoded frames.
        output_size: (width, height) of the written frames.
        audio_streams: audio streams copied (none into y4m, which holds video only).
        rotation: counter-clockwise display rotation in degrees, kept from the input (0: none).
        subtitle_streams: subtitle streams copied.
        data_streams: data and attachment streams copied.
        left_out: the input streams not kept, each described with the reason.
    """

    frames: int
    seconds: float
    fps: float
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    audio_streams: int
    rotation: int
    subtitle_streams: int = 0
    data_streams: int = 0
    left_out: tuple[str, ...] = ()


def upscale_video(
    source: Source,
    target: Target,
    model: Upscaler | nn.Module | str | Path,
    *,
    codec: str = "libx264",
    crf: int = 18,
    preset: str = "medium",
    pixel_format: str = "yuv420p",
    progress: Progress | None = None,
    max_frames: int | None = None,
    input_format: str | None = None,
    output_format: str | None = None,
    batch: int = 1,
) -> VideoReport:
    """Upscale every frame of a video with ``model``, copying the audio and subtitles.

    Args:
        source: a video file, ``"-"`` for stdin, or a readable binary file object.
        target: the output file (its extension picks the container: ``.mp4``, ``.mkv``,
            ``.mov``, ``.y4m``, ...), ``"-"`` for stdout, or a writable binary file object.
            Files are written atomically; the target may not be the source.
        model: an ``Upscaler`` (``subpixel.load_model``), a bundled name or weights file, or
            a network (run as it is: ``subpixel.upscaler.as_upscaler``).
        codec: video encoder; ignored for y4m, which holds raw frames.
        crf: constant rate factor, passed to the encoder (x264/x265: 0 lossless, 18 visually
            lossless, 23 default).
        preset: encoder speed preset (x264: ``ultrafast`` ... ``veryslow``).
        pixel_format: pixel format of the written frames.
        progress: called after each frame with (frames done, total or None when unknown).
        max_frames: stop after this many frames (audio is copied up to where reading
            stopped).
        input_format: FFmpeg demuxer name; None probes (stdin and file objects included).
        output_format: FFmpeg muxer name; None takes it from the target's extension, and
            y4m for ``"-"`` and file objects.
        batch: frames upscaled together: a Y network runs once on ``batch`` frames (one
            upload and one network call per batch on a GPU). The frames are the same as one
            at a time's; only the memory held (``batch`` decoded and upscaled frames) grows.

    Returns:
        A :class:`VideoReport`.

    Raises:
        VideoError: the input is missing, empty, not a video, corrupt or truncated; a codec
            or format is unknown; the target is not a video container that can hold
            ``codec`` (checked before any work); the output cannot be written. Nothing is
            left at ``target``.

    Example:
        >>> import subpixel
        >>> from subpixel.pipeline.video import upscale_video
        >>> model = subpixel.load_model("bicubic", scale=2)
        >>> report = upscale_video("in.mp4", "out.mp4", model)  # doctest: +SKIP
    """
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    upscaler = as_upscaler(model)
    _check_encoder(codec)
    _check_target(target, codec, output_format)
    _refuse_overwrite(source, target)
    started = time.perf_counter()
    head = _peek(source)
    with contextlib.ExitStack() as stack:
        input_container = stack.enter_context(_open_input(source, input_format))
        video_in = _video_stream(input_container, source)
        others_in = [s for s in input_container.streams if s.type != "video" or s is not video_in]
        output_container = stack.enter_context(_open_output(target, output_format))
        with torch.inference_mode():
            frames, video_out, copies = _transcode(
                input_container,
                output_container,
                video_in,
                others_in,
                upscaler,
                _EncoderSettings(codec, crf, preset, pixel_format),
                _chroma_offset(video_in, head),
                progress,
                max_frames,
                batch,
            )
    seconds = time.perf_counter() - started
    return VideoReport(
        frames=frames,
        seconds=seconds,
        fps=frames / seconds if seconds > 0 else float("inf"),
        input_size=video_out.input_size,
        output_size=video_out.size,
        audio_streams=copies.count("audio"),
        rotation=video_out.rotation,
        subtitle_streams=copies.count("subtitle"),
        data_streams=copies.count("data"),
        left_out=copies.left_out,
    )


@dataclass(frozen=True)
class _EncoderSettings:
    codec: str
    crf: int
    preset: str
    pixel_format: str


def _check_encoder(codec: str) -> None:
    try:
        found = av.Codec(codec, "w")
    except (av.FFmpegError, ValueError) as error:  # UnknownCodecError is a ValueError
        raise VideoError(f"unknown video encoder {codec!r}") from error
    if found.type != "video":
        raise VideoError(f"{codec!r} encodes {found.type}, not video")


def _check_target(target: Target, codec: str, output_format: str | None) -> None:
    """Refuse, before any work, a target file that cannot hold the video: an image's name
    (``out.gif``, ``out.png``) or a container without room for ``codec`` (H.264 in .webm)."""
    if not isinstance(target, (str, Path)) or str(target) == "-":
        return
    path = Path(target)
    if output_format is None and path.suffix.lower() in IMAGE_EXTENSIONS:
        raise VideoError(
            f"{path} is an image file name; write the video to .mp4, .mkv, .mov or .y4m"
        )
    # Opening for writing only picks the muxer: nothing is created before the header.
    with _written(str(path), output_format, str(path)) as probe:
        if probe.format.name == PIPE_FORMAT:
            return  # raw frames: the codec is not used
        try:
            probe.add_stream(codec)
        except ValueError as error:
            raise VideoError(
                f"the {probe.format.name} format cannot hold {codec} video ({path}); write "
                ".mp4, .mkv or .mov, or choose another codec"
            ) from error


def _name(where: Source | Target) -> str:
    if isinstance(where, (str, Path)):
        return "stdin" if str(where) == "-" else str(where)
    return getattr(where, "name", None) or type(where).__name__


def _refuse_overwrite(source: Source, target: Target) -> None:
    if not isinstance(source, (str, Path)) or not isinstance(target, (str, Path)):
        return
    if str(source) == "-" or str(target) == "-":
        return
    source_path, target_path = Path(source), Path(target)
    same = source_path.resolve() == target_path.resolve()
    with contextlib.suppress(OSError):
        same = same or os.path.samefile(source_path, target_path)
    if same:
        raise VideoError(f"refusing to overwrite the input: {target}")


@contextlib.contextmanager
def _open_input(source: Source, input_format: str | None) -> Iterator[InputContainer]:
    name = _name(source)
    opened: str | IO[bytes]
    if isinstance(source, (str, Path)) and str(source) == "-":
        opened = _counted(sys.stdin.buffer)
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise VideoError(f"input not found: {path}")
        if not path.is_file():
            raise VideoError(f"input is not a file: {path}")
        if path.stat().st_size == 0:
            raise VideoError(f"input is empty (0 bytes): {path}")
        opened = str(path)
    else:
        opened = _counted(source)
    try:
        container = av.open(opened, "r", format=input_format)
    except (av.FFmpegError, OSError, ValueError) as error:
        raise VideoError(f"not a video FFmpeg can read: {name} ({_reason(error)})") from error
    with container:
        yield container


def _peek(source: Source, size: int = 256) -> bytes:
    """The first bytes of the input without consuming them; b"" where that is not possible."""
    stream: Any = source
    if isinstance(source, (str, Path)):
        if str(source) != "-":
            try:
                with open(source, "rb") as handle:
                    return handle.read(size)
            except OSError:
                return b""  # _open_input reports it
        stream = sys.stdin.buffer
    if hasattr(stream, "peek"):  # buffered readers, stdin included: one read, kept in the buffer
        return bytes(stream.peek(size)[:size])
    if stream.seekable():
        position = stream.tell()
        head = stream.read(size)
        stream.seek(position)
        return bytes(head)
    return b""


def _chroma_offset(video_in: VideoStream, head: bytes) -> float:
    """Where the input's 4:2:0 chroma sits: y4m says so in its header (``C420jpeg`` is centred,
    ``C420mpeg2`` left); MPEG video defaults to left, JPEG to centre. PyAV does not expose the
    decoder's own chroma location."""
    if head.startswith(b"YUV4MPEG2 "):
        tags = head.split(b"\n", 1)[0].split()
        chroma = next((tag[1:] for tag in tags if tag.startswith(b"C")), b"420jpeg")
        return _LEFT if chroma in (b"420mpeg2", b"420paldv") else _CENTRE
    return _CENTRE if video_in.codec_context.name == "mjpeg" else _LEFT


def _video_stream(container: InputContainer, source: Source) -> VideoStream:
    if not container.streams.video:
        raise VideoError(f"no video stream in {_name(source)}")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        raise VideoError(f"no decoder for the video codec of {_name(source)}")
    stream.thread_type = "AUTO"  # frame + slice threads: decoding is not the bottleneck
    return stream


@contextlib.contextmanager
def _open_output(target: Target, output_format: str | None) -> Iterator[OutputContainer]:
    """An output container; for a file path, a temporary file renamed over it on success."""
    if not isinstance(target, (str, Path)) or str(target) == "-":
        stream = sys.stdout.buffer if isinstance(target, (str, Path)) else target
        with _written(stream, output_format or PIPE_FORMAT, _name(target)) as container:
            yield container
        stream.flush()
        return
    path = Path(target)
    if not path.parent.is_dir():
        raise VideoError(f"output folder does not exist: {path.parent}")
    with contextlib.ExitStack() as stack:
        try:  # FFmpeg picks the muxer by the temporary's extension
            temporary = stack.enter_context(atomic_path(path, suffix=path.suffix))
        except OSError as error:
            raise VideoError(f"cannot write to {path.parent}: {error.strerror}") from error
        with _written(str(temporary), output_format, str(path)) as container:
            yield container


@contextlib.contextmanager
def _written(
    where: str | IO[bytes], output_format: str | None, name: str
) -> Iterator[OutputContainer]:
    try:
        container = av.open(where, "w", format=output_format)
    except (av.FFmpegError, ValueError) as error:
        if output_format is not None:
            raise VideoError(
                f"cannot write {output_format!r} to {name}: {_reason(error)}"
            ) from error
        raise VideoError(
            f"cannot tell the output format from {name!r}; use .mp4, .mkv, .mov or .y4m"
        ) from error
    try:
        with container:  # closing writes the trailer (the index, for mp4)
            yield container
    except av.FFmpegError as error:
        raise VideoError(f"cannot write {name}: {_reason(error)}") from error


def _reason(error: BaseException) -> str:
    # PyAV's messages start with "[Errno N]" and end with the file name; keep the words.
    text = str(error)
    if text.startswith("[Errno"):
        text = text.split("] ", 1)[-1]
    return text.split(": '", 1)[0]


def _transcode(
    input_container: InputContainer,
    output_container: OutputContainer,
    video_in: VideoStream,
    others_in: list[Stream],
    upscaler: Upscaler,
    settings: _EncoderSettings,
    chroma_offset: float,
    progress: Progress | None,
    max_frames: int | None,
    batch: int,
) -> tuple[int, _VideoOutput, _Copies]:
    """Decode, upscale, encode, remux; returns frames written, the output, the streams copied."""
    total = video_in.frames or None
    if max_frames is not None:
        total = min(total, max_frames) if total else max_frames
    video_out: _VideoOutput | None = None
    copies = _Copies()
    pending: list[Packet] = []  # packets read before the first frame set up the output
    demuxed = [s for s in others_in if s.type in ("audio", "subtitle", "data")]
    frames = 0
    # Where the output's chroma goes. PyAV cannot set the chroma location, so: y4m is labelled
    # 420jpeg (centred); H.264 without one means left; other pixel formats come from yuv420p
    # by swscale, which takes untagged chroma as centred.
    raw = output_container.format.name == PIPE_FORMAT
    left = not raw and settings.pixel_format == "yuv420p"
    chroma = _ChromaUpscaler(upscaler.scale, _LEFT if left else _CENTRE)
    end = _End()
    queued: list[VideoFrame] = []  # decoded, not yet upscaled: at most ``batch``
    taken = 0  # frames decoded and kept (queued or written)

    def encode_queued(video_out: _VideoOutput, frames: int) -> int:
        """Upscale the queued frames as one batch and hand them to the encoder, in order."""
        if not queued:
            return frames
        upscaled = _upscale_frames(queued, upscaler, chroma, chroma_offset, video_out.size)
        for frame, sr in zip(queued, upscaled, strict=True):
            sr = sr if sr.format.name == settings.pixel_format else _convert(sr, settings)
            sr.pts = video_out.pts(frame, frames)
            sr.time_base = video_out.time_base
            muxer.encode(video_out.stream, sr)
            frames += 1
            if progress is not None:
                progress(frames, total)
        queued.clear()
        return frames

    try:
        # Encoding and muxing run on a thread of their own, overlapping the next frame.
        with BackgroundMuxer(output_container) as muxer:
            for packet in input_container.demux(video_in, *demuxed):
                if packet.is_corrupt:  # e.g. the last, cut-off packet of a truncated file
                    raise VideoError(
                        f"the input is truncated or corrupt: damaged {packet.stream.type} packet"
                        f" at {_seconds(packet):.2f} s"
                    )
                if packet.stream.index != video_in.index:
                    if packet.dts is None:  # demux's end-of-stream marker, no data
                        continue
                    if video_out is None:
                        pending.append(packet)
                    else:
                        _mux_copy(muxer, packet, copies.streams)
                    continue
                if packet.size and packet.pos is not None and packet.pos >= 0:
                    end.byte = packet.pos + packet.size
                for frame in video_in.decode(packet):
                    if frame.time is not None:
                        end.seconds = frame.time
                    if video_out is None:
                        # The header is written at the first mux: every stream must exist by then.
                        video_out = _add_video_stream(
                            output_container, video_in, frame, upscaler.scale, settings
                        )
                        copies = _add_copied_streams(output_container, others_in)
                        _copy_metadata(input_container, output_container)
                        for waiting in pending:
                            _mux_copy(muxer, waiting, copies.streams)
                        pending.clear()
                    if (frame.width, frame.height) != video_out.input_size:
                        raise VideoError(
                            f"the frame size changes mid-stream ({video_out.input_size[0]}x"
                            f"{video_out.input_size[1]} to {frame.width}x{frame.height}), which "
                            "is not supported"
                        )
                    queued.append(frame)
                    taken += 1
                    if len(queued) == batch:
                        frames = encode_queued(video_out, frames)
                    if taken == max_frames:
                        break
                if taken == max_frames:
                    break
            if video_out is None:
                raise VideoError("no video frame could be decoded: the input is empty or corrupt")
            frames = encode_queued(video_out, frames)
            muxer.encode(video_out.stream, None)
    except av.FFmpegError as error:
        raise VideoError(f"video processing failed: {_reason(error)}") from error
    if max_frames is None or frames < max_frames:
        _check_complete(input_container, video_in, frames, video_out.rate, end)
    return frames, video_out, copies


@dataclass
class _End:
    """Where the last decoded video ended: its packet's last byte, its frame's time (s)."""

    byte: int | None = None
    seconds: float | None = None


class _CountingReader:
    """A pipe for FFmpeg to read, counting the bytes it takes (a pipe cannot say its size)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.name = getattr(stream, "name", "<stdin>")
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.count += len(data)
        return data


def _counted(stream: IO[bytes]) -> IO[bytes]:
    """``stream``, counting what is read from it where it cannot say its size (a pipe)."""
    seekable = getattr(stream, "seekable", None)
    return stream if seekable is not None and seekable() else cast(Any, _CountingReader(stream))


def _check_complete(
    container: InputContainer, video_in: VideoStream, frames: int, rate: Fraction, end: _End
) -> None:
    """Refuse a video that ended before its container says it does: fewer frames than it
    lists, a last frame well short of its declared duration (Matroska lists no frame
    count), or, for y4m (which declares neither), bytes after the last whole frame."""
    name = {"<stdin>": "stdin", "<none>": "the input"}.get(container.name, container.name)
    truncated = f"{name} is truncated or corrupt"
    if video_in.frames and frames < video_in.frames:
        raise VideoError(f"{truncated}: decoded {frames} of the {video_in.frames} frames it lists")
    if container.format.name == PIPE_FORMAT:
        reader = getattr(container.file, "file", None)
        size = reader.count if isinstance(reader, _CountingReader) else container.size
        if end.byte is not None and size is not None and size > end.byte >= 0:
            raise VideoError(f"{truncated}: {size - end.byte} bytes after the last whole frame")
        return
    declared = _declared_seconds(container, video_in)
    if video_in.frames or declared is None or end.seconds is None:
        return
    start = 0.0
    if video_in.start_time is not None and video_in.time_base is not None:
        start = float(video_in.start_time * video_in.time_base)
    decoded = end.seconds - start + 1 / float(rate)
    if declared - decoded > max(2 / float(rate), 0.02 * declared):
        raise VideoError(
            f"{truncated}: its video ends at {decoded:.2f} s of the {declared:.2f} s it declares"
        )


def _declared_seconds(container: InputContainer, video_in: VideoStream) -> float | None:
    """The video stream's duration as the container states it, or None if it does not."""
    if video_in.duration and video_in.time_base:
        return float(video_in.duration * video_in.time_base)
    tag = video_in.metadata.get("DURATION")  # Matroska's per-stream tag, "HH:MM:SS.nnnnnnnnn"
    if tag:
        with contextlib.suppress(ValueError):
            hours, minutes, seconds = tag.split(":")
            return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    if container.duration and len(container.streams) == 1:  # else audio may run longer
        return container.duration / av.time_base
    return None


@dataclass(frozen=True)
class _VideoOutput:
    stream: VideoStream
    input_size: tuple[int, int]  # (W, H) of the first frame
    size: tuple[int, int]  # (W, H) written
    time_base: Fraction
    rate: Fraction
    constant_rate: bool  # y4m: frame i at time i / rate, whatever its timestamp said
    rotation: int

    def pts(self, frame: VideoFrame, index: int) -> int:
        if self.constant_rate or frame.pts is None or frame.time_base is None:
            return round(index / self.rate / self.time_base)
        # Same instant in the output time base (equal to the input's, except for y4m input).
        return round(frame.pts * frame.time_base / self.time_base)


def _seconds(packet: Packet) -> float:
    if packet.pts is None or packet.time_base is None:
        return float("nan")
    return float(packet.pts * packet.time_base)


def _even(size: int) -> int:
    return size - size % 2


def _add_video_stream(
    output_container: OutputContainer,
    video_in: VideoStream,
    first: VideoFrame,
    scale: int,
    settings: _EncoderSettings,
) -> _VideoOutput:
    """Add the output video stream, configured from the input stream and its first frame."""
    width, height = _even(scale * first.width), _even(scale * first.height)
    rate = video_in.average_rate or video_in.guessed_rate or Fraction(25)
    raw = output_container.format.name == PIPE_FORMAT
    # y4m stores the frame rate as its time base and no timestamps.
    time_base = 1 / rate if raw or video_in.time_base is None else video_in.time_base
    options = {} if raw else {"crf": str(settings.crf), "preset": settings.preset}
    stream = output_container.add_stream(
        "rawvideo" if raw else settings.codec, rate=rate, options=options
    )
    assert isinstance(stream, VideoStream)  # _check_encoder made sure
    stream.width, stream.height = width, height
    stream.pix_fmt = settings.pixel_format
    stream.time_base = time_base
    context = stream.codec_context
    context.time_base = time_base
    context.colorspace, context.color_range = first.colorspace, first.color_range
    context.color_primaries, context.color_trc = first.color_primaries, first.color_trc
    if video_in.sample_aspect_ratio:
        context.sample_aspect_ratio = video_in.sample_aspect_ratio
    for key in _STREAM_TAGS:
        if key in video_in.metadata:
            stream.metadata[key] = video_in.metadata[key]
    matrix = None if raw else _display_matrix(first, scale)  # y4m has no place for it
    if matrix is not None:
        stream.set_display_matrix(matrix)
    rotation = first.rotation if matrix is not None else 0
    input_size = (first.width, first.height)
    return _VideoOutput(stream, input_size, (width, height), time_base, rate, raw, rotation)


@dataclass
class _Copies:
    """The output's copies of input streams, keyed by input stream index, and those left out."""

    streams: dict[int, Stream] = field(default_factory=dict)
    left_out: tuple[str, ...] = ()

    def count(self, kind: str) -> int:
        kinds = ("data", "attachment") if kind == "data" else (kind,)
        return sum(stream.type in kinds for stream in self.streams.values())


def _add_copied_streams(output_container: OutputContainer, others_in: list[Stream]) -> _Copies:
    """A copy of each audio, subtitle, data and attachment stream the output can hold.

    Audio that cannot be kept is an error; the others are left out with a warning naming them.
    """
    copies = _Copies()
    left_out = []
    muxer = output_container.format.name
    for stream in others_in:
        if muxer == PIPE_FORMAT:
            reason = "y4m holds video only"
        elif stream.type == "video":
            reason = "only the first video stream is upscaled"
        elif stream.type == "audio":
            reason = None  # a container that cannot hold it raises below
        else:
            reason = _cannot_hold(muxer, stream)
        if reason is not None:
            left_out.append(f"{_describe(stream)} left out: {reason}")
            logger.warning("%s", left_out[-1])
            continue
        try:
            copy = output_container.add_stream_from_template(stream)
        except ValueError as error:
            if stream.type == "audio":
                raise VideoError(
                    f"the {muxer} container cannot hold the input's "
                    f"{_codec_name(stream)} audio; write .mkv instead"
                ) from error
            left_out.append(f"{_describe(stream)} left out: {_reason(error)}")
            logger.warning("%s", left_out[-1])
            continue
        for key in _STREAM_TAGS:
            if key in stream.metadata:
                copy.metadata[key] = stream.metadata[key]
        copy.disposition = stream.disposition
        copies.streams[stream.index] = copy
    copies.left_out = tuple(left_out)
    return copies


def _codec_name(stream: Stream) -> str:
    """The codec's name (an attachment's: its file name)."""
    context = stream.codec_context
    return (context.name if context is not None else stream.name) or "unknown"


def _describe(stream: Stream) -> str:
    """``subtitle stream #2 (subrip, fra, "Forced")``: what a warning calls a stream."""
    details = [_codec_name(stream)]
    if "language" in stream.metadata:
        details.append(stream.metadata["language"])
    if "title" in stream.metadata:
        details.append(f'"{stream.metadata["title"]}"')
    return f"{stream.type} stream #{stream.index} ({', '.join(details)})"


def _cannot_hold(muxer: str, stream: Stream) -> str | None:
    """Why the ``muxer`` format cannot hold a copy of ``stream``, or None if it can: tried by
    writing a header with that stream alone to memory (some formats say no only then)."""
    probe = av.open(io.BytesIO(), "w", format=muxer)
    try:
        probe.add_stream_from_template(stream)
        probe.start_encoding()
    except (av.FFmpegError, ValueError):
        return f"the {muxer} format cannot hold {_codec_name(stream)} {stream.type}"
    finally:
        with contextlib.suppress(av.FFmpegError, ValueError, OSError):
            probe.close()
    return None


def _display_matrix(frame: VideoFrame, scale: int) -> list[int] | None:
    """The frame's 3x3 display matrix (FFmpeg layout, int32), translation scaled; None if none."""
    side_data: Any = frame.side_data  # a Mapping keyed by side data type (stubs say otherwise)
    found = side_data.get(SideDataType.DISPLAYMATRIX)
    if found is None:
        return None
    matrix = np.frombuffer(bytes(found), dtype=np.int32).astype(np.int64)
    # Entries 6 and 7 are the x, y translation in pixels (16.16 fixed point).
    matrix[6:8] *= scale
    return [int(v) for v in np.clip(matrix, -(2**31), 2**31 - 1)]


def _copy_metadata(input_container: InputContainer, output_container: OutputContainer) -> None:
    for key in _CONTAINER_TAGS:
        if key in input_container.metadata:
            output_container.metadata[key] = input_container.metadata[key]


def _mux_copy(muxer: BackgroundMuxer, packet: Packet, streams: dict[int, Stream]) -> None:
    if packet.stream.index not in streams:
        return
    packet.stream = streams[packet.stream.index]  # mux rescales the timestamps to its time base
    muxer.mux(packet)


def _convert(frame: VideoFrame, settings: _EncoderSettings) -> VideoFrame:
    try:
        return frame.reformat(format=settings.pixel_format)
    except (av.FFmpegError, ValueError) as error:
        raise VideoError(f"cannot convert frames to {settings.pixel_format!r}: {error}") from error


def _plane(frame: VideoFrame, index: int) -> np.ndarray:
    """Plane ``index`` of an 8-bit planar frame as (h, w) uint8, line padding dropped."""
    plane = frame.planes[index]
    rows = np.frombuffer(cast(Any, plane), dtype=np.uint8).reshape(-1, plane.line_size)
    return rows[: plane.height, : plane.width]


def _upscale_frames(
    frames: list[VideoFrame],
    upscaler: Upscaler,
    chroma: _ChromaUpscaler,
    chroma_offset: float,
    size: tuple[int, int],
) -> list[VideoFrame]:
    """Decoded frames -> the upscaled yuv420p frames, (W, H) = ``size``; a Y network runs
    once for all of them (one (B, 1, H, W) batch), an RGB network once per frame.

    ``chroma_offset`` is where the decoder's 4:2:0 chroma sits (see ``_ChromaUpscaler``).
    """
    if upscaler.colour_space == "rgb":
        return [_upscale_rgb_frame(frame, upscaler, chroma, size) for frame in frames]
    width, height = size
    device = upscaler.device
    lumas, chromas, offsets, full_ranges = [], [], [], []
    for frame in frames:
        yuv, offset = frame, chroma_offset
        if frame.format.name not in ("yuv420p", "yuvj420p"):  # 4:2:2, 4:4:4, 10-bit, nv12, ...
            yuv, offset = frame.reformat(format="yuv420p"), _CENTRE  # swscale's default
        lumas.append(torch.from_numpy(_plane(yuv, 0).astype(np.float32)))
        chromas.append(np.stack([_plane(yuv, 1), _plane(yuv, 2)]).astype(np.float32))
        offsets.append(offset)
        full_ranges.append(frame.color_range == _JPEG_RANGE or frame.format.name == "yuvj420p")
    y = torch.stack(lumas)[:, None].to(device)  # (B, 1, H, W)
    full = torch.tensor(full_ranges, device=device)[:, None, None, None]
    if any(full_ranges):  # full swing -> studio swing, as the networks expect
        y = torch.where(full, 16.0 + y * (219.0 / 255.0), y)
    y_sr = upscaler.run_tensor(y / 255.0) * 255.0  # (B, 1, rH, rW)
    if any(full_ranges):
        y_sr = torch.where(full, (y_sr - 16.0) * (255.0 / 219.0), y_sr)
    out = []
    for index, frame in enumerate(frames):
        uv_sr = chroma(torch.from_numpy(chromas[index]).to(device), offsets[index])
        luma = y_sr[index, 0, :height, :width]
        out.append(_yuv420_frame(luma, uv_sr[:, : height // 2, : width // 2], frame))
    return out


def _upscale_rgb_frame(
    frame: VideoFrame, upscaler: Upscaler, chroma: _ChromaUpscaler, size: tuple[int, int]
) -> VideoFrame:
    """One frame through an RGB network: RGB out of the decoder, YUV 4:2:0 back."""
    width, height = size
    rgb = frame.to_ndarray(format="rgb24", interpolation=_SWSCALE_FLAGS)
    sr = upscaler(rgb)[:height, :width]  # uint8 in, uint8 out (rounded half to even)
    hr = VideoFrame.from_ndarray(np.ascontiguousarray(sr), format="rgb24")
    # 4:4:4 with the matrix and range the frame was decoded with (no chroma resampling,
    # so no siting question), then 4:2:0 sited like the output's chroma.
    yuv444 = hr.reformat(
        format="yuv444p",
        dst_colorspace=frame.colorspace,
        dst_color_range=frame.color_range,
        interpolation=_SWSCALE_FLAGS,
    )
    y, u, v = (torch.from_numpy(_plane(yuv444, i).astype(np.float32)) for i in range(3))
    uv = _subsample(torch.stack([u, v]), chroma.output_offset)
    return _yuv420_frame(y, uv, frame)


def _subsample(planes: torch.Tensor, offset: float) -> torch.Tensor:
    """(C, H, W) 4:4:4 chroma, H and W even -> (C, H/2, W/2) 4:2:0 sited ``offset`` right.

    Rows are averaged in pairs (4:2:0 chroma sits between its two rows); columns in pairs for
    centred chroma, or with the [1, 2, 1] / 4 filter centred on the left column (MPEG-2's
    reference down-sampler) for left-sited chroma.
    """
    rows = (planes[:, 0::2] + planes[:, 1::2]) / 2
    if offset == _CENTRE:
        return (rows[..., 0::2] + rows[..., 1::2]) / 2
    left = torch.cat([rows[..., :1], rows[..., 1:-1:2]], dim=-1)  # column 2j - 1, edge repeated
    return (left + 2 * rows[..., 0::2] + rows[..., 1::2]) / 4


def _yuv420_frame(y: torch.Tensor, uv: torch.Tensor, like: VideoFrame) -> VideoFrame:
    """(H, W) luma and (2, H/2, W/2) chroma, 0..255 floats -> a yuv420p frame tagged as ``like``."""
    width = y.shape[-1]
    # PyAV's yuv420p array layout: Y, U, V flattened one after the other, as (3H/2, W).
    packed = torch.cat([y.reshape(-1), uv.reshape(-1)]).reshape(-1, width)
    array = packed.clamp(0.0, 255.0).round().to(torch.uint8).cpu().numpy()
    out = VideoFrame.from_ndarray(array, format="yuv420p")
    out.colorspace, out.color_range = like.colorspace, like.color_range
    return out


class _ChromaUpscaler:
    """Bicubic (Keys, a = -0.5, edges replicated) for 4:2:0 chroma planes, siting-aware.

    A 4:2:0 chroma sample sits halfway between its two luma rows and, horizontally, either
    level with the left of its two luma columns (MPEG-2, H.264, HEVC: "left") or halfway
    between them (JPEG, y4m's ``420jpeg``: "centre"). Say it sits ``a`` luma pixels right of
    the left column (0 or 1/2). The luma grid of an r-times upscale keeps pixel centres (LR
    pixel i lies at HR r i + (r - 1) / 2), so HR chroma sample m, at HR luma column
    2 m + a_out, must read LR chroma at ((2 m + a_out - (r - 1) / 2) / r - a_in) / 2. A plain
    centred resize reads at (m + 1/2) / r - 1/2; the difference, in LR chroma pixels, is the
    shift below: (r - 1) / (4 r) from left to left, 0 from centre to centre, 1/4 from left to
    centre. Vertically every siting agrees with the centred resize.
    """

    def __init__(self, scale: int, output_offset: float) -> None:
        self.scale = scale
        self.output_offset = output_offset
        self._filter_cache: dict[float, tuple[torch.Tensor, int, int]] = {}

    def shift(self, input_offset: float) -> float:
        """Horizontal correction, in LR chroma pixels, for input chroma ``input_offset`` right."""
        r = self.scale
        return (self.output_offset - r * input_offset + (r - 1) / 2) / (2 * r)

    def _filters(self, shift: float) -> tuple[torch.Tensor, int, int]:
        """Polyphase form (``bicubic.sited_phase_weights``): HR sample r i + p =
        sum_k weights[p, k] * LR[i - before + k], one short filter per phase p (a conv with
        r output channels, then interleaving, as a sub-pixel layer does)."""
        if shift not in self._filter_cache:
            weights, before, after = sited_phase_weights(self.scale, shift)
            kernel = torch.from_numpy(weights.astype(np.float32))
            self._filter_cache[shift] = (kernel, before, after)
        return self._filter_cache[shift]

    def _resize(self, planes: torch.Tensor, shift: float, vertical: bool) -> torch.Tensor:
        # (C, H, W) -> (C, rH, W) if vertical else (C, H, rW)
        weights, before, after = self._filters(shift)
        channels, height, width = planes.shape
        kernel = weights.to(planes.device)[:, None, None, :]  # (r, 1, 1, K): along W
        padding = (before, after, 0, 0)
        if vertical:
            kernel, padding = kernel.transpose(-1, -2), (0, 0, before, after)
        padded = torch.nn.functional.pad(planes[:, None], padding, mode="replicate")
        phases = torch.nn.functional.conv2d(padded, kernel)  # (C, r, H, W)
        if vertical:  # row r i + p is phases[:, p, i]
            return phases.transpose(1, 2).reshape(channels, height * self.scale, width)
        return phases.permute(0, 2, 3, 1).reshape(channels, height, width * self.scale)

    def __call__(self, planes: torch.Tensor, input_offset: float) -> torch.Tensor:
        """(C, h, w) float -> (C, r h, r w)."""
        rows = self._resize(planes, 0.0, vertical=True)
        return self._resize(rows, self.shift(input_offset), vertical=False)
