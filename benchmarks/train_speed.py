"""Training speed: whole steps of ``subpixel.training.train`` per second, per network.

For each network (ESPCN x3; FSRCNN x3 and FSRCNN-s x3, plain and trained re-parameterised;
ECBSR and SESR at x2, x3 and x4) the real training loop runs on the same batch and patch
size with the images on the device and batches cut there (``data_on_device``, the default)
and with the ``DataLoader`` of ``PatchDataset`` (``--workers`` processes), the only path
before. Each run is timed from its ``--warmup``-th step (after the images are on the
device, the loader's workers have started and cuDNN has chosen its kernels) for about
``--seconds``; on CUDA the device is synchronised at both ends. The two paths take turns
``--repeats`` times, so that a change in the machine's load hits both alike, and the median
is shown. A step is everything the loop does: the batch, the learning rate, forward, loss,
backward, the optimiser step (fused Adam), the weight average when ``--ema-decay`` is set,
and the loss kept on the device; nothing is validated or written. Rows give the precision
the step ran in, iterations/s, patches/s, LR pixels/s and the device path's ratio to the
loader's.

``--precision auto`` (the default, as for ``subpixel train``) lets the run choose bfloat16
where a measured step pays (``subpixel.training.precision_choice``); the loader path runs
in ``--loader-precision``, float32 by default: training as it was before the device path
and the automatic precision, so the ratio is the default's gain over that.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/train_speed.py --seconds 5
    OMP_NUM_THREADS=2 python benchmarks/train_speed.py --patch-size 32 --networks espcn-x3
    python benchmarks/train_speed.py --device cuda --batch-size 256 --patch-size 40 --seconds 10
    python benchmarks/train_speed.py --device cuda --precision bfloat16 --compile-mode default
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from subpixel import models
from subpixel.devices import processor_name
from subpixel.paths import data_root
from subpixel.training import Progress, TrainConfig, train
from subpixel.training.recipes import TRAINING_SETS

# name -> (architecture, scale)
NETWORKS = {
    name: (name.removesuffix("-x3"), 3)
    for name in ("espcn-x3", "fsrcnn-x3", "fsrcnn-s-x3", "fsrcnn-linear-x3", "fsrcnn-s-linear-x3")
}
NETWORKS.update(
    {
        f"{name}-x{scale}": (name, scale)
        for name in ("ecbsr", "sesr")
        if name in models.BUILDERS
        for scale in (2, 3, 4)
    }
)


class _Done(Exception):
    pass


@dataclass(frozen=True)
class Timing:
    iterations: int
    seconds: float
    precision: str


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(
    config: TrainConfig, device: torch.device, cache_dir: Path, warmup: int, seconds: float
) -> Timing:
    """Steps of ``train(config)`` from step ``warmup`` on, stopped after ``seconds``."""
    marks: dict[str, float] = {}

    def progress(p: Progress) -> None:
        if p.iteration == warmup:
            _sync(device)
            marks["start"] = time.perf_counter()
        elif p.iteration > warmup and time.perf_counter() - marks["start"] >= seconds:
            _sync(device)
            marks["stop"], marks["steps"] = time.perf_counter(), p.iteration - warmup
            raise _Done

    with tempfile.TemporaryDirectory(prefix="train_speed-") as out:
        with contextlib.suppress(_Done):
            train(config, out, cache_dir=cache_dir, device=device, progress=progress)
        precision = TrainConfig.load(Path(out) / "config.json").precision
    return Timing(int(marks["steps"]), marks["stop"] - marks["start"], precision)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--patch-size", type=int, default=17, help="LR patch side")
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per row")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=3, help="timings per path (median)")
    parser.add_argument(
        "--networks",
        default=",".join(name for name in NETWORKS if name.endswith("-x3")),
        help=f"comma-separated, of {', '.join(NETWORKS)} (default: the x3 ones)",
    )
    parser.add_argument("--workers", type=int, default=2, help="the loader's processes")
    parser.add_argument("--no-loader", action="store_true", help="time the device path only")
    parser.add_argument("--ema-decay", type=float, default=0.0)
    parser.add_argument("--precision", choices=("auto", "float32", "bfloat16"), default="auto")
    parser.add_argument(
        "--loader-precision", choices=("auto", "float32", "bfloat16"), default="float32"
    )
    parser.add_argument("--compile-mode", default=None, help="a torch.compile mode")
    parser.add_argument("--downscale-augment", type=float, nargs="*", default=[])
    parser.add_argument("--data", nargs="+", default=None, help="HR folders (T91 etc.)")
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache/subpixel/patches"))
    args = parser.parse_args()

    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    folders = args.data or [str(data_root() / "train" / s) for s in TRAINING_SETS]
    print(
        f"{processor_name(device)}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"batch {args.batch_size} of {args.patch_size}x{args.patch_size} LR, "
        f"compile {args.compile_mode or 'off'}, EMA {args.ema_decay or 'off'}"
    )
    paths = [("device", True)] + ([] if args.no_loader else [("loader", False)])
    header = (
        f"{'network':<20}{'data':<8}{'precision':<10}{'it/s':>9}{'patches/s':>11}"
        f"{'M LR px/s':>11}{'ratio':>7}"
    )
    print(header)
    for network in args.networks.split(","):
        architecture, scale = NETWORKS[network]
        timings: dict[str, list[float]] = {path: [] for path, _ in paths}
        precisions: dict[str, str] = {}
        for _ in range(args.repeats):
            for path, on_device in paths:
                config = TrainConfig(
                    model=architecture,
                    scale=scale,
                    data=tuple(folders),
                    val=None,
                    iterations=10**9,
                    val_every=10**9,
                    batch_size=args.batch_size,
                    patch_size=args.patch_size,
                    downscale_augment=tuple(args.downscale_augment),
                    data_on_device=on_device,
                    workers=args.workers,
                    ema_decay=args.ema_decay,
                    precision=args.precision if on_device else args.loader_precision,
                    compile_mode=args.compile_mode,
                )
                cache = Path(args.cache_dir)
                timing = time_steps(config, device, cache, args.warmup, args.seconds)
                timings[path].append(timing.iterations / timing.seconds)
                precisions[path] = timing.precision
        for path, _ in paths:
            rate = statistics.median(timings[path])
            patches = rate * args.batch_size
            pixels = patches * args.patch_size**2 / 1e6
            ratio = ""
            if path == "loader":
                ratio = f"{statistics.median(timings['device']) / rate:>7.2f}"
            print(
                f"{network:<20}{path:<8}{precisions[path]:<10}{rate:>9.1f}{patches:>11.0f}"
                f"{pixels:>11.2f}{ratio}"
            )


if __name__ == "__main__":
    main()
