"""Peak memory and time of tiled upscaling: a 4000x3000 RGB photo to x3 with ESPCN.

Each configuration runs in a fresh subprocess that reads its own peak resident set size
(``VmHWM`` in ``/proc/self/status``; Linux only) -- tracemalloc does not see torch's
allocations. The tile for a memory budget comes from ``subpixel.pipeline.tiling.tile_for_memory``.
The network has random weights: memory and time do not depend on them.

Usage::

    python benchmarks/tiling_memory.py                 # the table (about a minute on 2 cores)
    python benchmarks/tiling_memory.py --untiled       # add the untiled run (about 10 GB)
    python benchmarks/tiling_memory.py --fixed-mmap-threshold   # glibc: MALLOC_MMAP_THRESHOLD_
    python benchmarks/tiling_memory.py --threads 1     # OMP_NUM_THREADS for the runs
    python benchmarks/tiling_memory.py --calibrate     # estimate vs measurement, per network
    python benchmarks/tiling_memory.py --cli-default   # subpixel upscale, defaults, 6000x4000 x3

``--calibrate`` runs one tile of each network on its own and compares the measured working
memory (peak minus the resident size before the call minus the output array) with
``estimate_tile_memory``; ``PIPELINE_BYTES_PER_*`` in ``subpixel/pipeline/tiling.py`` come from it.

``--cli-default`` runs ``subpixel upscale photo.jpg -o out.png`` with every default (the
bundled default model, automatic engine and precision, default memory ceiling) on a
generated 6000x4000 JPEG to x3, and prints its peak resident size and wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BUDGET = 2 * 2**30
SIZE = (3000, 4000)  # (height, width) of the LR input
SCALE = 3


def _status(field: str) -> int:
    """A ``/proc/self/status`` field in bytes."""
    with open("/proc/self/status") as handle:
        match = re.search(rf"^{field}:\s+(\d+) kB", handle.read(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")
    return int(match.group(1)) * 1024


def _reset_peak() -> bool:
    # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0).
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def _child(config: dict[str, Any]) -> dict[str, Any]:
    """Run one configuration in this (fresh) process and measure it."""
    import numpy as np
    import torch

    import subpixel
    from subpixel import models
    from subpixel.pipeline.tiling import estimate_tile_memory, receptive_radius

    torch.manual_seed(0)
    name, scale = str(config["model"]), int(config["scale"])
    net = models.build(name, scale=scale, channels=1).eval()
    height, width = config["size"]
    channels = int(config["channels"])
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    subpixel.upscale_image(image[:32, :32], net)  # warm up torch and oneDNN
    tile = config["tile"]
    tiles: list[int] = []
    before = _status("VmRSS")
    reset = _reset_peak()
    start = time.perf_counter()
    out = subpixel.upscale_image(
        image, net, tile=tile, progress=lambda done, total: tiles.append(total)
    )
    seconds = time.perf_counter() - start
    peak = _status("VmHWM")
    # Untiled, the one tile is the whole image with no margin.
    side = tile if isinstance(tile, int) else max(height, width) - 2 * max(receptive_radius(net), 2)
    return {
        "tile": tile,
        "tiles": tiles[-1] if tiles else 0,
        "radius": receptive_radius(net),
        "seconds": seconds,
        "peak": peak,
        "before": before,
        "output": out.nbytes,
        "estimate": estimate_tile_memory(net, channels, side),
        "peak_was_reset": reset,
    }


def _run(config: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(config)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def _machine() -> str:
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as handle:
            found = re.search(r"^model name\s*:\s*(.+)$", handle.read(), re.MULTILINE)
        cpu = found.group(1).strip() if found else cpu
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{cpu}, {cores} cores usable, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}"
    )


def _mb(value: int) -> str:
    return f"{value / 2**20:,.0f}"


def _table(untiled: bool, fixed_threshold: bool, threads: int | None) -> None:
    from subpixel import models
    from subpixel.pipeline.tiling import tile_for_memory

    net = models.build("espcn", scale=SCALE, channels=1)
    budget_tile = tile_for_memory(net, 3, BUDGET)
    tiles: list[int | None] = [budget_tile, 512, 256]
    if untiled:
        tiles.append(None)
    height, width = SIZE
    env = dict(os.environ)
    if fixed_threshold:
        # A fixed threshold stops glibc from serving ever larger arrays from its heap, where
        # freed memory fragments and is not given back.
        env["MALLOC_MMAP_THRESHOLD_"] = str(2**20)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    rows = [
        (
            tile,
            _run(
                {"model": "espcn", "scale": SCALE, "size": SIZE, "channels": 3, "tile": tile}, env
            ),
        )
        for tile in tiles
    ]
    first = rows[0][1]
    print(
        f"ESPCN x{SCALE} (random weights), {width}x{height} RGB uint8 -> "
        f"{SCALE * width}x{SCALE * height}; tile for a {_mb(BUDGET)} MB budget: {budget_tile}"
    )
    print(f"machine: {_machine()}; load average before: {os.getloadavg()[0]:.1f}")
    print(f"threads: {threads or 'torch default'}")
    print(f"malloc: {'MALLOC_MMAP_THRESHOLD_=1048576' if fixed_threshold else 'glibc defaults'}")
    print(
        f"resident before the call (torch, model, input): {_mb(first['before'])} MB; "
        f"output array: {_mb(first['output'])} MB"
    )
    print()
    print("| tile | tiles | estimate MB | working MB | peak RSS MB | seconds |")
    print("|---|---|---|---|---|---|")
    for tile, r in rows:
        working = int(r["peak"]) - int(r["before"]) - int(r["output"])
        label = "whole image" if tile is None else str(tile)
        if tile == budget_tile:
            label += " (2 GB budget)"
        print(
            f"| {label} | {r['tiles']} | {_mb(r['estimate'])} | {_mb(working)} | "
            f"{_mb(r['peak'])} | {float(r['seconds']):.1f} |"
        )
    print()
    print("working = peak RSS - resident before - output array: what the tiles themselves cost.")


NAMES = ("bicubic", "espcn", "espcn-7", "fsrcnn", "fsrcnn-s", "srcnn")


def _calibrate() -> None:
    # One tile on its own (no fragmentation from earlier tiles), so this measures what the
    # estimate models: the arrays alive at the peak.
    print(f"machine: {_machine()}")
    print("| model | x | C | measured working MB | estimate MB | estimate / measured |")
    print("|---|---|---|---|---|---|")
    for name in NAMES:
        for scale, channels in ((2, 3), (3, 3), (4, 3), (3, 1), (3, 4)):
            size = (1024, 1024) if name != "srcnn" else (512, 512)
            config = {
                "model": name,
                "scale": scale,
                "size": size,
                "channels": channels,
                "tile": None,
            }
            r = _run(config)
            working = int(r["peak"]) - int(r["before"]) - int(r["output"])
            estimate = int(r["estimate"])
            print(
                f"| {name} | {scale} | {channels} | {_mb(working)} | {_mb(estimate)} | "
                f"{estimate / max(working, 1):.2f} |"
            )


# Runs the command given as arguments and prints its peak resident bytes and wall seconds:
# the wrapper's only child, so the figure is that command's alone.
_PEAK = (
    "import resource, subprocess, sys, time\n"
    "start = time.perf_counter()\n"
    "subprocess.run(sys.argv[1:], check=True)\n"
    "seconds = time.perf_counter() - start\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, seconds)\n"
)


def _cli_default() -> None:
    import numpy as np
    from PIL import Image

    height, width = 4000, 6000
    with tempfile.TemporaryDirectory() as folder:
        photo, out = Path(folder) / "photo.jpg", Path(folder) / "out.png"
        small, small_out = Path(folder) / "small.jpg", Path(folder) / "small_out.png"
        rows, columns = np.mgrid[0:height, 0:width]
        noise = np.random.default_rng(0).integers(-20, 20, (height, width, 3))
        ramps = np.stack([columns * 255 // width, rows * 255 // height, (rows + columns) % 256], -1)
        pixels = np.clip(ramps + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(photo, quality=90)
        Image.fromarray(pixels[:360, :640]).save(small, quality=90)
        del rows, columns, noise, ramps, pixels
        upscale = [sys.executable, "-m", "subpixel", "upscale"]
        # A small image first measures the engines for this machine (a cached choice), so the
        # measured run is what any later run does.
        warm_up = [*upscale, str(small), "-o", str(small_out)]
        subprocess.run(warm_up, check=True, capture_output=True)
        done = subprocess.run(
            [sys.executable, "-c", _PEAK, *upscale, str(photo), "-o", str(out)],
            check=True,
            capture_output=True,
            text=True,
        )
        peak, seconds = done.stdout.splitlines()[-1].split()
    print(f"machine: {_machine()}; load average before: {os.getloadavg()[0]:.1f}")
    print(
        f"subpixel upscale photo.jpg -o out.png (defaults), {width}x{height} JPEG -> x3: "
        f"peak RSS {_mb(int(peak))} MB, {float(seconds):.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--untiled", action="store_true", help="also run without tiles")
    parser.add_argument("--calibrate", action="store_true", help="estimate vs measurement")
    parser.add_argument(
        "--fixed-mmap-threshold",
        action="store_true",
        help="run with MALLOC_MMAP_THRESHOLD_=1048576 (glibc): less heap fragmentation",
    )
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the runs")
    parser.add_argument(
        "--cli-default", action="store_true", help="subpixel upscale, defaults, 6000x4000 x3"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
    elif args.calibrate:
        _calibrate()
    elif args.cli_default:
        _cli_default()
    else:
        _table(args.untiled, args.fixed_mmap_threshold, args.threads)


if __name__ == "__main__":
    main()
