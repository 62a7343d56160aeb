"""benchmarks/train_speed_history.py: the same timed training run in several source trees."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_each_tree_is_timed_against_the_first(
    tmp_path: Path, random_images: Callable[..., Path]
) -> None:
    images = random_images(tmp_path / "hr", 3, (60, 72))
    command = [sys.executable, str(ROOT / "benchmarks" / "train_speed_history.py"), "."]
    command += [str(ROOT), "--seconds", "0.3", "--warmup", "2", "--repeats", "1"]
    command += ["--batch-size", "4", "--patch-size", "8", "--data", str(images)]
    command += ["--cache-dir", str(tmp_path / "cache")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    rows = done.stdout.strip().splitlines()[-2:]
    assert [row.split()[0] for row in rows] == [".", str(ROOT)]
    assert rows[0].split()[3] == "1.00"  # the base against itself
    assert all(float(row.split()[1]) > 0 for row in rows)


def test_a_tree_without_subpixel_is_named_in_the_error(tmp_path: Path) -> None:
    command = [sys.executable, str(ROOT / "benchmarks" / "train_speed_history.py")]
    command += [str(tmp_path), "--seconds", "0.1", "--repeats", "1", "--data", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode != 0
    assert done.stderr.strip() == f"{tmp_path}: no subpixel package in {tmp_path / 'src'}"
