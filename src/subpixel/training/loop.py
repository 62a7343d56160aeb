"""The training loop: data, optimiser, schedule, validation, checkpoints and exact resume.

A run folder holds ``config.json`` (the resolved config), ``checkpoint.safetensors`` (the
full training state, rewritten at every validation), ``best.safetensors`` and
``last.safetensors`` (weights with model cards, usable by ``subpixel.load_model``: the weight
average when the run keeps one, and a re-parameterised network collapsed into the plain
network it equals), ``log.csv``, ``curves.png`` and ``sessions.json`` (each process that
trained it: command line, machine, threads, iterations and seconds). Run under ``torchrun``
it trains data-parallel; rank 0 writes.

A step never waits for the device: losses are summed where they are computed and read back
only when a log row is written (every ``val_every / 10`` iterations), so on a GPU the host
runs ahead and queues the next steps.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from subpixel import models
from subpixel.data import DevicePairs, PatchCache, PatchDataset
from subpixel.devices import processor_name, resolve_device
from subpixel.errors import SubpixelError
from subpixel.evaluation import evaluate
from subpixel.reparam import Collapsible
from subpixel.training.checkpoint import TrainingState, load_checkpoint, save_checkpoint
from subpixel.training.config import TrainConfig
from subpixel.training.ema import WeightAverage
from subpixel.training.losses import charbonnier_loss
from subpixel.training.precision_choice import StepTimer, choose_training_precision
from subpixel.training.records import (
    LogRow,
    Session,
    plot_curves,
    read_log,
    read_sessions,
    write_log,
    write_sessions,
)
from subpixel.training.sampling import RunSampler
from subpixel.training.schedule import Schedule
from subpixel.weights import bundled_weights, card_of, describe, load_weights, save_weights


class RunError(SubpixelError):
    """A run folder that cannot be started or resumed as asked."""


@dataclass(frozen=True)
class RunFiles:
    """Where a run keeps its files."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.safetensors"

    @property
    def best(self) -> Path:
        return self.root / "best.safetensors"

    @property
    def last(self) -> Path:
        return self.root / "last.safetensors"

    @property
    def log(self) -> Path:
        return self.root / "log.csv"

    @property
    def plot(self) -> Path:
        return self.root / "curves.png"

    @property
    def sessions(self) -> Path:
        return self.root / "sessions.json"


@dataclass(frozen=True)
class Progress:
    """Reported after every iteration (``val_psnr`` only after a validation).

    ``loss`` is the mean training loss of the last logged window (NaN before the first),
    so that reporting never waits for the device.
    """

    iteration: int
    iterations: int
    loss: float
    lr: float
    val_psnr: float | None
    best_psnr: float | None


@dataclass(frozen=True)
class RunResult:
    files: RunFiles
    iteration: int
    best_psnr: float | None
    best_iteration: int | None
    seconds: float


def output_layer(model: nn.Module) -> nn.Module:
    """The layer both papers train ten times slower: the one that makes HR pixels, as the
    network's class declares it (``SRNetwork.output_layer``).

    Raises:
        TypeError: the network declares none.
    """
    if not isinstance(model, models.SRNetwork):
        raise TypeError(f"no output layer known for {type(model).__name__}")
    return model.output_layer()


def init_weights(init_from: str | Path, scale: int) -> Path:
    """The weights file ``init_from`` names: a run folder (its best weights), a
    ``.safetensors`` file, or a bundled model, as ``espcn_x3`` or as ``espcn`` (at ``scale``,
    the run's).

    Raises:
        RunError: none of these, or a run folder without best weights.
    """
    source = Path(init_from)
    if source.is_dir():
        best = RunFiles(source).best
        if not best.is_file():
            raise RunError(f"cannot initialise from {source}: it holds no {best.name}")
        return best
    if source.is_file():
        return source
    text = str(init_from)
    bundled = bundled_weights()
    name, _, digits = text.rpartition("_x")
    key = (name, int(digits)) if name and digits.isdigit() else (text, scale)
    if key in bundled:
        return bundled[key]
    names = ", ".join(f"{a}_x{s}" for a, s in sorted(bundled))
    raise RunError(
        f"cannot initialise from {text!r}: not a run folder, a weights file or a bundled model "
        f"({names}; a name without _xN takes the run's scale, x{scale})"
    )


def _donor(config: TrainConfig) -> tuple[Path, nn.Module]:
    """The weights ``config.init_from`` names, loaded, and checked to be the run's network."""
    assert config.init_from is not None
    weights = init_weights(config.init_from, config.scale)
    donor = load_weights(weights)
    card = card_of(donor)
    if config.model not in (card.architecture, card.name) and (
        type(donor) is not _collapses_into(config)  # an FSRCNN for fsrcnn-linear
    ):
        raise RunError(
            f"cannot initialise {config.model} from {weights}: it holds {card.name} weights"
        )
    return weights, donor


def _collapses_into(config: TrainConfig) -> type[nn.Module] | None:
    """The class of the plain network the run's network collapses into, None for a network
    that trains as it runs."""
    with torch.random.fork_rng(devices=[]):  # building draws fresh weights
        network = models.build(
            config.model, scale=config.scale, channels=config.channels, **config.model_options
        )
        return type(network.collapse()) if isinstance(network, Collapsible) else None


def load_teacher(config: TrainConfig, device: torch.device) -> nn.Module | None:
    """The network ``config.teacher`` names (see ``init_weights``), frozen, in float32 on
    ``device``; None for a run without one.

    Raises:
        RunError: it is not there, or not of the run's scale and channels.
    """
    if config.teacher is None:
        return None
    weights = init_weights(config.teacher, config.scale)
    teacher = load_weights(weights, device).float().eval()
    card = card_of(teacher)
    if (card.scale, card.channels) != (config.scale, config.channels):
        raise RunError(
            f"the teacher {weights} is x{card.scale} with {card.channels} channels; the run "
            f"is x{config.scale} with {config.channels}"
        )
    teacher.requires_grad_(False)
    return teacher


def distilled_targets(
    teacher: nn.Module, lr: torch.Tensor, hr: torch.Tensor, weight: float
) -> torch.Tensor:
    """``hr`` moved ``weight`` of the way towards ``teacher``'s output on ``lr``."""
    with torch.no_grad():
        return torch.lerp(hr, teacher(lr).float(), weight)


def build_network(config: TrainConfig) -> nn.Module:
    """A fresh network, seeded, optionally initialised (``init_from``) from a run folder, a
    weights file or a bundled model (see ``init_weights``)."""
    torch.manual_seed(config.seed)
    model = models.build(
        config.model, scale=config.scale, channels=config.channels, **config.model_options
    )
    if config.init_from:
        weights, donor = _donor(config)
        try:
            if isinstance(model, models.SRNetwork):
                model.start_from(donor)  # a re-parameterised network takes a collapsed file
            else:
                model.load_state_dict(donor.state_dict(), strict=True)
        except (RuntimeError, ValueError) as error:
            reason = str(error).splitlines()[0]
            raise RunError(f"cannot initialise from {weights}: {reason}") from error
    return model


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Two parameter groups: the trunk at ``lr``, the output layer at ``lr * head_lr_scale``.

    A network with no known output layer (``output_layer``) trains as one group when
    ``head_lr_scale`` is 1 and ``train_only`` is ``"all"``. Adam runs fused (one kernel for
    all parameters).
    """
    try:
        head = list(output_layer(model).parameters())
    except TypeError as error:
        if config.head_lr_scale != 1.0 or config.train_only != "all":
            raise RunError(f"{error}: train it with head_lr_scale 1 and train_only all") from error
        head = []
    head_ids = {id(p) for p in head}
    trunk = [p for p in model.parameters() if id(p) not in head_ids]
    if config.train_only == "head":
        for parameter in trunk:
            parameter.requires_grad_(False)
    groups = []
    if head:
        groups.append({"params": head, "lr": config.lr * config.head_lr_scale, "base_lr": 0.0})
    if config.train_only == "all":
        groups.insert(0, {"params": trunk, "lr": config.lr, "base_lr": 0.0})
    for group in groups:
        group["base_lr"] = group["lr"]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    # Fused: one kernel for all parameters, on CPU as on CUDA (on CPU 0.4 ms against 2.2
    # for FSRCNN's 18 tensors, one step of 60 ms on 2 cores).
    return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay, fused=True)


class TrainingView(nn.Module):
    """The network as the loop calls it: its output, or its pre-shuffle phases.

    A module of its own so that ``DistributedDataParallel`` can wrap either call. The output
    comes from ``SRNetwork.forward_for_training``: FSRCNN's deconvolution in its exact
    sub-pixel form, computed from the deconvolution's own parameters (the same function and
    gradients, about 1.5x faster on CPU, and 2x in channels-last layout: see
    ``prepare_for_training``).
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, lr: torch.Tensor, phases: bool = False) -> torch.Tensor:
        network = self.network
        if phases:
            if not (isinstance(network, models.SRNetwork) and network.ends_in_subpixel):
                raise RunError("unshuffled targets need a network ending in a sub-pixel layer")
            return network.forward_phases(lr)  # (B, C r^2, H, W)
        if isinstance(network, models.SRNetwork):
            return network.forward_for_training(lr)  # (B, C, rH, rW)
        return network(lr)  # (B, C, rH, rW)


def prepare_for_training(
    network: nn.Module, device: str | torch.device, precision: str = "float32"
) -> nn.Module:
    """``network`` on ``device``, in the memory layout its kernels run fastest in.

    On CPU a network whose class declares ``channels_last_on_cpu`` goes channels-last (FSRCNN:
    oneDNN's kernels for its narrow layers run about 1.5x faster; ESPCN gains nothing). On
    CUDA every network goes channels-last in bfloat16, the layout cuDNN's tensor-core
    convolutions take without transposing; float32 keeps cuDNN's default layout.
    """
    device = torch.device(device)
    network = network.to(device)
    if device.type == "cuda":
        channels_last = precision == "bfloat16"
    else:
        channels_last = isinstance(network, models.SRNetwork) and network.channels_last_on_cpu
    if channels_last:
        network = network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return network


def compute_loss(
    view: nn.Module, lr: torch.Tensor, hr: torch.Tensor, config: TrainConfig
) -> torch.Tensor:
    """MSE, L1 or Charbonnier between the network's output and the HR patch.

    With ``unshuffled_targets`` the loss compares the pre-shuffle output with the
    pixel-unshuffled target: the shuffle is a permutation, so loss and gradients are the same.
    ``loss_border`` LR pixels on each side (``r`` times as many HR pixels) are left out.
    ``view`` is a ``TrainingView`` (or DDP around one). With ``precision="bfloat16"`` the
    network runs under autocast and the loss is taken in float32.
    """
    autocast = torch.autocast(
        lr.device.type, dtype=torch.bfloat16, enabled=config.precision == "bfloat16"
    )
    with autocast:
        if config.unshuffled_targets:
            output, target = view(lr, phases=True), F.pixel_unshuffle(hr, config.scale)
            border = config.loss_border
        else:
            output, target = view(lr), hr
            border = config.loss_border * config.scale
    output = output.float()
    if border:
        output = output[..., border:-border, border:-border]
        target = target[..., border:-border, border:-border]
    if config.loss == "charbonnier":
        return charbonnier_loss(output, target, config.charbonnier_eps)
    criterion = F.mse_loss if config.loss == "mse" else F.l1_loss
    return criterion(output, target)


@contextlib.contextmanager
def _process_group(device: torch.device) -> Iterator[tuple[int, int, torch.device]]:
    """``(rank, world_size, device)``; under ``torchrun`` joins the process group (gloo for
    CPU training, NCCL for CUDA, where each process takes the GPU of its ``LOCAL_RANK``) and
    leaves it on the way out, so no process exits while its peers still talk to it."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and device.type == "cuda":
        local_rank, gpus = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
        if local_rank >= gpus:
            raise RunError(
                f"process {local_rank} of this node has no GPU of its own ({gpus} visible); "
                f"start at most {gpus} per node, or train on the CPU"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    joined = world_size > 1 and not dist.is_initialized()
    if joined:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        if dist.is_initialized():
            yield dist.get_rank(), dist.get_world_size(), device
        else:
            yield 0, 1, device
    finally:
        if joined:
            dist.destroy_process_group()


_TIMER_WARMUP_STEPS = 2


def _random_state_kept(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """The global random state of the CPU (and of ``device``) restored on the way out."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def step_timer(network: nn.Module, device: torch.device, share: int) -> StepTimer:
    """Seconds of one whole training step (forward, loss, backward, optimiser) of a copy of
    ``network`` on random batches of ``share`` patches, in a given precision; ``network``
    and the global random state are left as they were."""
    generator = torch.Generator().manual_seed(0)
    steps: dict[str, Callable[[], None]] = {}

    def prepared(config: TrainConfig, precision: str) -> Callable[[], None]:
        copied = prepare_for_training(copy.deepcopy(network), device, precision)
        view = TrainingView(copied).train()
        optimizer = make_optimizer(copied, config)
        run = dataclasses.replace(config, precision=precision)
        side, hr_side = config.patch_size, config.patch_size * config.scale
        lr = torch.rand((share, config.channels, side, side), generator=generator).to(device)
        hr = torch.rand((share, config.channels, hr_side, hr_side), generator=generator)
        hr = hr.to(device)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            compute_loss(view, lr, hr, run).backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        for _ in range(_TIMER_WARMUP_STEPS):
            step()
        return step

    def timed(config: TrainConfig, precision: str) -> float:
        if precision not in steps:
            with _random_state_kept(device):
                steps[precision] = prepared(config, precision)
        start = time.perf_counter()
        steps[precision]()
        return time.perf_counter() - start

    return timed


def _agreed_precision(
    config: TrainConfig, device: torch.device, rank: int, world_size: int
) -> TrainConfig:
    """``config`` with an ``"auto"`` precision made concrete (``precision_choice``): chosen
    by the first process, the same for all."""
    if config.precision != "auto":
        return config
    choice = [""]
    if rank == 0:
        share = config.batch_size // world_size
        with _random_state_kept(device):  # building seeds the global generator
            network = build_network(dataclasses.replace(config, init_from=None))
        timer = step_timer(network, device, share)
        choice[0] = choose_training_precision(config, device, timer, share=share)
    if world_size > 1:
        dist.broadcast_object_list(choice, src=0)
    return dataclasses.replace(config, precision=choice[0])


def _prepare_folder(
    files: RunFiles,
    config: TrainConfig,
    resume: bool,
    device: torch.device,
    rank: int,
    world_size: int,
) -> TrainConfig:
    """The run's config: read back from the folder to resume, or ``config`` with its
    precision made concrete, written there for a new run."""
    if resume:
        if not files.config.exists():
            raise RunError(f"nothing to resume in {files.root} (no config.json)")
        return _agreed_precision(TrainConfig.load(files.config), device, rank, world_size)
    if files.checkpoint.exists():
        raise RunError(f"{files.root} already holds a run; pass --resume or choose a new folder")
    config = _agreed_precision(config, device, rank, world_size)
    if rank == 0:
        try:
            files.root.mkdir(parents=True, exist_ok=True)
        except FileExistsError as error:
            raise RunError(f"{files.root} is a file, not a run folder") from error
        except OSError as error:
            reason = f"cannot create the run folder {files.root}: {error.strerror}"
            raise RunError(reason) from error
        try:
            files.config.write_text(config.to_json())
        except OSError as error:
            raise RunError(f"cannot write {files.config}: {error.strerror}") from error
    return config


def _card_fields(
    config: TrainConfig, state: TrainingState, collapsed_from: str | None = None
) -> dict[str, object]:
    training: dict[str, object] = {
        "data": list(config.data),
        "iterations": state.iteration,
        "seconds": round(state.seconds, 1),
        "batch_size": config.batch_size,
        "patch_size": config.patch_size,
        "seed": config.seed,
        "init_from": config.init_from,
        "precision": config.precision,
    }
    if config.ema_decay:
        training["ema_decay"] = config.ema_decay
    if collapsed_from:
        training["collapsed_from"] = collapsed_from
    return {
        "degradation": f"matlab-{config.degradation}"
        if config.degradation == "bicubic"
        else config.degradation,
        "training": training,
    }


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _batches(
    config: TrainConfig,
    cache: PatchCache,
    device: torch.device,
    start: int,
    rank: int,
    world_size: int,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This process's ``(lr, hr)`` batches for iterations ``start .. iterations - 1``, on
    ``device``: cut there from ``DevicePairs``, or by a ``DataLoader`` and copied over."""
    if config.data_on_device:
        try:
            pairs = DevicePairs(cache, config.data_config(), device)
        except torch.OutOfMemoryError as error:
            raise RunError(
                f"the training images ({cache.nbytes / 1e6:.0f} MB as uint8 RGB) do not fit "
                f"on {device} as float32; train with data_on_device false"
            ) from error
        for iteration in range(start, config.iterations):
            yield pairs.batch(config.seed, iteration, config.batch_size, rank, world_size)
        return
    dataset = PatchDataset(cache, config.data_config(), seed=config.seed)
    sampler = RunSampler(
        len(dataset), config.seed, start, config.iterations, config.batch_size, rank, world_size
    )
    loader = DataLoader(
        dataset,
        batch_size=sampler.share,
        sampler=sampler,
        num_workers=config.workers,
        pin_memory=device.type == "cuda",
    )
    for lr, hr in loader:
        yield lr.to(device, non_blocking=True), hr.to(device, non_blocking=True)


@contextlib.contextmanager
def _cudnn_autotuned(device: torch.device) -> Iterator[None]:
    """cuDNN's per-shape kernel search on while training on CUDA: every batch has one shape."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = previous or device.type == "cuda"
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


class _LossSums:
    """Training losses summed on the device (float64, in step order) and read back only
    when a log row is written or a ``plateau`` window ends."""

    def __init__(self, schedule: Schedule, device: torch.device, world_size: int) -> None:
        self.schedule, self.world_size = schedule, world_size
        self.plateau = schedule.config.schedule == "plateau"
        self.window = torch.zeros((), dtype=torch.float64, device=device)
        self.window_count = 0
        self.pending = torch.zeros((), dtype=torch.float64, device=device)
        self.pending_count = 0

    def add(self, loss: torch.Tensor) -> None:
        value = loss.detach().to(torch.float64)
        self.window += value
        self.window_count += 1
        if self.plateau:
            self.pending += value
            self.pending_count += 1
            window = self.schedule.window_count + self.pending_count
            if window == self.schedule.config.plateau_every:
                self.feed_schedule()

    def _read(self, total: torch.Tensor) -> float:
        if self.world_size > 1:
            total = total.clone()
            dist.all_reduce(total, op=dist.ReduceOp.AVG)
        return float(total)

    def feed_schedule(self) -> None:
        """Hand the pending losses to the schedule (at a window's end, and before a
        checkpoint records the schedule's state)."""
        if self.pending_count:
            self.schedule.observe_sum(self._read(self.pending), self.pending_count)
            self.pending.zero_()
            self.pending_count = 0

    def mean(self) -> float:
        """The mean loss since the last call (over all processes), and a new window."""
        mean = self._read(self.window) / self.window_count
        self.window.zero_()
        self.window_count = 0
        return mean


def train(
    config: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    cache_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    progress: Callable[[Progress], None] | None = None,
    command: str | None = None,
) -> RunResult:
    """Train (or resume) a run in folder ``out``; see the module docstring for its files.

    ``command`` (the command line that started this process, for the record) goes into
    ``sessions.json`` with the machine, threads and the iterations and seconds this process
    adds, one entry per start or resume, so that the record says how each part was made.

    Resuming restores model, optimiser, weight average, schedule and the data order from the
    last checkpoint, so an interrupted run ends with the same weights as an uninterrupted
    one. ``device`` is checked (``subpixel.devices.resolve_device``) before anything is
    written. Under ``torchrun`` with a CUDA device each process trains on the GPU of its
    ``LOCAL_RANK``.

    Raises:
        DeviceError: an unknown device, or one this machine does not have.
        RunError: a folder that cannot be started or resumed as asked, or written.
    """
    device = resolve_device(device)
    if config.init_from and not resume:
        _donor(config)  # a bad name or network before the run folder is made
    if config.teacher and not resume:
        load_teacher(config, torch.device("cpu"))  # as for init_from
    with _process_group(device) as (rank, world_size, device):
        files = RunFiles(Path(out))
        session = Session(
            command=command,
            machine=processor_name(device),
            device=device.type,
            threads=torch.get_num_threads(),
            processes=world_size,
            torch=torch.__version__,
            first_iteration=0,
            last_iteration=0,
            seconds=0.0,
        )
        return _run(config, files, resume, cache_dir, device, progress, rank, session)


def _run(
    config: TrainConfig,
    files: RunFiles,
    resume: bool,
    cache_dir: str | Path | None,
    device: torch.device,
    progress: Callable[[Progress], None] | None,
    rank: int,
    session: Session,
) -> RunResult:
    """``train`` inside its process group (of one process, or ``torchrun``'s: ``session``
    holds its size), recorded as ``session``."""
    world_size = session.processes
    config = _prepare_folder(files, config, resume, device, rank, world_size)
    cache = PatchCache.build(
        [Path(d) for d in config.data],
        config.data_config(),
        Path(cache_dir) if cache_dir else Path.home() / ".cache" / "subpixel" / "patches",
        workers=_cpu_count(),
    )

    resuming = resume and files.checkpoint.exists()
    # A resumed run's weights come from its checkpoint, so the file it started from (which
    # may have moved since) is not read again.
    fresh = dataclasses.replace(config, init_from=None) if resuming else config
    network = prepare_for_training(build_network(fresh), device, config.precision)
    teacher = load_teacher(config, device)
    optimizer = make_optimizer(network, config)
    average = WeightAverage(network, config.ema_decay) if config.ema_decay else None
    schedule = Schedule(config)
    state = TrainingState(
        iteration=0,
        schedule=schedule.state_dict(),
        best_psnr=None,
        best_iteration=None,
        seconds=0.0,
    )
    if resuming:
        state = load_checkpoint(
            files.checkpoint, network, optimizer, average.network if average else None
        )
        schedule.load_state_dict(state.schedule)
    rows = [row for row in read_log(files.log) if row.iteration <= state.iteration]
    try:
        sessions = read_sessions(files.sessions, state.iteration) if resuming else []
    except ValueError as error:
        raise RunError(f"{error}; move it away to resume without it") from error
    session = dataclasses.replace(
        session, first_iteration=state.iteration, last_iteration=state.iteration
    )

    model: nn.Module = TrainingView(network)
    if world_size > 1:
        gpus = [device] if device.type == "cuda" else None
        model = DistributedDataParallel(model, device_ids=gpus)
    if config.compile_mode:
        model = torch.compile(model, mode=config.compile_mode)  # type: ignore[assignment]
    model.train()

    batches = _batches(config, cache, device, state.iteration, rank, world_size)
    log_every = max(1, config.val_every // 10)
    losses = _LossSums(schedule, device, world_size)
    logged_loss = rows[-1].loss if rows else float("nan")
    iteration, best_psnr, best_iteration = state.iteration, state.best_psnr, state.best_iteration
    started, seconds_before = time.perf_counter(), state.seconds

    with _cudnn_autotuned(device):
        for iteration in range(state.iteration + 1, config.iterations + 1):
            lr_batch, hr_batch = next(batches)
            factor = schedule.factor(iteration - 1)
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * factor
            if teacher is not None:
                hr_batch = distilled_targets(teacher, lr_batch, hr_batch, config.teacher_weight)
            optimizer.zero_grad(set_to_none=True)
            loss = compute_loss(model, lr_batch, hr_batch, config)
            loss.backward()
            optimizer.step()
            if average is not None:
                average.update(network, iteration)
            losses.add(loss)

            validate = iteration % config.val_every == 0 or iteration == config.iterations
            val_psnr = val_ssim = None
            if validate or iteration % log_every == 0:
                logged_loss = losses.mean()
                seconds = seconds_before + time.perf_counter() - started
                if validate and rank == 0:
                    deployed = _deployable(average.network if average else network, config)
                    if config.val:
                        val_psnr, val_ssim = _validate(deployed.network, config.val)
                        if best_psnr is None or val_psnr > best_psnr:
                            best_psnr, best_iteration = val_psnr, iteration
                rows.append(
                    LogRow(iteration, logged_loss, config.lr * factor, val_psnr, val_ssim, seconds)
                )
                if validate:
                    losses.feed_schedule()
                    state = TrainingState(
                        iteration, schedule.state_dict(), best_psnr, best_iteration, seconds
                    )
                    if rank == 0:
                        improved = best_iteration == iteration
                        session = dataclasses.replace(
                            session,
                            last_iteration=iteration,
                            seconds=round(seconds - seconds_before, 1),
                        )
                        _write_outputs(
                            files,
                            network,
                            average,
                            deployed,
                            optimizer,
                            config,
                            state,
                            rows,
                            [*sessions, session],
                            improved,
                        )
                    if world_size > 1:
                        dist.barrier()
            if progress is not None and rank == 0:
                lr_now = config.lr * factor
                progress(
                    Progress(iteration, config.iterations, logged_loss, lr_now, val_psnr, best_psnr)
                )

    return RunResult(files, iteration, best_psnr, best_iteration, state.seconds)


@dataclass(frozen=True)
class _Deployed:
    """The network that validation scores and weights files hold, and what it is."""

    network: nn.Module
    architecture: str
    collapsed_from: str | None


def _deployable(network: nn.Module, config: TrainConfig) -> _Deployed:
    """``network`` as it is shipped: a ``Collapsible`` one collapsed into its plain network."""
    if not isinstance(network, Collapsible):
        return _Deployed(network, config.model, None)
    plain = network.collapse()
    architecture = models.architecture_of(plain)
    if architecture is None:
        raise RunError(f"{config.model} collapses into {type(plain).__name__}, no known network")
    return _Deployed(plain, architecture, config.model)


def _validate(network: nn.Module, dataset: str) -> tuple[float, float]:
    """Mean PSNR and SSIM on ``dataset`` under the evaluation protocol."""
    training = network.training
    network.eval()
    report = evaluate(network, dataset)
    network.train(training)
    return report.mean("psnr"), report.mean("ssim")


def _write_outputs(
    files: RunFiles,
    network: nn.Module,
    average: WeightAverage | None,
    deployed: _Deployed,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    state: TrainingState,
    rows: list[LogRow],
    sessions: list[Session],
    improved: bool,
) -> None:
    last = rows[-1]
    metrics = {}
    if last.val_psnr is not None:
        metrics = {str(config.val): {"psnr": last.val_psnr, "ssim": last.val_ssim}}
    fields = _card_fields(config, state, deployed.collapsed_from)
    describe(deployed.network, deployed.architecture, metrics=metrics, **fields)
    save_weights(deployed.network, files.last)
    if improved:
        save_weights(deployed.network, files.best)
    write_log(files.log, rows)
    write_sessions(files.sessions, sessions)
    plot_curves(rows, files.plot, f"{config.model} x{config.scale}")
    # The checkpoint goes last: whatever it records is already on disk.
    save_checkpoint(
        files.checkpoint, network, optimizer, state, average.network if average else None
    )
