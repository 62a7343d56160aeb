"""Many inputs, one command: which files to process, where results go, and never losing work.

Inputs are files, folders (``recursive`` to descend) and glob patterns. One input file with
an output that is not an existing folder makes one output file; anything else makes a folder
of outputs that mirrors each input folder's layout. ``shard(jobs, k, n)`` keeps a stable
1/n of the jobs (by a hash of each input's path), so n processes on any scheduler split the
work, and re-runs skip outputs that exist. A failing input is recorded (its message naming
it) and the rest go on; what would fail for every input or lose a file (two inputs for one
output, an output folder that cannot be written to) is refused before any work. Ctrl-C or
SIGTERM stops the batch with a ``BatchInterrupted`` that says what was done.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from subpixel.errors import ImageError, SubpixelError
from subpixel.files import remove_stale_temporaries
from subpixel.images import IMAGE_EXTENSIONS, output_format
from subpixel.signals import Interrupted, signal_number

__all__ = [
    "VIDEO_EXTENSIONS",
    "BatchInterrupted",
    "BatchSummary",
    "Job",
    "collect_inputs",
    "parse_shard",
    "pending_jobs",
    "plan_jobs",
    "run_job",
    "run_jobs",
    "shard",
]

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".y4m")
_URL = re.compile(r"[a-z][a-z0-9+.-]*://", re.IGNORECASE)


@dataclass(frozen=True)
class Job:
    """One input file and where its result goes; ``key`` is the path used for sharding."""

    source: Path
    target: Path
    key: str

    @property
    def is_video(self) -> bool:
        return self.source.suffix.lower() in VIDEO_EXTENSIONS


@dataclass
class BatchSummary:
    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{len(self.written)} written, {len(self.skipped)} skipped (output exists), "
            f"{len(self.failed)} failed"
        )


def _is_media(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS


def collect_inputs(inputs: Sequence[str], recursive: bool = False) -> list[tuple[Path, Path]]:
    """Expand inputs to (file, base) pairs; ``base`` is the folder the output layout mirrors.

    Raises:
        ImageError: an input is a URL or matches nothing.
    """
    found: list[tuple[Path, Path]] = []
    for text in inputs:
        if _URL.match(text):
            raise ImageError(f"{text}: URLs are not supported; download the file first")
        path = Path(text)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            files = sorted(p for p in path.glob(pattern) if p.is_file() and _is_media(p))
            matched = [(p, path) for p in files]
        elif glob.has_magic(text):
            paths = sorted(Path(m) for m in glob.glob(text, recursive=recursive))
            matched = [(p, p.parent) for p in paths if p.is_file() and _is_media(p)]
        else:
            matched = [(path, path.parent)]  # a missing file is reported when processed
        if not matched:
            raise ImageError(f"no images or videos found in {text}")
        found += matched
    unique: dict[Path, tuple[Path, Path]] = {}
    for source, base in found:
        unique.setdefault(source.resolve() if source.exists() else source, (source, base))
    return list(unique.values())


def plan_jobs(
    inputs: Sequence[str],
    output: str | Path,
    *,
    recursive: bool = False,
    extension: str | None = None,
) -> list[Job]:
    """Pair every input with its output path (see the module docstring for the rule).

    ``extension`` (``"png"``, ``".jpg"``, or a ``--format`` as given) replaces each image
    output's extension in a folder of outputs; videos keep theirs. Everything that would
    fail for every file, or lose one, is refused here, before any work.

    Raises:
        ImageError: an input is a URL or matches nothing; ``extension`` is not a format
            Pillow writes; ``output`` has a file's extension but several inputs (or a folder
            or pattern) were given; two inputs would be written to the same file; an output
            would replace an input; the output folder cannot be made or written to.
    """
    output = Path(output)
    sources = collect_inputs(inputs, recursive)
    first = inputs[0] if inputs else ""
    single_file = len(inputs) == 1 and not Path(first).is_dir() and not glob.has_magic(first)
    if not single_file and _is_media(output) and not output.is_dir():
        given = f"{len(inputs)} inputs were given" if len(inputs) > 1 else f"{first} is a folder"
        if len(inputs) == 1 and glob.has_magic(first):
            given = f"{first} is a pattern"
        raise ImageError(f"-o {output} looks like a file but {given}; give a folder")
    if extension:
        extension = f".{extension.lower().lstrip('.')}"
        output_format(output, extension[1:])  # refused once here, not once per file
    jobs = []
    for source, base in sources:
        relative = source.relative_to(base)  # base is the source's folder or an ancestor
        if single_file and not output.is_dir():
            target = output
        else:
            target = output / relative
            if extension and source.suffix.lower() not in VIDEO_EXTENSIONS:
                target = target.with_suffix(extension)
        jobs.append(Job(source, target, relative.as_posix()))
    _refuse_lost_files(jobs)
    for folder in sorted({job.target.parent for job in jobs}):
        _check_writable(folder)
    return jobs


def _refuse_lost_files(jobs: Sequence[Job]) -> None:
    """Refuse outputs that would replace an input, or that two inputs would both make."""
    inputs = {job.source.resolve(): job.source for job in jobs if job.source.exists()}
    planned: dict[Path, Job] = {}
    for job in jobs:
        where = job.target.resolve()
        if where in inputs:
            raise ImageError(f"refusing to overwrite the input {inputs[where]}")
        if where in planned:
            other = planned[where].source
            raise ImageError(
                f"{other} and {job.source} would both be written to {job.target}; "
                "rename one or upscale them into different folders"
            )
        planned[where] = job


def _check_writable(folder: Path) -> None:
    """Refuse a folder that cannot be made or written to (checked on its nearest ancestor
    that exists, since missing folders are made when the jobs run)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "it" if existing == folder else str(existing)
        raise ImageError(f"cannot write to {folder}: {where} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == folder else f" in {existing}"
        raise ImageError(f"cannot write to {folder}: permission denied{where}")


def pending_jobs(jobs: Sequence[Job], overwrite: bool = False) -> list[Job]:
    """The jobs ``run_jobs`` would process: those whose output does not exist yet (all of
    them with ``overwrite``). Empty on a re-run that finished, so a caller can skip
    preparing the network altogether."""
    return [job for job in jobs if overwrite or not job.target.exists()]


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N) with 1 <= K <= N."""
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError as error:
        raise SubpixelError(f"--shard takes K/N, for example 2/8; got {text!r}") from error
    if not 1 <= k <= n:
        raise SubpixelError(f"--shard K/N needs 1 <= K <= N; got {text!r}")
    return k, n


def shard(jobs: Sequence[Job], k: int, n: int) -> list[Job]:
    """The jobs of shard k of n: a stable hash of each job's key, so shards never overlap."""

    def bucket(job: Job) -> int:
        return int(hashlib.sha256(job.key.encode()).hexdigest(), 16) % n

    return [job for job in jobs if bucket(job) == k - 1]


class BatchInterrupted(Interrupted):
    """A batch stopped by Ctrl-C or SIGTERM (``signum``).

    ``summary`` holds what was done before; ``current`` is the job that was being processed
    (None if it stopped between jobs), which left no output; ``not_started`` jobs came after.
    """

    def __init__(
        self, signum: int, summary: BatchSummary, current: Job | None, not_started: int
    ) -> None:
        super().__init__(signum)
        self.summary = summary
        self.current = current
        self.not_started = not_started


def run_jobs(
    jobs: Sequence[Job],
    process: Callable[[Job], None],
    *,
    overwrite: bool = False,
    progress: Callable[[Job], None] | None = None,
    on_error: Callable[[Job, str], None] | None = None,
) -> BatchSummary:
    """Run ``process`` on every job whose output does not exist yet (or all, ``overwrite``).

    An error from one job (a ``SubpixelError``, or any other exception a decoder or writer
    raises) is recorded, passed to ``on_error`` (the job and the one-line message) as it
    happens, and the others go on; ``process`` must write its output atomically
    (``subpixel.images.write_image`` does). Each output folder is first cleared of the
    temporaries that killed runs left there (``subpixel.temporaries``).

    Raises:
        BatchInterrupted: Ctrl-C or SIGTERM (see ``subpixel.signals``), with what was done.
    """
    summary = BatchSummary()
    cleared: set[Path] = set()
    for index, job in enumerate(jobs):
        done = len(summary.written) + len(summary.skipped) + len(summary.failed)
        try:
            if job.target.parent not in cleared:
                cleared.add(job.target.parent)
                remove_stale_temporaries(job.target.parent)
            reason = run_job(job, process, summary, overwrite=overwrite)
            if reason is not None and on_error is not None:
                on_error(job, reason)
            if progress is not None:
                progress(job)
        except KeyboardInterrupt as interruption:
            recorded = len(summary.written) + len(summary.skipped) + len(summary.failed) > done
            current = None if recorded else job
            raise BatchInterrupted(
                signal_number(interruption), summary, current, len(jobs) - index - 1
            ) from interruption
    return summary


def run_job(
    job: Job,
    process: Callable[[Job], None],
    summary: BatchSummary,
    *,
    overwrite: bool = False,
) -> str | None:
    """One job of ``run_jobs``, recorded in ``summary`` as written, skipped (its output
    exists, unless ``overwrite``) or failed; returns the failure's one-line message naming
    the input (None if it did not fail). Where jobs run in other processes (a Ray actor:
    ``subpixel.pipeline.cluster``), each runs its jobs through this."""
    if job.target.exists() and not overwrite:
        summary.skipped.append(job.target)
        return None
    try:
        job.target.parent.mkdir(parents=True, exist_ok=True)
        process(job)
        summary.written.append(job.target)
        return None
    except (SubpixelError, OSError) as error:
        reason = _naming(job.source, str(error))
    except Exception as error:  # a decoder's or writer's own error: still this file's alone
        kind, text = type(error).__name__, str(error).splitlines()
        reason = _naming(job.source, f"{kind}: {text[0]}" if text else kind)
    summary.failed.append((job.source, reason))
    return reason


def _naming(source: Path, reason: str) -> str:
    """``reason``, prefixed with the file's name unless it names the file already."""
    return reason if str(source) in reason else f"{source}: {reason}"
