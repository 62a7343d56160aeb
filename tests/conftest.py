from __future__ import annotations

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
