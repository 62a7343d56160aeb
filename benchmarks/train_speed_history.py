"""Training speed across versions: whole steps/s of ``subpixel.training.train`` in two or more
source trees (checkouts of this repository at different commits), on the same machine.

``benchmarks/train_speed.py`` compares the data paths of one version; this compares versions,
each with its own defaults (data path, precision, optimiser), so that a gain is measured
against the code as it was. Each tree runs in a child process with its ``src`` first on the
path, the same run (FSRCNN x3 by default, 64 patches of 17x17 LR, the three training sets,
no validation), timed from the ``--warmup``-th step for about ``--seconds``. The trees take
turns ``--repeats`` times and the median is shown, with its ratio to the first tree's.

Usage (the first tree is the baseline)::

    git worktree add /tmp/subpixel-3c2b415 3c2b415
    OMP_NUM_THREADS=2 python benchmarks/train_speed_history.py /tmp/subpixel-3c2b415 .
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from subpixel.devices import processor_name
from subpixel.paths import data_root

# Runs in the child, against whichever ``subpixel`` its path finds; only config fields that
# every version has.
_CHILD = """
import contextlib, json, sys, tempfile, time
from pathlib import Path
import torch
import subpixel
from subpixel.training import TrainConfig, train
spec = json.loads(sys.argv[1])
config = TrainConfig(val=None, iterations=10**9, val_every=10**9, **spec["config"])
marks = {}
class Done(Exception):
    pass
def progress(p):
    if p.iteration == spec["warmup"]:
        marks["start"] = time.perf_counter()
    elif p.iteration > spec["warmup"]:
        seconds = time.perf_counter() - marks["start"]
        if seconds >= spec["seconds"]:
            marks["rate"] = (p.iteration - spec["warmup"]) / seconds
            raise Done
with tempfile.TemporaryDirectory() as out, contextlib.suppress(Done):
    train(config, out, cache_dir=Path(spec["cache"]), device=torch.device("cpu"),
          progress=progress)
print(json.dumps({"rate": marks["rate"], "package": subpixel.__file__}))
"""


def steps_per_second(tree: Path, spec: dict[str, object]) -> float:
    """One timed run of ``spec`` by the ``subpixel`` in ``tree/src``."""
    source = tree.resolve() / "src"
    if not (source / "subpixel" / "__init__.py").is_file():
        raise SystemExit(f"{tree}: no subpixel package in {source}")
    environment = dict(os.environ, PYTHONPATH=str(source))
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(spec)],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["no output"]
        raise SystemExit(f"{tree}: the timed run failed: {lines[-1]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not Path(result["package"]).resolve().is_relative_to(source):
        raise SystemExit(f"{tree}: the run imported subpixel from {result['package']}")
    return float(result["rate"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", type=Path, help="source trees; the first is the base")
    parser.add_argument("--model", default="fsrcnn")
    parser.add_argument("--scale", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--patch-size", type=int, default=17, help="LR patch side")
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds per run")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=3, help="runs per tree (median)")
    parser.add_argument("--data", nargs="+", default=None, help="HR folders (T91 etc.)")
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache/subpixel/patches"))
    args = parser.parse_args()

    folders = args.data or [
        str(data_root() / "train" / name) for name in ("T91", "General100", "BSDS200")
    ]
    config = {
        "model": args.model,
        "scale": args.scale,
        "data": folders,
        "batch_size": args.batch_size,
        "patch_size": args.patch_size,
    }
    spec = {
        "config": config,
        "warmup": args.warmup,
        "seconds": args.seconds,
        "cache": args.cache_dir,
    }
    print(
        f"{processor_name(torch.device('cpu'))}; torch {torch.__version__}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; {args.model} "
        f"x{args.scale}, batch {args.batch_size} of {args.patch_size}x{args.patch_size} LR, "
        "each tree's defaults"
    )
    rates: dict[Path, list[float]] = {tree: [] for tree in args.trees}
    for _ in range(args.repeats):
        for tree in args.trees:
            rates[tree].append(steps_per_second(tree, spec))
    base = statistics.median(rates[args.trees[0]])
    print(f"{'tree':<40}{'it/s':>8}{'M LR px/s':>11}{'ratio':>7}  runs")
    for tree, runs in rates.items():
        rate = statistics.median(runs)
        pixels = rate * args.batch_size * args.patch_size**2 / 1e6
        each = ", ".join(f"{r:.1f}" for r in runs)
        print(f"{tree!s:<40}{rate:>8.1f}{pixels:>11.2f}{rate / base:>7.2f}  {each}")


if __name__ == "__main__":
    main()
