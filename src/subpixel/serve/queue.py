"""What keeps the web app safe under load: its limits, and one upscaling job at a time.

Two requests at once could each hold an image and its output in memory, and each engine
already uses every core, so jobs run one after another on a single worker thread, first
come first served. At most ``Limits.max_waiting`` requests wait beside the running one
(each holds its upload, so this bounds memory too); more are refused. Each job's state
(receiving, queued with how many ahead, upscaling with tiles or frames done) can be asked
for while it waits, which is what the page's progress shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from subpixel.images import DEFAULT_MAX_PIXELS

__all__ = [
    "DEFAULT_MAX_UPLOAD",
    "Job",
    "JobInUse",
    "Limits",
    "QueueFull",
    "UploadTooLarge",
    "WorkQueue",
    "limit_body",
]

T = TypeVar("T")
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]

#: Bytes an upload may have by default (the multipart envelope aside).
DEFAULT_MAX_UPLOAD = 100 * 2**20
# Room for the multipart boundaries, headers and the small fields beside the file.
_ENVELOPE = 64 * 2**10


@dataclass(frozen=True)
class Limits:
    """``max_upload``: bytes of one uploaded file; ``max_pixels``: pixels of an image or a
    video frame (decompression bombs; None: no limit); ``max_waiting``: requests that may
    wait beside the one being upscaled."""

    max_upload: int = DEFAULT_MAX_UPLOAD
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    max_waiting: int = 4

    def __post_init__(self) -> None:
        if self.max_upload < 1:
            raise ValueError(f"max_upload must be at least 1 byte, got {self.max_upload}")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise ValueError(f"max_pixels must be at least 1, got {self.max_pixels}")
        if self.max_waiting < 0:
            raise ValueError(f"max_waiting must be 0 or more, got {self.max_waiting}")

    @property
    def max_body(self) -> int:
        """Bytes a whole upload request may have."""
        return self.max_upload + _ENVELOPE


class UploadTooLarge(Exception):
    """A request's body is over ``Limits.max_body``."""


class QueueFull(Exception):
    """As many requests as may wait are waiting."""


class JobInUse(Exception):
    """A job id that names a request being handled."""


def limit_body(receive: Receive, max_bytes: int) -> Receive:
    """``receive`` (ASGI), raising ``UploadTooLarge`` once the body passes ``max_bytes``:
    a body without a Content-Length is stopped as it streams in, not after."""
    seen = 0

    async def limited() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > max_bytes:
                raise UploadTooLarge
        return message

    return limited


@dataclass
class Job:
    """One request's place in the queue and its progress (tiles or frames)."""

    id: str
    state: str = "receiving"  # then "queued", then "upscaling"
    ticket: int = -1
    done: int = 0
    total: int | None = None

    def progress(self, done: int, total: int | None) -> None:
        """The pipeline's progress callback (called on the worker thread)."""
        self.done, self.total = done, total


class WorkQueue:
    """Jobs one at a time on one worker thread, in the order they were submitted."""

    def __init__(self, max_waiting: int) -> None:
        self.max_waiting = max_waiting
        self._jobs: dict[str, Job] = {}
        self._tickets = itertools.count()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="subpixel-serve")

    @contextlib.contextmanager
    def admit(self, job_id: str | None = None) -> Iterator[Job]:
        """A place for one request, from before its upload is read until it is answered.

        Raises:
            QueueFull: ``max_waiting`` requests wait beside a running one.
            JobInUse: ``job_id`` names a request being handled.
        """
        if len(self._jobs) > self.max_waiting:
            raise QueueFull
        job_id = job_id or uuid.uuid4().hex
        if job_id in self._jobs:
            raise JobInUse(f"job {job_id!r} is already in use")
        job = self._jobs[job_id] = Job(job_id)
        try:
            yield job
        finally:
            del self._jobs[job_id]

    async def run(self, job: Job, work: Callable[[Job], T]) -> T:
        """``work(job)`` on the worker thread once the jobs before it are done."""

        def started() -> T:
            job.state = "upscaling"
            return work(job)

        job.state, job.ticket = "queued", next(self._tickets)
        return await asyncio.wrap_future(self._executor.submit(started))

    def status(self, job_id: str) -> dict[str, Any] | None:
        """``{"state", "ahead", "done", "total"}`` of a job being handled, else None."""
        job = self._jobs.get(job_id)
        if job is None:
            return None
        waiting = (o for o in self._jobs.values() if o.state != "receiving")
        ahead = sum(o.ticket < job.ticket for o in waiting) if job.state == "queued" else 0
        return {"state": job.state, "ahead": ahead, "done": job.done, "total": job.total}

    def close(self) -> None:
        """Drop the jobs not started; the running one finishes on its thread."""
        self._executor.shutdown(wait=False, cancel_futures=True)
