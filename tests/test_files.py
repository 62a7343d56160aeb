from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from subpixel import models
from subpixel.files import (
    TEMPORARY_NAME,
    atomic_path,
    atomic_write,
    is_temporary,
    read_json_cache,
    write_cache,
)
from subpixel.weights import describe, save_weights

UMASK = 0o002  # not the usual 0o022, so neither 0o600 nor a fixed 0o644 can pass
EXPECTED = 0o666 & ~UMASK


@pytest.fixture
def umask() -> Iterator[int]:
    previous = os.umask(UMASK)
    try:
        yield UMASK
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_write_follows_the_umask_and_names_its_temporary(tmp_path: Path, umask: int) -> None:
    seen: list[Path] = []

    def write(temporary: Path) -> None:
        seen.append(temporary)
        assert temporary.parent == tmp_path and _mode(temporary) == EXPECTED
        temporary.write_text("new")

    target = tmp_path / "notes.txt"
    assert atomic_write(target, write) == target
    assert target.read_text() == "new" and _mode(target) == EXPECTED
    [temporary] = seen
    match = TEMPORARY_NAME.fullmatch(temporary.name)
    assert match is not None and match["target"] == "notes.txt"
    assert is_temporary(temporary) and not is_temporary(target)
    assert sorted(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("error", [ValueError("bad"), KeyboardInterrupt()])
def test_atomic_path_removes_its_temporary_on_any_exception(
    tmp_path: Path, error: BaseException
) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    with pytest.raises(type(error)), atomic_path(target, suffix=".part") as temporary:
        assert temporary.name.endswith(".tmp.part") and is_temporary(temporary)
        temporary.write_bytes(b"half")
        raise error
    assert target.read_bytes() == b"old"
    assert sorted(tmp_path.iterdir()) == [target]


def test_weights_and_checkpoints_follow_the_umask(tmp_path: Path, umask: int) -> None:
    from subpixel.training.checkpoint import TrainingState, save_checkpoint
    from subpixel.training.records import LogRow, write_log

    net = models.build("espcn", scale=2)
    describe(net, "espcn")
    weights = save_weights(net, tmp_path / "espcn.safetensors")
    checkpoint = tmp_path / "run" / "checkpoint.safetensors"
    optimizer = torch.optim.Adam(net.parameters())
    save_checkpoint(checkpoint, net, optimizer, TrainingState(1, {}, None, None, 0.1))
    log = tmp_path / "run" / "log.csv"
    write_log(log, [LogRow(1, 0.5, 1e-3, None, None, 0.1)])
    assert {p.name: _mode(p) for p in (weights, checkpoint, log)} == {
        "espcn.safetensors": EXPECTED,
        "checkpoint.safetensors": EXPECTED,
        "log.csv": EXPECTED,
    }
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [checkpoint.name, log.name]


def test_an_onnx_export_follows_the_umask(tmp_path: Path, umask: int) -> None:
    pytest.importorskip("onnxscript")
    from subpixel.export import export_onnx

    path = export_onnx(models.build("fsrcnn-s", scale=2), tmp_path / "fsrcnn-s.onnx")
    assert _mode(path) == EXPECTED
    assert sorted(tmp_path.iterdir()) == [path]


def test_a_patch_cache_folder_follows_the_umask(tmp_path: Path, umask: int) -> None:
    from subpixel.data import DataConfig, PatchCache

    hr = tmp_path / "hr"
    hr.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(hr / "a.png")
    config = DataConfig(scale=2, patch_size=4, patches_per_image=2)
    cache = PatchCache.build([hr], config, tmp_path / "cache")
    assert _mode(cache.path) == 0o777 & ~UMASK
    assert _mode(cache.path / "index.json") == EXPECTED


def test_a_cache_file_is_written_whole_and_read_back_or_empty(tmp_path: Path) -> None:
    path = tmp_path / "deeper" / "cache.json"
    assert read_json_cache(path) == {}  # missing
    write_cache(path, b'{"a": 1}')
    assert read_json_cache(path) == {"a": 1}
    assert [p.name for p in path.parent.iterdir()] == ["cache.json"]  # no temporary left
    for text in ("{corrupt", "[1, 2]"):
        path.write_text(text)
        assert read_json_cache(path) == {}
