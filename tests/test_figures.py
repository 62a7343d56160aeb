from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import subpixel.weights
from subpixel import layers, models
from subpixel.errors import ModelError
from subpixel.weights import bundled_weights, describe, save_weights

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("matplotlib")


def _generator() -> ModuleType:
    """docs/guide/figures.py, which lives beside the docs rather than in the package."""
    name = "subpixel_docs_figures"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / "guide" / "figures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


figures = _generator()


def _network(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = models.build(name, scale=3, channels=1)
    if isinstance(net, models.ESPCN):  # a trained layer has nonzero, phase-dependent biases
        nn.init.uniform_(net.subpixel.bias, -0.1, 0.1)
    if isinstance(net, models.FSRCNN):  # N(0, 0.001) is too small to see any error in
        nn.init.normal_(net.deconv.weight, std=0.05)
    return net.eval()


def _lr(size: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- #
# The illustrations pin what the text says
# --------------------------------------------------------------------------- #


def test_1d_matrices_pin_the_papers_example() -> None:
    result = figures.conv_matrices_1d()
    assert tuple(result.conv.shape) == (5, 8)
    assert result.conv[1].tolist() == [1, 2, 3, 4, 0, 0, 0, 0]
    assert result.conv[0].tolist() == [3, 4, 0, 0, 0, 0, 0, 0]  # taps 1, 2 meet the padding
    assert torch.equal(result.transposed, result.conv.T)
    assert tuple(result.transposed_full.shape) == (12, 5)
    assert tuple(result.subpixel.shape) == (8, 9)
    # A full row of the fractional-stride matrix reads the filter reversed.
    assert result.subpixel[3, 2:6].tolist() == [4, 3, 2, 1]
    assert result.phase_taps == ((3.0, 1.0), (4.0, 2.0))
    assert all(c.error == 0 for c in result.checks)


@pytest.mark.parametrize(
    ("size", "scale", "padding"), [(4, 2, 1), (6, 3, None), (9, 3, 4), (5, 2, 0), (8, 4, 2)]
)
def test_two_routes_agree_for_random_kernels(size: int, scale: int, padding: int | None) -> None:
    kernel = torch.randn(1, 1, size, size, generator=torch.Generator().manual_seed(size))
    result = figures.two_routes_2d(_lr(7).double(), kernel.double(), scale, padding)
    assert float(result.difference.abs().max()) < 1e-12
    assert result.phase_kernels.shape[0] == scale * scale


def test_bilinear_kernel_interpolates() -> None:
    # HR pixel x sits at LR coordinate (x - 1/2) / 2: a ramp 0, 1, 2, 3 is sampled there.
    ramp = torch.arange(4.0).repeat(4, 1).view(1, 1, 4, 4)
    result = figures.two_routes_2d(ramp)
    row = result.lr_space[0, 0, 3].tolist()
    assert row[1:7] == pytest.approx([0.25, 0.75, 1.25, 1.75, 2.25, 2.75])


def test_shuffle_layout_follows_the_paper() -> None:
    result = figures.shuffle_layout(scale=3)
    assert result.hr[0, 0, 0, :6].tolist() == [0, 4, 8, 1, 5, 9]
    assert result.source_channel[0, :3, :3].flatten().tolist() == list(range(9))
    colour = figures.shuffle_layout(scale=2, channels=2, height=1, width=1)
    # Paper order: phase slowest, colour fastest.
    assert colour.hr[0, 1].flatten().tolist() == [1, 3, 5, 7]


def test_espcn_last_layer_is_one_deconvolution() -> None:
    net = _network("espcn")
    result = figures.espcn_last_layer(net, _lr())
    assert tuple(result.phase_kernels.shape) == (9, 32, 3, 3)
    assert tuple(result.deconv_kernels.shape) == (32, 1, 9, 9)
    # Tap (1 + 3a, 2 + 3b) of input channel 5 is phase (1, 2)'s tap (2 - a, 2 - b).
    weight = net.subpixel.weight.detach()
    for a in range(3):
        for b in range(3):
            assert result.deconv_kernels[5, 0, 1 + 3 * a, 2 + 3 * b] == weight[5, 5, 2 - a, 2 - b]
    assert result.bias_spread > 0


def test_fsrcnn_last_layer_splits_into_phases() -> None:
    net = _network("fsrcnn")
    result = figures.fsrcnn_last_layer(net, _lr())
    assert tuple(result.deconv_kernels.shape) == (56, 1, 9, 9)
    assert tuple(result.phase_kernels.shape) == (9, 56, 3, 3)
    assert torch.equal(result.sublattices[7, 0, 2, 1], result.deconv_kernels[7, 0, 2::3, 1::3])
    assert max(c.error for c in result.checks) < 1e-5


def test_fsrcnn_mapping_cost_matches_the_paper() -> None:
    cost = figures.fsrcnn_mapping_cost(models.build("fsrcnn", scale=3))
    assert cost.wide_macs == 56 * 56 * 25 == 78_400
    assert (cost.shrink_macs, cost.mapping_macs, cost.expand_macs) == (672, 4 * 1296, 672)
    assert cost.narrow_macs == 6528
    assert cost.ratio == pytest.approx(12.01, abs=0.01)
    assert (cost.wide_receptive_field, cost.narrow_receptive_field) == (5, 9)


def test_measure_costs_counts_like_the_models_command() -> None:
    rows = figures.measure_costs(input_size=(8, 8), repeats=1)
    assert len(rows) == 9
    by = {(r.model, r.scale): r for r in rows}
    assert round(by["espcn", 3].macs_per_pixel) == 2514
    assert round(by["fsrcnn", 3].macs_per_pixel) == 1385
    assert by["srcnn", 2].macs_per_pixel > 50_000
    assert all(r.milliseconds > 0 for r in rows)


def test_first_layer_filters() -> None:
    assert tuple(figures.first_layer_filters(_network("espcn")).shape) == (64, 1, 5, 5)
    assert tuple(figures.first_layer_filters(_network("fsrcnn")).shape) == (56, 1, 5, 5)


def _training_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "hr"
    folder.mkdir()
    for index in range(2):
        Image.fromarray(figures.synthetic_image(48, 48, seed=index)).save(folder / f"{index}.png")
    return folder


def test_icnr_comparison_same_start_and_no_checkerboard(tmp_path: Path) -> None:
    folder = _training_folder(tmp_path)
    lr, hr = torch.rand(1, 1, 6, 6), torch.rand(1, 1, 18, 18)
    result = figures.icnr_comparison(
        [folder], lr, hr, iterations=3, batch_size=2, patch_size=6, cache_dir=tmp_path / "c"
    )
    assert len(result.losses["default"]) == len(result.losses["icnr"]) == 3
    assert result.pattern["icnr/init"] < 1e-6 < result.pattern["default/init"]
    init = result.outputs["icnr/init"]
    assert torch.allclose(init, F.interpolate(init[..., ::3, ::3], scale_factor=3), atol=1e-6)


# --------------------------------------------------------------------------- #
# A broken equivalence stops the build
# --------------------------------------------------------------------------- #


def _perturbed(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A conversion whose result is off by 1e-3 in one tap."""

    def broken(module: Any) -> Any:
        out = convert(module)
        with torch.no_grad():
            target = out.conv.weight if hasattr(out, "conv") else out.weight
            target[..., 0, 0] += 1e-3
        return out

    return broken


def test_broken_deconv_to_subpixel_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layers, "deconv_to_subpixel", _perturbed(layers.deconv_to_subpixel))
    with pytest.raises(figures.EquivalenceError, match="2D"):
        figures.two_routes_2d(_lr(6))
    with pytest.raises(figures.EquivalenceError, match="FSRCNN"):
        figures.fsrcnn_last_layer(_network("fsrcnn"), _lr())


def test_broken_subpixel_to_deconv_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layers, "subpixel_to_deconv", _perturbed(layers.subpixel_to_deconv))
    with pytest.raises(figures.EquivalenceError, match="ESPCN"):
        figures.espcn_last_layer(_network("espcn"), _lr())


def test_broken_shuffle_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    original = layers.periodic_shuffle
    monkeypatch.setattr(layers, "periodic_shuffle", lambda x, r: original(x.flip(-3), r))
    with pytest.raises(figures.EquivalenceError, match="shuffle"):
        figures.shuffle_layout()
    with pytest.raises(figures.EquivalenceError, match="periodic_shuffle"):
        figures.two_routes_2d(_lr(6))


def test_broken_icnr_raises(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(layers, "icnr_init", lambda *args, **kwargs: None)
    with pytest.raises(figures.EquivalenceError, match="ICNR"):
        figures.icnr_comparison(
            [_training_folder(tmp_path)],
            torch.rand(1, 1, 6, 6),
            torch.rand(1, 1, 18, 18),
            iterations=1,
            batch_size=2,
            patch_size=6,
        )


def test_reparam_branches_sum_to_the_collapsed_kernel() -> None:
    result = figures.reparam_collapse(_lr(8), scale=2)
    names = list(result.branches)
    assert names[0] == "3x3" and names[-1] == "identity" and len(names) == 6
    assert result.branches["identity"][0][1, 1] == 1.0
    summed = sum(kernel for kernel, _ in result.branches.values())
    torch.testing.assert_close(summed, result.merged[0], rtol=0, atol=1e-12)
    assert abs(sum(b for _, b in result.branches.values()) - result.merged[1]) < 1e-12
    assert result.collapsed_output.shape == (1, 1, 8, 8)
    assert len(result.checks) == 5 and result.network == "ECBSR-M4C16 x2"


def test_broken_collapse_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    from subpixel.reparam import EdgeOrientedBlock

    monkeypatch.setattr(EdgeOrientedBlock, "collapse", _perturbed(EdgeOrientedBlock.collapse))
    with pytest.raises(figures.EquivalenceError, match="ECB 1 -> 1"):
        figures.reparam_collapse(_lr(8))


def test_check_close_rejects_shapes_and_nan() -> None:
    with pytest.raises(figures.EquivalenceError, match="shapes"):
        figures.check_close("x", torch.zeros(2), torch.zeros(3), 1.0)
    with pytest.raises(figures.EquivalenceError):
        figures.check_close("x", torch.tensor([float("nan")]), torch.zeros(1), 1.0)


# --------------------------------------------------------------------------- #
# The script, end to end in small mode
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("weights")
    paths = []
    for name in ("espcn", "fsrcnn"):
        net = _network(name, seed=1)
        describe(net, name, training={"note": "test weights", "iterations": 0})
        paths.append(save_weights(net, folder / f"{name}_x3.safetensors"))
    return paths[0], paths[1]


def test_script_small_builds_the_guide(tmp_path: Path, weights: tuple[Path, Path]) -> None:
    out = tmp_path / "guide"
    espcn, fsrcnn = weights
    code = figures.main(["--small", "-o", str(out), "--espcn", str(espcn), "--fsrcnn", str(fsrcnn)])
    assert code == 0
    text = (out / "theory.md").read_text()
    assert "$" not in text.replace("\\$", "")  # every placeholder was filled
    linked = re.findall(r"\]\((figures/[^)]+\.png)\)", text)
    assert len(linked) == 9
    total = 0
    for name in linked:
        path = out / name
        with Image.open(path) as image:
            assert image.format == "PNG"
        size = path.stat().st_size
        assert size < 100_000, name
        total += size
    assert total < 1_000_000
    assert str(espcn) in text and "test weights" in text
    assert "78,400" in text and "6,528" in text  # numbers come from the computation
    rows = [line for line in text.splitlines() if line.startswith("| ") and "| 0 (exact) |" in line]
    assert len(rows) >= 15
    # Every check of the build is listed, and there are as many as the guide claims.
    count = re.search(r"the\s+(\d+) checks it ran", text)
    assert count is not None and int(count.group(1)) == 28


def test_script_fails_on_a_broken_equivalence(
    tmp_path: Path,
    weights: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(layers, "deconv_to_subpixel", _perturbed(layers.deconv_to_subpixel))
    espcn, fsrcnn = weights
    out = tmp_path / "guide"
    code = figures.main(["--small", "-o", str(out), "--espcn", str(espcn), "--fsrcnn", str(fsrcnn)])
    assert code == 1
    assert "max |difference|" in capsys.readouterr().err
    assert list(out.iterdir()) == []  # nothing half-built is left behind


def test_load_figure_model_order(
    tmp_path: Path, weights: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    espcn, _ = weights
    model, source = figures.load_figure_model("espcn", 3, espcn)
    assert source == str(espcn) and isinstance(model, models.ESPCN)
    if ("espcn", 3) in bundled_weights():
        _, source = figures.load_figure_model("espcn", 3)
        assert source == "bundled espcn_x3.safetensors"
    # Without bundled weights: the fallbacks in order, then an untrained network if allowed.
    monkeypatch.setattr(subpixel.weights, "bundled_weights", dict)
    missing = tmp_path / "missing.safetensors"
    _, source = figures.load_figure_model("fsrcnn", 3, fallbacks=[missing], untrained=True)
    assert source.startswith("untrained")
    with pytest.raises(ModelError, match="no fsrcnn x3 weights"):
        figures.load_figure_model("fsrcnn", 3, fallbacks=[missing])


def test_synthetic_image_is_deterministic() -> None:
    first = figures.synthetic_image(30, 40, seed=3)
    assert first.shape == (30, 40, 3) and first.dtype == np.uint8
    assert np.array_equal(first, figures.synthetic_image(30, 40, seed=3))
