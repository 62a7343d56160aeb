"""What a pipe holds, told by its first bytes: ``subpixel upscale -`` takes an image or y4m.

A pipe has no file name to go by, so the input is recognised by its signature: PNG, JPEG,
WebP, TIFF, BMP and GIF files are images; ``YUV4MPEG2`` starts a y4m video (what
``ffmpeg -f yuv4mpegpipe`` writes). Anything else is refused rather than guessed at.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, Literal

from subpixel.errors import SubpixelError

__all__ = ["HEAD_SIZE", "StreamKind", "identify", "peek"]

#: Bytes enough to tell every kind apart (WebP's signature ends at byte 12).
HEAD_SIZE = 16

_IMAGE_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"\xff\xd8\xff", ".jpg"),
    (b"GIF87a", ".gif"),
    (b"GIF89a", ".gif"),
    (b"II*\x00", ".tif"),
    (b"MM\x00*", ".tif"),
    (b"II+\x00", ".tif"),  # BigTIFF
    (b"MM\x00+", ".tif"),
    (b"BM", ".bmp"),
)
_Y4M_SIGNATURE = b"YUV4MPEG2 "


@dataclass(frozen=True)
class StreamKind:
    """``kind`` "image" or "y4m"; ``extension`` the usual file extension for it."""

    kind: Literal["image", "y4m"]
    extension: str


def identify(head: bytes, name: str = "stdin") -> StreamKind:
    """The kind of data that starts with ``head`` (at least :data:`HEAD_SIZE` bytes, or all).

    Raises:
        SubpixelError: empty, or neither an image nor y4m video.
    """
    if not head:
        raise SubpixelError(f"{name} is empty")
    if head.startswith(_Y4M_SIGNATURE):
        return StreamKind("y4m", ".y4m")
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return StreamKind("image", ".webp")
    for signature, extension in _IMAGE_SIGNATURES:
        if head.startswith(signature):
            return StreamKind("image", extension)
    raise SubpixelError(
        f"{name} holds neither an image (PNG, JPEG, WebP, TIFF, BMP, GIF) nor y4m video; "
        "pipe other videos through ffmpeg -f yuv4mpegpipe"
    )


def peek(stream: IO[bytes], size: int = HEAD_SIZE) -> bytes:
    """Up to ``size`` first bytes of a buffered stream (stdin), left in it to be read again."""
    peeked = getattr(stream, "peek", None)
    if peeked is None:
        raise SubpixelError("cannot look at the start of the input without consuming it")
    return bytes(peeked(size)[:size])
