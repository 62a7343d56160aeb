"""The pretrained weights shipped in the package: small, documented, and as good as they say."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import subpixel
from subpixel.evaluation import evaluate
from subpixel.peers import OPENCV_MODELS, opencv_peer_problem
from subpixel.precision import recorded_bfloat16_loss
from subpixel.weights import DEFAULT_MODEL, bundled_weights, load_network

BUNDLED = sorted(bundled_weights())
# The bundled models OpenCV's dnn_superres has a model of the same name and scale for.
WITH_OPENCV_TWIN = [(a, s) for a, s in BUNDLED if a in OPENCV_MODELS]
BENCHMARKS = ("Set5", "Set14", "BSD100")
MAX_BYTES = 200_000


def test_the_default_model_is_bundled() -> None:
    assert any(architecture == DEFAULT_MODEL for architecture, _ in BUNDLED)


@pytest.mark.parametrize(("architecture", "scale"), BUNDLED)
def test_bundled_file_is_small_and_carries_its_record(architecture: str, scale: int) -> None:
    path = bundled_weights()[architecture, scale]
    assert path.name == f"{architecture}_x{scale}.safetensors"
    assert path.stat().st_size < MAX_BYTES
    card = load_network(architecture, scale=scale).card
    # A re-parameterised network ships collapsed: its card names the plain network it is.
    assert (card.name, card.scale, card.channels) == (architecture, scale, 1)
    assert architecture in subpixel.models.BUILDERS
    assert card.degradation == "matlab-bicubic"
    assert card.training["iterations_run"] >= 1 and card.training["wall_seconds"] > 0
    for dataset in BENCHMARKS:
        scores = card.metrics[dataset]
        assert scores["psnr"] > scores["bicubic_psnr"], dataset
    # What "auto" precision decides by: the measured bfloat16 loss on Set5 and Set14.
    losses = recorded_bfloat16_loss(load_network(architecture, scale=scale))
    assert losses is not None and all(-0.05 < loss < 0.5 for loss in losses.values())


# OpenCV's peers run in a child process: after dnn_superres has run, cv2.dnn nets read
# from ONNX later in the same process (tests/test_export.py) gave wrong outputs.
_PEER_SCORES = """
import json, sys
from subpixel.evaluation import evaluate_upscaler
from subpixel.peers import opencv_upscaler
pairs = json.loads(sys.argv[1])
print(json.dumps([
    evaluate_upscaler(opencv_upscaler(a, s), s, "Set5").mean("psnr") for a, s in pairs
]))
"""


@pytest.fixture(scope="module")
def opencv_set5(data_dir: Path) -> dict[tuple[str, int], float]:
    """Set5 PSNR of OpenCV's dnn_superres model of each bundled name and scale (skips where
    OpenCV's peers cannot run: no contrib build, or an OpenCV that cannot read them)."""
    problem = opencv_peer_problem()
    if problem is not None:
        pytest.skip(problem)
    done = subprocess.run(
        [sys.executable, "-c", _PEER_SCORES, json.dumps(WITH_OPENCV_TWIN)],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(zip(WITH_OPENCV_TWIN, json.loads(done.stdout), strict=True))


@pytest.mark.parametrize(("architecture", "scale"), BUNDLED)
def test_bundled_model_reproduces_its_card_on_set5(
    architecture: str, scale: int, data_dir: Path
) -> None:
    model = load_network(architecture, scale=scale)
    report = evaluate(model, "Set5")
    assert report.mean("psnr") == pytest.approx(model.card.metrics["Set5"]["psnr"], abs=0.005)
    assert report.mean("psnr") > report.mean("bicubic_psnr")


@pytest.mark.parametrize(("architecture", "scale"), WITH_OPENCV_TWIN)
def test_bundled_model_beats_opencv_on_set5(
    architecture: str, scale: int, opencv_set5: dict[tuple[str, int], float]
) -> None:
    recorded = load_network(architecture, scale=scale).card.metrics["Set5"]["psnr"]
    assert recorded > opencv_set5[architecture, scale]
