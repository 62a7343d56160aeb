"""The Ray Data backend on this machine: images/s with 1 and 2 actors, beside one process.

Upscales the same folder (default: the first ``--images`` of ``$SUBPIXEL_DATA/benchmark/
BSD100/HR``, 481x321 or 321x481 PNGs; generated noise images of that size where the data is
absent) with:

- **one process**: ``subpixel upscale`` in this process, on every core (the baseline);
- **ray, A actors x T threads**: ``subpixel.upscale_on_ray`` on a local cluster started
  once beforehand (its start is not counted; each run's actor start is).

Two rates per run: **images/s** over the whole call (planning, the driver's engine choice,
actor start, every file), and **steady** between the first and the last file written
(actors up). The engine choices are measured before the first run, so no run pays for a
calibration. Prints one table and the machine; ``--json PATH`` writes the numbers too.

Usage::

    python benchmarks/ray_scaling.py                     # about 2 min on 2 cores
    python benchmarks/ray_scaling.py --images 8 --model bicubic
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from speed import machine

from subpixel.cli import main as cli
from subpixel.paths import data_root
from subpixel.pipeline.cluster import FileResult, upscale_on_ray


def inputs(folder: Path, count: int) -> tuple[Path, str]:
    """``count`` images in ``folder``: BSD100's, else generated; and where they came from."""
    source = data_root() / "benchmark" / "BSD100" / "HR"
    names = sorted(source.glob("*.png"))[:count] if source.is_dir() else []
    for path in names:
        shutil.copy(path, folder / path.name)
    if len(names) == count:
        return folder, f"{source} (first {count})"
    rng = np.random.default_rng(0)
    for index in range(count):
        noise = rng.integers(0, 256, (321, 481, 3), dtype=np.uint8)
        Image.fromarray(noise).save(folder / f"noise{index:03d}.png")
    return folder, f"{count} generated 481x321 noise PNGs"


def one_process(folder: Path, out: Path, model: str) -> dict[str, Any]:
    start = time.perf_counter()
    code = cli(["upscale", str(folder), "-o", str(out), "--model", model])
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"subpixel upscale failed ({code})")
    count = len(list(out.iterdir()))
    return {"run": "one process", "images": count, "seconds": seconds, "steady": None}


def on_ray(folder: Path, out: Path, model: str, actors: int, threads: int) -> dict[str, Any]:
    stamps: list[float] = []

    def progress(result: FileResult) -> None:
        if result.status != "written":
            raise SystemExit(f"{result.job.source}: {result.status} {result.message}")
        stamps.append(time.perf_counter())

    start = time.perf_counter()
    upscale_on_ray([folder], out, model=model, actors=actors, threads=threads, progress=progress)
    seconds = time.perf_counter() - start
    steady = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else None
    run = f"ray, {actors} actor{'s' if actors > 1 else ''} x {threads} thread"
    return {"run": run + ("s" if threads > 1 else ""), "images": len(stamps), "seconds": seconds,
            "steady": steady}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40, help="how many (default: 40)")
    parser.add_argument("--model", default="espcn", help="bundled name (default: espcn, x3)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)

    import ray

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    with tempfile.TemporaryDirectory(prefix="ray-scaling-") as temporary:
        root = Path(temporary)
        (root / "in").mkdir()
        folder, origin = inputs(root / "in", args.images)
        ray.init(num_cpus=cores, include_dashboard=False, logging_level=logging.WARNING)
        try:
            # Warm-up: the engine choices measured and remembered, imports and exports made.
            warm = root / "warm"
            warm.mkdir()
            shutil.copy(next(folder.iterdir()), warm)
            upscale_on_ray([warm], root / "warm-out", model=args.model, progress=lambda r: None)
            runs = [one_process(folder, root / "cli", args.model)]
            plans = [(1, 1), (1, cores), (2, 1)] if cores >= 2 else [(1, 1)]
            if cores >= 4:
                plans.append((2, cores // 2))
            for index, (actors, threads) in enumerate(plans):
                out = root / f"ray{index}"
                runs.append(on_ray(folder, out, args.model, actors, threads))
        finally:
            ray.shutdown()

    info = machine()
    print(f"{args.model} x3 on {origin}; CPU: {info['cpu']}, {info['cores']} cores, "
          f"load {info['load_average']}")  # fmt: skip
    print("\n| run | images | seconds | images/s | steady images/s |\n|---|--:|--:|--:|--:|")
    for run in runs:
        steady = f"{run['steady']:.2f}" if run["steady"] else "-"
        rate = run["images"] / run["seconds"]
        print(f"| {run['run']} | {run['images']} | {run['seconds']:.1f} | {rate:.2f} | {steady} |")
    if args.json:
        args.json.write_text(
            json.dumps({"machine": info, "inputs": origin, "runs": runs}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
