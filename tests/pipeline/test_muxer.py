"""The background muxer: the calls a single thread would make, in order; errors surface."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from subpixel.pipeline.muxer import BackgroundMuxer


class _Container:
    def __init__(self, fail_at: int | None = None) -> None:
        self.calls: list[tuple[Any, str]] = []
        self.fail_at = fail_at

    def mux(self, packets: Any) -> None:
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise RuntimeError("disk full")
        self.calls.append((packets, threading.current_thread().name))


class _Stream:
    def encode(self, frame: int | None) -> list[str]:
        return [f"encoded {frame}"]


def test_calls_keep_their_order_and_run_off_the_calling_thread() -> None:
    container, stream = _Container(), _Stream()
    with BackgroundMuxer(container, depth=2) as muxer:
        for index in range(50):
            muxer.encode(stream, index)
            muxer.mux(f"audio {index}")
        muxer.encode(stream, None)
    expected = [x for i in range(50) for x in ([f"encoded {i}"], f"audio {i}")]
    assert [packets for packets, _ in container.calls] == [*expected, ["encoded None"]]
    assert {name for _, name in container.calls} == {"subpixel-muxer"}


def test_an_error_on_the_muxing_thread_is_raised_on_the_calling_thread() -> None:
    container = _Container(fail_at=3)
    with pytest.raises(RuntimeError, match="disk full"), BackgroundMuxer(container) as muxer:
        for index in range(1000):  # raised at a later call, never lost or hung on
            muxer.mux(index)
    assert len(container.calls) == 3


def test_an_error_in_the_block_drops_what_is_queued() -> None:
    container = _Container()
    with pytest.raises(KeyboardInterrupt), BackgroundMuxer(container) as muxer:
        muxer.mux("first")
        raise KeyboardInterrupt
    assert len(container.calls) <= 1
