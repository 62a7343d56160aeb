from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from subpixel.paths import data_root


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared data folder; tests that need it skip when it is absent."""
    root = data_root()
    if not (root / "benchmark").is_dir():
        pytest.skip(f"shared data not found at {root} (set SUBPIXEL_DATA)")
    return root


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
