from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from subpixel.paths import data_root


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared data folder; tests that need it skip when it is absent."""
    root = data_root()
    if not (root / "benchmark").is_dir():
        pytest.skip(f"shared data not found at {root} (set SUBPIXEL_DATA)")
    return root


@pytest.fixture
def random_images() -> Callable[..., Path]:
    """``random_images(folder, count, (height, width), seed=0)``: a new ``folder`` holding
    ``count`` PNGs of uniform random RGB noise (training data of no content)."""

    def make(folder: Path, count: int, size: tuple[int, int], seed: int = 0) -> Path:
        folder.mkdir(parents=True)
        rng = np.random.default_rng(seed)
        for index in range(count):
            pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{index}.png")
        return folder

    return make


@pytest.fixture(autouse=True, scope="session")
def private_cache_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Engine choices and patch caches go to a temporary folder, not the user's ~/.cache."""
    root = tmp_path_factory.mktemp("cache-home")
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(root)
    yield root
    if previous is None:
        del os.environ["XDG_CACHE_HOME"]
    else:
        os.environ["XDG_CACHE_HOME"] = previous
