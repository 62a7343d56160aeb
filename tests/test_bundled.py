"""The pretrained weights shipped in the package: small, documented, and as good as they say."""

from __future__ import annotations

from pathlib import Path

import pytest

import subpixel
from subpixel.evaluation import evaluate, evaluate_upscaler
from subpixel.weights import DEFAULT_MODEL, bundled_weights

BUNDLED = sorted(bundled_weights())
BENCHMARKS = ("Set5", "Set14", "BSD100")
MAX_BYTES = 200_000


def test_the_default_model_is_bundled() -> None:
    assert any(architecture == DEFAULT_MODEL for architecture, _ in BUNDLED)


@pytest.mark.parametrize(("architecture", "scale"), BUNDLED)
def test_bundled_file_is_small_and_carries_its_record(architecture: str, scale: int) -> None:
    path = bundled_weights()[architecture, scale]
    assert path.name == f"{architecture}_x{scale}.safetensors"
    assert path.stat().st_size < MAX_BYTES
    card = subpixel.load_model(architecture, scale=scale).card
    assert (card.architecture, card.scale, card.channels) == (architecture, scale, 1)
    assert card.degradation == "matlab-bicubic"
    assert card.training["iterations_run"] >= 1 and card.training["wall_seconds"] > 0
    for dataset in BENCHMARKS:
        scores = card.metrics[dataset]
        assert scores["psnr"] > scores["bicubic_psnr"], dataset


@pytest.mark.parametrize(("architecture", "scale"), BUNDLED)
def test_bundled_model_reproduces_its_card_and_beats_opencv_on_set5(
    architecture: str, scale: int, data_dir: Path
) -> None:
    model = subpixel.load_model(architecture, scale=scale)
    report = evaluate(model, "Set5")
    assert report.mean("psnr") == pytest.approx(model.card.metrics["Set5"]["psnr"], abs=0.005)
    assert report.mean("psnr") > report.mean("bicubic_psnr")
    pytest.importorskip("cv2", reason="OpenCV peers need the peers extra")
    from subpixel.peers import opencv_upscaler

    peer = evaluate_upscaler(opencv_upscaler(architecture, scale), scale, "Set5")
    assert report.mean("psnr") > peer.mean("psnr")
