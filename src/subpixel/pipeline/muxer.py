"""Encoding and muxing on a thread of their own, so they overlap the next frame's upscaling.

A video is decoded and upscaled on the calling thread; ``BackgroundMuxer`` takes the
upscaled frames and the packets copied from the input (audio, subtitles) in one queue and
encodes and muxes them, in the order given, on a second thread. FFmpeg's encoders and muxers
run without Python's lock, so while the network works on frame n the encoder works on frame
n - 1: on a GPU, where the network takes a fraction of a millisecond, that is most of the
time a frame costs. The order of calls on the output container is the order they were
given, so the file is the one a single thread would write.

The queue holds at most ``depth`` items, which bounds the frames in memory. An error on the
muxing thread is raised on the calling thread at its next call (or at ``close``).
"""

from __future__ import annotations

import queue
import threading
from typing import Any

__all__ = ["BackgroundMuxer"]

_POLL_SECONDS = 0.05


class BackgroundMuxer:
    """Encodes frames and muxes packets into ``container`` on a background thread.

    Use it as a context manager: leaving the block normally waits for the queue to drain
    (``close``); leaving it by an exception drops what is still queued (``abandon``).
    """

    def __init__(self, container: Any, depth: int = 4) -> None:
        self._container = container
        self._queue: queue.Queue[tuple[str, Any, Any] | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._abandoned = threading.Event()
        self._thread = threading.Thread(target=self._work, name="subpixel-muxer", daemon=True)
        self._thread.start()

    def __enter__(self) -> BackgroundMuxer:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if kind is None:
            self.close()
        else:
            self.abandon()

    def mux(self, packet: Any) -> None:
        """Mux a packet as it is (a stream copied from the input)."""
        self._put(("mux", packet, None))

    def encode(self, stream: Any, frame: Any | None) -> None:
        """Encode ``frame`` with ``stream``'s encoder and mux what it gives; ``None`` flushes
        the encoder at the end."""
        self._put(("encode", stream, frame))

    def close(self) -> None:
        """Wait until everything queued is muxed; raise the muxing thread's error, if any."""
        self._put(None)
        self._thread.join()
        self._raise()

    def abandon(self) -> None:
        """Stop without muxing what is still queued (the output is being thrown away)."""
        self._abandoned.set()
        self._thread.join()

    def _put(self, item: tuple[str, Any, Any] | None) -> None:
        while True:
            self._raise()
            try:
                self._queue.put(item, timeout=_POLL_SECONDS)
                return
            except queue.Full:
                continue

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _work(self) -> None:
        while not self._abandoned.is_set():
            try:
                item = self._queue.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                continue
            if item is None:
                return
            kind, first, second = item
            try:
                if kind == "mux":
                    self._container.mux(first)
                else:
                    self._container.mux(first.encode(second))
            except BaseException as error:  # handed to the calling thread, which raises it
                self._error = error
                return
