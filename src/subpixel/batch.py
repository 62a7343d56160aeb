"""Many inputs, one command: which files to process, where results go, and never losing work.

Inputs are files, folders (``recursive`` to descend) and glob patterns. One input file with
an output that is not an existing folder makes one output file; anything else makes a folder
of outputs that mirrors each input folder's layout. ``shard(jobs, k, n)`` keeps a stable
1/n of the jobs (by a hash of each input's path), so n processes on any scheduler split the
work, and re-runs skip outputs that exist. A failing input is recorded and the rest go on.
"""

from __future__ import annotations

import glob
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from subpixel.errors import ImageError, SubpixelError

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "BatchSummary",
    "Job",
    "collect_inputs",
    "parse_shard",
    "pending_jobs",
    "plan_jobs",
    "run_jobs",
    "shard",
]

IMAGE_EXTENSIONS = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".tif",
    ".tiff",
    ".webp",
    ".gif",
    ".ppm",
    ".pgm",
    ".tga",
)
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".y4m")


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
        ImageError: an input matches nothing.
    """
    found: list[tuple[Path, Path]] = []
    for text in inputs:
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
    """Pair every input with its output path (see the module docstring for the rule)."""
    output = Path(output)
    sources = collect_inputs(inputs, recursive)
    first = inputs[0] if inputs else ""
    single_file = len(inputs) == 1 and not Path(first).is_dir() and not glob.has_magic(first)
    jobs = []
    for source, base in sources:
        relative = source.relative_to(base)  # base is the source's folder or an ancestor
        if single_file and not output.is_dir():
            target = output
        else:
            target = output / relative
            if extension and source.suffix.lower() not in VIDEO_EXTENSIONS:
                target = target.with_suffix(extension)
        if source.exists() and target.exists() and target.resolve() == source.resolve():
            raise ImageError(f"refusing to overwrite the input {source}")
        jobs.append(Job(source, target, relative.as_posix()))
    return jobs


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


def run_jobs(
    jobs: Sequence[Job],
    process: Callable[[Job], None],
    *,
    overwrite: bool = False,
    progress: Callable[[Job], None] | None = None,
) -> BatchSummary:
    """Run ``process`` on every job whose output does not exist yet (or all, ``overwrite``).

    A ``SubpixelError`` from one job is recorded and the others go on; ``process`` must write
    its output atomically (``subpixel.images.write_image`` does).
    """
    summary = BatchSummary()
    for job in jobs:
        if job.target.exists() and not overwrite:
            summary.skipped.append(job.target)
        else:
            try:
                job.target.parent.mkdir(parents=True, exist_ok=True)
                process(job)
                summary.written.append(job.target)
            except SubpixelError as error:
                summary.failed.append((job.source, str(error)))
            except OSError as error:
                summary.failed.append((job.source, f"{job.source}: {error}"))
        if progress is not None:
            progress(job)
    return summary
