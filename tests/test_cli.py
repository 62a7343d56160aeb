from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from subpixel import models
from subpixel.cli import main
from subpixel.weights import describe, save_weights

Capsys = pytest.CaptureFixture[str]


@pytest.fixture
def image_file(tmp_path: Path) -> Path:
    path = tmp_path / "in.png"
    rgb = np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return path


def _error_line(capsys: Capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_upscale_writes_the_output(image_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    assert main(["upscale", str(image_file), "-o", str(out), "--scale", "2"]) == 0
    assert Image.open(out).size == (20, 24)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_upscale_with_a_weights_file(image_file: Path, tmp_path: Path) -> None:
    net = models.build("fsrcnn-s", scale=4)
    describe(net, "fsrcnn-s")
    weights = save_weights(net, tmp_path / "fsrcnn-s_x4.safetensors")
    out = tmp_path / "out.jpg"
    assert main(["upscale", str(image_file), "-o", str(out), "--model", str(weights)]) == 0
    assert Image.open(out).size == (40, 48)


def _broken_inputs(tmp_path: Path, image_file: Path) -> dict[str, Path]:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(image_file.read_bytes()[:120])
    return {
        "missing": tmp_path / "missing.png",
        "empty": empty,
        "not an image": text,
        "truncated": truncated,
        "folder": tmp_path,
    }


@pytest.mark.parametrize("kind", ["missing", "empty", "not an image", "truncated", "folder"])
def test_bad_input_gives_one_line_and_no_output(
    kind: str, image_file: Path, tmp_path: Path, capsys: Capsys
) -> None:
    source = _broken_inputs(tmp_path, image_file)[kind]
    out = tmp_path / "out.png"
    assert main(["upscale", str(source), "-o", str(out)]) == 1
    assert _error_line(capsys).startswith("subpixel: error: ")
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "no-such-model"], "unknown model"),
        (["--model", "espcn"], "no pretrained weights"),
        (["--scale", "1"], "scale"),
    ],
)
def test_bad_model_or_scale_gives_one_line_and_no_output(
    args: list[str],
    message: str,
    image_file: Path,
    tmp_path: Path,
    capsys: Capsys,
) -> None:
    out = tmp_path / "out.png"
    assert main(["upscale", str(image_file), "-o", str(out), *args]) == 1
    assert message in _error_line(capsys)
    assert not out.exists()


def test_wrong_scale_for_a_weights_file(image_file: Path, tmp_path: Path, capsys: Capsys) -> None:
    net = models.build("espcn", scale=2)
    describe(net, "espcn")
    weights = save_weights(net, tmp_path / "espcn_x2.safetensors")
    out = tmp_path / "out.png"
    assert (
        main(["upscale", str(image_file), "-o", str(out), "--model", str(weights), "--scale", "3"])
        == 1
    )
    assert "x2 model" in _error_line(capsys)
    assert not out.exists()


def test_corrupt_weights_file(image_file: Path, tmp_path: Path, capsys: Capsys) -> None:
    weights = tmp_path / "broken.safetensors"
    weights.write_bytes(b"\x00" * 64)
    out = tmp_path / "out.png"
    assert main(["upscale", str(image_file), "-o", str(out), "--model", str(weights)]) == 1
    assert "safetensors" in _error_line(capsys)
    assert not out.exists()


def test_the_input_is_never_overwritten(image_file: Path, capsys: Capsys) -> None:
    before = image_file.read_bytes()
    assert main(["upscale", str(image_file), "-o", str(image_file)]) == 1
    assert "overwrite the input" in _error_line(capsys)
    assert image_file.read_bytes() == before


def test_unknown_output_extension(image_file: Path, tmp_path: Path, capsys: Capsys) -> None:
    assert main(["upscale", str(image_file), "-o", str(tmp_path / "out.xyz")]) == 1
    assert "output format" in _error_line(capsys)


def test_models_lists_every_network(capsys: Capsys) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in models.BUILDERS:
        assert name in out
    assert "22,729" in out  # ESPCN x3 parameters


def test_evaluate_json_on_a_folder(tmp_path: Path, capsys: Capsys) -> None:
    rng = np.random.default_rng(1)
    for i in range(2):
        smooth = np.cumsum(rng.integers(0, 3, (40, 36, 3)), axis=1).clip(0, 255).astype(np.uint8)
        Image.fromarray(smooth).save(tmp_path / f"im{i}.png")
    assert main(["evaluate", "--dataset", str(tmp_path), "--scale", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) >= {"psnr", "ssim", "bicubic", "images"}
    assert len(report["images"]) == 2
    assert report["psnr"] == pytest.approx(np.mean([im["psnr"] for im in report["images"]]))


def test_evaluate_unknown_dataset(capsys: Capsys) -> None:
    assert main(["evaluate", "--dataset", "/no/such/folder"]) == 1
    assert "neither a folder" in _error_line(capsys)


def test_console_script_exit_code(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "subpixel.cli",
            "upscale",
            str(tmp_path / "nope.png"),
            "-o",
            str(tmp_path / "o.png"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == f"subpixel: error: input not found: {tmp_path / 'nope.png'}"
