"""Big batches on a Ray cluster: subpixel's files, Ray Data's scheduling (the ``ray`` extra).

``upscale_on_ray(inputs, output, ...)`` plans the work as ``subpixel upscale`` does
(``subpixel.pipeline.batch``: inputs listed, outputs named and checked before any work, a
``shard``, outputs that exist skipped without starting anything), then runs
``ray.data.from_items(<jobs>).map_batches(Upscaling, ...)``. Each actor (``Upscaling``, a
stateful callable class) builds one ``Upscaler`` and runs every row, one file, through
``batch.run_job`` and ``files.upscale_file``: the CLI's reading and writing (16-bit, alpha,
ICC/EXIF, atomic writes), a failing file recorded with its one-line message while the rest
go on. Ray's own image reader and writer would lose some of that, so they are not used. A
video is a row like an image: one task per file.

Actors (``plan_actors``, from ``ray.cluster_resources()``): where the cluster has GPUs, one
per GPU (``num_gpus=1``) with the CPUs shared out among them; else one per
``DEFAULT_THREADS`` CPUs, each running that many threads. Decoding, the colour work and
encoding run one file at a time per actor, so more actors of fewer threads go faster than
one actor on every core (``benchmarks/ray_scaling.py``).

Byte identity. The driver loads the network and makes the engine choice ``subpixel
upscale`` would make on its machine (``Upscaler.engine_choice``, for 8-bit and 16-bit
inputs); CPU actors run those engines (``Upscaler(choices=...)``) with their own thread
count. So the outputs are those the CLI writes on the driver's machine, whichever node
writes them: an actor left to choose for itself would choose at its own thread count, and
engines differ from each other by a level at some pixels. A given engine's output does not
depend on the thread count on the machines measured (the tests check it). Workers of
another kind than the driver (no native bfloat16 where the driver has it) fall back to
their own choice for a precision the driver did not choose. GPU actors run torch on their
GPU, as the CLI does there.

A cluster: every node needs subpixel with the extra installed, and the inputs and the output
folder at the same paths (a shared file system). The network is sent from the driver, so a
weights file need only be on the driver.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from torch import nn

from subpixel.engines import set_threads
from subpixel.errors import DeviceError, MissingExtraError, SubpixelError
from subpixel.files import remove_stale_temporaries
from subpixel.pipeline.batch import (
    BatchInterrupted,
    BatchSummary,
    Job,
    pending_jobs,
    plan_jobs,
    run_job,
)
from subpixel.pipeline.batch import shard as shard_jobs
from subpixel.pipeline.files import FileOptions, upscale_file
from subpixel.signals import signal_number
from subpixel.upscaler import Upscaler
from subpixel.weights import DEFAULT_MODEL, card_of, load_network, network_scale

__all__ = [
    "DEFAULT_THREADS",
    "ActorPlan",
    "FileResult",
    "Upscaling",
    "plan_actors",
    "upscale_on_ray",
]

#: Threads (and Ray CPUs) of each CPU actor unless told otherwise; see the module docstring.
DEFAULT_THREADS = 1
# One file per Ray block balances files of uneven sizes best; past this many files a block
# holds several (each block costs the scheduler a task).
_MAX_BLOCKS = 10_000
_COLUMNS = ("source", "target", "key", "status", "message", "notes")


@dataclass(frozen=True)
class ActorPlan:
    """How many actors, and the CPUs (also its threads) and GPUs (0 or 1) of each."""

    actors: int
    cpus: int
    gpus: int


@dataclass(frozen=True)
class FileResult:
    """What became of one file: ``status`` is ``"written"``, ``"skipped"`` (its output
    exists) or ``"failed"``, with the failure's one line naming the file in ``message``;
    ``notes`` are ``upscale_file``'s (a palette image written as RGB, say)."""

    job: Job
    status: str
    message: str = ""
    notes: tuple[str, ...] = ()


def plan_actors(
    resources: Mapping[str, float],
    files: int,
    *,
    device: str = "auto",
    actors: int | None = None,
    threads: int | None = None,
) -> ActorPlan:
    """The actors for ``files`` files on a cluster with ``resources``
    (``ray.cluster_resources()``): see the module docstring. Never more actors than files.

    Args:
        device: ``"auto"`` (GPUs where the cluster has them), ``"cpu"`` or ``"cuda"``.
        actors: how many (default: one per GPU, else CPUs // ``threads``).
        threads: CPUs and threads of each actor (default: on GPUs the CPUs shared out, else
            ``DEFAULT_THREADS``).

    Raises:
        DeviceError: another device name, or ``"cuda"`` on a cluster without GPUs.
        SubpixelError: the cluster has no CPUs, or fewer than ``threads``.

    Example:
        >>> plan_actors({"CPU": 8.0}, 100, threads=2)
        ActorPlan(actors=4, cpus=2, gpus=0)
        >>> plan_actors({"CPU": 16.0, "GPU": 2.0}, 100)
        ActorPlan(actors=2, cpus=8, gpus=1)
    """
    if device not in ("auto", "cpu", "cuda"):
        raise DeviceError(f"{device}: on a Ray cluster the device is auto, cpu or cuda")
    cpus, gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
    if device == "cuda" and gpus == 0:
        raise DeviceError("cuda: the Ray cluster has no GPUs")
    if cpus < 1:
        raise SubpixelError("the Ray cluster has no CPUs")
    if threads is not None and threads > cpus:
        raise SubpixelError(f"{threads} threads per actor, but the Ray cluster has {cpus} CPUs")
    files = max(files, 1)
    if gpus and device != "cpu":
        per_actor = threads or max(1, cpus // gpus)
        return ActorPlan(min(actors or gpus, gpus, files), per_actor, 1)
    per_actor = threads or min(DEFAULT_THREADS, cpus)
    return ActorPlan(min(actors or max(1, cpus // per_actor), files), per_actor, 0)


class Upscaling:
    """The Ray Data actor: one ``Upscaler`` built once, then a batch of files per call.

    A batch is columns ``source``, ``target`` and ``key`` (a ``Job`` per row); the answer
    adds ``status``, ``message`` and ``notes`` (newline-separated) per row, as
    ``FileResult`` has them.

    Args:
        network: the network, on the CPU (sent from the driver: no weights file needed here).
        options: how files are upscaled and written.
        overwrite: replace outputs that exist (else they are skipped).
        device: ``"cpu"`` or ``"cuda"`` (the GPU Ray gave this actor).
        engine, precision: as for ``subpixel.load_model``.
        threads: threads of this actor (PyTorch's, OpenCV's, the engine's).
        choices: engines chosen by the driver, by precision (``Upscaler``).
    """

    def __init__(
        self,
        network: nn.Module,
        options: FileOptions,
        *,
        overwrite: bool = False,
        device: str = "cpu",
        engine: str = "auto",
        precision: str = "auto",
        threads: int = 1,
        choices: Mapping[str, str] | None = None,
    ) -> None:
        set_threads(threads)
        self.upscaler = Upscaler(
            network.to(device),
            card_of(network),
            engine=engine,
            precision=precision,
            threads=threads,
            choices=choices,
        )
        self.options = options
        self.overwrite = overwrite

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows: dict[str, list[str]] = {name: [] for name in _COLUMNS}
        for source, target, key in zip(batch["source"], batch["target"], batch["key"], strict=True):
            result = self.upscale(Job(Path(str(source)), Path(str(target)), str(key)))
            for name, value in zip(_COLUMNS, _row(result), strict=True):
                rows[name].append(value)
        return {name: np.array(values, dtype=object) for name, values in rows.items()}

    def upscale(self, job: Job) -> FileResult:
        """One file, as ``subpixel upscale`` does it."""
        summary = BatchSummary()
        notes: list[str] = []

        def process(job: Job) -> None:
            notes.extend(upscale_file(job.source, job.target, self.upscaler, self.options))

        reason = run_job(job, process, summary, overwrite=self.overwrite)
        if reason is not None:
            return FileResult(job, "failed", reason)
        return FileResult(job, "written" if summary.written else "skipped", notes=tuple(notes))


def _row(result: FileResult) -> tuple[str, ...]:
    job = result.job
    notes = "\n".join(result.notes)
    return str(job.source), str(job.target), job.key, result.status, result.message, notes


def _result(row: Mapping[str, Any]) -> FileResult:
    job = Job(Path(row["source"]), Path(row["target"]), str(row["key"]))
    notes = tuple(str(row["notes"]).splitlines())
    return FileResult(job, str(row["status"]), str(row["message"]), notes)


def _record(summary: BatchSummary, result: FileResult) -> None:
    if result.status == "written":
        summary.written.append(result.job.target)
    elif result.status == "skipped":
        summary.skipped.append(result.job.target)
    else:
        summary.failed.append((result.job.source, result.message))


def _import_ray() -> ModuleType:
    try:
        import ray
        import ray.data  # Ray Data: ray's "data" extra
    except ImportError as error:
        raise MissingExtraError(
            "the Ray backend needs Ray Data: pip install 'subpixel[ray]'"
        ) from error
    return ray


@contextlib.contextmanager
def _connected(ray: ModuleType, address: str | None) -> Iterator[None]:
    """Connected to the cluster at ``address`` (None: ``ray.init``'s choice, see
    ``upscale_on_ray``); a connection the caller made is used as it is and left open."""
    if ray.is_initialized():
        yield
        return
    if address is None:
        ray.init(include_dashboard=False, logging_level=logging.WARNING)
    else:
        ray.init(address=address, logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()


@contextlib.contextmanager
def _ray_data_quiet(ray: ModuleType, quiet: bool) -> Iterator[None]:
    """Ray Data's progress bars and notices off while ``quiet`` (another bar reports)."""
    if not quiet:
        yield
        return
    context = ray.data.DataContext.get_current()
    logger = logging.getLogger("ray.data")
    bars, level = context.enable_progress_bars, logger.level
    context.enable_progress_bars = False
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        context.enable_progress_bars = bars
        logger.setLevel(level)


def upscale_on_ray(
    inputs: Sequence[str | Path],
    output: str | Path,
    *,
    model: str | Path = DEFAULT_MODEL,
    scale: float | None = None,
    options: FileOptions | None = None,
    recursive: bool = False,
    overwrite: bool = False,
    shard: tuple[int, int] | None = None,
    engine: str = "auto",
    precision: str = "auto",
    device: str = "auto",
    address: str | None = None,
    actors: int | None = None,
    threads: int | None = None,
    progress: Callable[[FileResult], None] | None = None,
) -> BatchSummary:
    """Upscale files, folders and globs into ``output`` on a Ray cluster, like
    ``subpixel upscale`` (see the module docstring); returns what was written, skipped and
    failed (each failure with its one line).

    Args:
        inputs, output, recursive: as for ``subpixel.pipeline.batch.plan_jobs``.
        model: a bundled name or weights file (needed on the driver only).
        scale: the total factor (default ``options.scale``, else the network's own).
        options: how files are upscaled and written (default: the CLI's;
            ``options.format`` also sets the outputs' extension in a folder).
        overwrite: replace outputs that exist (default: skip them).
        shard: ``(k, n)``: only the k-th of n stable shards of the inputs.
        engine, precision: as for ``subpixel.load_model``; ``"auto"`` is chosen once, on
            the driver, for every CPU actor.
        device: ``"auto"`` (GPUs where the cluster has them), ``"cpu"`` or ``"cuda"``.
        address: the cluster (``"auto"``, ``"host:6379"``, ``"ray://host:10001"``,
            ``"local"``); default: the one in RAY_ADDRESS, else the one ``ray start`` started
            on this machine, else a new local one (``ray.init``'s rule). A connection the
            caller made with ``ray.init`` is used as it is and not shut down; one made here is
            closed (a local cluster started here stops).
        actors, threads: see ``plan_actors``.
        progress: called with each file's ``FileResult`` as it is done (Ray Data's own
            progress bars are off meanwhile).

    Raises:
        MissingExtraError: Ray Data is not installed.
        ImageError, ScaleError, ModelError, DeviceError: what ``subpixel upscale`` refuses
            before any work.
        BatchInterrupted: Ctrl-C or SIGTERM, with what was done.

    Example (not run here: it starts a cluster):
        >>> summary = upscale_on_ray(["photos/"], "big/", model="espcn")  # doctest: +SKIP
        >>> summary.line()  # doctest: +SKIP
        '120 written, 0 skipped (output exists), 0 failed'
    """
    ray = _import_ray()
    options = options or FileOptions()
    if scale is not None:
        options = replace(options, scale=scale)
    native = network_scale(model, options.scale)
    names = [str(text) for text in inputs]
    jobs = plan_jobs(names, output, recursive=recursive, extension=options.format)
    if shard is not None:
        jobs = shard_jobs(jobs, *shard)
    pending = pending_jobs(jobs, overwrite)
    summary = BatchSummary()
    for job in set(jobs) - set(pending):
        _record(summary, FileResult(job, "skipped"))
        if progress is not None:
            progress(FileResult(job, "skipped"))
    if not pending:
        return summary
    network = load_network(model, scale=native)
    with _connected(ray, address), _ray_data_quiet(ray, quiet=progress is not None):
        plan = plan_actors(
            ray.cluster_resources(), len(pending), device=device, actors=actors, threads=threads
        )
        choices = {} if plan.gpus else _driver_choices(network, engine, precision)
        for folder in sorted({job.target.parent for job in pending}):
            remove_stale_temporaries(folder)
        rows = ray.data.from_items(
            [{"source": str(j.source), "target": str(j.target), "key": j.key} for j in pending],
            override_num_blocks=min(len(pending), _MAX_BLOCKS),
        ).map_batches(
            Upscaling,
            fn_constructor_args=(network, options),
            fn_constructor_kwargs={
                "overwrite": overwrite,
                "device": "cuda" if plan.gpus else "cpu",
                "engine": engine,
                "precision": precision,
                "threads": plan.cpus,
                "choices": choices,
            },
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=plan.actors),
            num_cpus=plan.cpus,
            **({"num_gpus": plan.gpus} if plan.gpus else {}),
        )
        done = 0
        try:
            for row in rows.iter_rows():
                result = _result(row)
                _record(summary, result)
                done += 1
                if progress is not None:
                    progress(result)
        except KeyboardInterrupt as interruption:
            raise BatchInterrupted(
                signal_number(interruption), summary, None, len(pending) - done
            ) from interruption
    return summary


def _driver_choices(network: nn.Module, engine: str, precision: str) -> dict[str, str]:
    """The engines ``subpixel upscale`` would run here, by precision, for 8- and 16-bit
    inputs (measured now the first time on this machine; remembered after)."""
    upscaler = Upscaler(network, card_of(network), engine=engine, precision=precision)
    return {upscaler.precision_for(bits): upscaler.engine_choice(bits) for bits in (8, 16)}
