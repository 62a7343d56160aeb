"""``--max-memory`` is a ceiling on the whole process: measured on real runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

# Runs the command given as arguments and prints its peak resident size in bytes: the
# wrapper's only child, so the figure is that command's alone.
_PEAK = (
    "import resource, subprocess, sys\n"
    "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "sys.stderr.write(done.stderr)\n"
    "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)\n"
)


def _upscale(*args: str) -> tuple[int, int, str]:
    """(exit status, peak resident bytes, stderr) of ``subpixel upscale ARGS``."""
    command = [sys.executable, "-c", _PEAK, sys.executable, "-m", "subpixel", "upscale", *args]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    status, peak = done.stdout.split()
    return int(status), int(peak), done.stderr


def test_the_process_stays_under_max_memory_with_the_same_pixels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    small = Image.fromarray(rng.integers(0, 256, (100, 150, 3), dtype=np.uint8))
    source = tmp_path / "photo.jpg"
    small.resize((1500, 1000), Image.Resampling.BICUBIC).save(source, quality=90)
    tiny = tmp_path / "tiny.png"
    small.crop((0, 0, 40, 30)).save(tiny)

    # The first run measures the engines for this machine (a cached choice); the second is
    # what any later run holds before its image's own work.
    for name in ("tiny_1.png", "tiny_2.png"):
        status, baseline, _ = _upscale(str(tiny), "-o", str(tmp_path / name))
        assert status == 0
    status, whole_peak, _ = _upscale(str(source), "-o", str(tmp_path / "whole.png"))
    assert status == 0
    # A ceiling well below what the whole image took, above what the process needs anyway.
    ceiling = baseline + (whole_peak - baseline) * 6 // 10
    print(f"baseline {baseline / 2**20:.0f} MiB, whole {whole_peak / 2**20:.0f} MiB")
    assert whole_peak - baseline > 200 * 2**20, "the whole image must need the ceiling to bite"
    status, peak, errors = _upscale(
        str(source), "-o", str(tmp_path / "tiled.png"), "--max-memory", str(ceiling)
    )
    assert status == 0, errors
    print(f"ceiling {ceiling / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB")
    assert peak <= ceiling, f"peak {peak / 2**20:.0f} MiB above {ceiling / 2**20:.0f} MiB"
    whole = np.asarray(Image.open(tmp_path / "whole.png"))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "tiled.png")), whole)


def test_a_ceiling_below_the_output_is_refused_up_front(tmp_path: Path) -> None:
    source = tmp_path / "wide.png"
    Image.new("RGB", (3000, 2000), (90, 120, 30)).save(source)
    target = tmp_path / "wide_x3.png"
    status, _, errors = _upscale(str(source), "-o", str(target), "--max-memory", "300M")
    assert status == 1 and not target.exists()
    (line,) = errors.strip().splitlines()
    assert line.startswith(f"subpixel: error: {source}: a 3000x2000 image upscaled to 9000x6000")
    assert "does not fit a memory ceiling of 300 MiB" in line
