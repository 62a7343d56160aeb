"""Stopping cleanly: SIGTERM, how Slurm, Kubernetes and ``kill`` stop a job, handled as Ctrl-C.

Python turns Ctrl-C (SIGINT) into ``KeyboardInterrupt`` in the main thread, so ``finally``
blocks and ``except BaseException`` clean-ups run: the output being written is not left
half-done. SIGTERM's default action is to end the process at once, which leaves the
temporaries behind. Inside :func:`interrupt_on_sigterm`, SIGTERM raises :class:`Interrupted`,
a ``KeyboardInterrupt``, instead; ``signum`` tells the two apart, for the exit code
(128 + signum: 130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ["Interrupted", "interrupt_on_sigterm", "signal_number"]


class Interrupted(KeyboardInterrupt):
    """The work was stopped by signal ``signum`` (SIGINT or SIGTERM)."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def signal_number(interruption: KeyboardInterrupt) -> int:
    """The signal behind an interruption: its ``signum``, or SIGINT for a plain Ctrl-C."""
    return interruption.signum if isinstance(interruption, Interrupted) else int(signal.SIGINT)


@contextlib.contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """While active, SIGTERM raises :class:`Interrupted` in the main thread, as Ctrl-C does.

    Further SIGTERMs are ignored once the first has been raised, so that the clean-up it
    starts is not itself cut short; SIGKILL still ends the process. Outside the main thread
    (where Python cannot set signal handlers) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_interrupted(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, raise_interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
