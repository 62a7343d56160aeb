"""The README's Python examples run as written, from a copy of the repository's examples."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_the_readme_has_python_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_example_runs(index: int, tmp_path: Path) -> None:
    code = BLOCKS[index]
    needs = (("av", "video"), ("onnx", "onnx"), ("onnxscript", "onnx"), ("ray", "ray"))
    for module, extra in needs:
        if f"needs .[{extra}]" in code and importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (the {extra} extra)")
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    written = sorted(p.name for p in (tmp_path / "out").glob("*")) if "out/" in code else []
    for name in re.findall(r'"out/([^"]+)"', code):
        assert name in written
        assert (tmp_path / "out" / name).stat().st_size > 0
