"""Where the shared datasets live (``$SUBPIXEL_DATA``, else ``../shared/data``) and where
measurements are cached (``$XDG_CACHE_HOME/subpixel``)."""

from __future__ import annotations

import os
from pathlib import Path

BENCHMARK_SETS = ("Set5", "Set14", "BSD100")


def data_root() -> Path:
    """The data folder named by ``SUBPIXEL_DATA``, defaulting to ``../shared/data``."""
    return Path(os.environ.get("SUBPIXEL_DATA", "../shared/data")).expanduser()


def benchmark_hr_dir(name: str) -> Path:
    """The HR folder of a standard benchmark set (Set5, Set14, BSD100)."""
    return data_root() / "benchmark" / name / "HR"


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/subpixel``, by default ``~/.cache/subpixel``: the engine and
    training-precision choices."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "subpixel"
