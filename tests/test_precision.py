"""The automatic precision (subpixel.precision): bfloat16 only where the recorded loss on
Set5 and Set14 allows it and the hardware has it, and the measurement that records it."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from subpixel import models, precision, precision_loss
from subpixel.engines import clear_engine_cache, make_engine
from subpixel.models import ESPCN, ESPCNConfig
from subpixel.precision import (
    BFLOAT16_LOSS_LIMIT_DB,
    LOSS_KEY,
    MIXED_LOSS_KEY,
    recorded_bfloat16_loss,
    resolve_precision,
)
from subpixel.precision_loss import measure_bfloat16_loss, record_bfloat16_loss
from subpixel.weights import card_of, describe, load_network, save_weights


def _network(
    losses: dict[str, float] | None = None, mixed: dict[str, float] | None = None
) -> nn.Module:
    torch.manual_seed(0)
    network = models.build("espcn", scale=2).eval()
    card = describe(network, "espcn")
    metrics: dict[str, dict[str, float]] = {}
    for key, recorded in ((LOSS_KEY, losses), (MIXED_LOSS_KEY, mixed)):
        for name, loss in (recorded or {}).items():
            metrics.setdefault(name, {"psnr": 30.0})[key] = loss
    if metrics:
        network.card = dataclasses.replace(card, metrics=metrics)  # type: ignore[assignment]
    return network


@pytest.fixture
def native(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "native_bfloat16", lambda device="cpu": True)


def test_auto_is_bfloat16_only_below_the_limit_on_every_set(native: None) -> None:
    below = BFLOAT16_LOSS_LIMIT_DB - 0.001
    assert resolve_precision(_network({"Set5": below, "Set14": 0.01}), "auto") == "bfloat16"
    assert resolve_precision(_network({"Set5": 0.01, "Set14": 0.05}), "auto") == "float32"
    assert resolve_precision(_network({"Set5": 0.01}), "auto") == "float32"  # Set14 missing
    assert resolve_precision(_network(), "auto") == "float32"  # nothing recorded
    assert resolve_precision(models.build("espcn", scale=2), "auto") == "float32"  # no card
    for explicit in ("float32", "bfloat16"):
        assert resolve_precision(_network({"Set5": 9.0, "Set14": 9.0}), explicit) == explicit


def test_auto_falls_back_to_mixed_then_to_float32(native: None) -> None:
    low, high = {"Set5": 0.01, "Set14": 0.01}, {"Set5": 0.09, "Set14": 0.04}
    assert resolve_precision(_network(high, mixed=low), "auto") == "mixed"
    assert resolve_precision(_network(low, mixed=low), "auto") == "bfloat16"  # the faster
    assert resolve_precision(_network(high, mixed=high), "auto") == "float32"
    assert resolve_precision(_network(high), "auto") == "float32"  # mixed not recorded
    assert resolve_precision(_network(mixed=low), "auto") == "mixed"


def test_auto_is_float32_without_native_bfloat16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "native_bfloat16", lambda device="cpu": False)
    assert resolve_precision(_network({"Set5": 0.0, "Set14": 0.0}), "auto") == "float32"
    assert resolve_precision(_network(mixed={"Set5": 0.0, "Set14": 0.0}), "auto") == "float32"


def test_native_bfloat16_reads_the_cpu_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "_cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    assert precision.native_bfloat16("cpu")
    monkeypatch.setattr(precision, "_cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    assert not precision.native_bfloat16("cpu")
    assert not precision.native_bfloat16("meta")


def test_make_engine_follows_the_automatic_precision(native: None) -> None:
    clear_engine_cache()
    engine = make_engine(_network({"Set5": 0.01, "Set14": 0.01}), "torch", precision="auto")
    assert engine.precision == "bfloat16"  # type: ignore[attr-defined]
    engine = make_engine(_network({"Set5": 0.2, "Set14": 0.01}), "torch")  # "auto" by default
    assert engine.precision == "float32"  # type: ignore[attr-defined]


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "Tiny"
    folder.mkdir()
    rng = np.random.default_rng(7)
    for index in range(2):
        image = rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)
        Image.fromarray(image).resize((60, 48)).save(folder / f"{index}.png")
    return folder


def test_the_loss_is_measured_on_each_set(tmp_path: Path) -> None:
    network = _network()
    with torch.no_grad():  # outputs of about unit size: bfloat16 moves some pixels a level
        network.subpixel.bias.fill_(0.5)  # type: ignore[union-attr]
    losses = measure_bfloat16_loss(network, [_folder(tmp_path)], ["torch"])
    assert list(losses) == ["Tiny"]
    assert 0 < abs(losses["Tiny"]) < 0.5


def test_recording_writes_the_loss_onto_the_card_and_keeps_the_tensors(tmp_path: Path) -> None:
    network = _network()
    path = save_weights(network, tmp_path / "espcn_x2.safetensors")
    before = load_file(str(path))
    losses = record_bfloat16_loss(path, [_folder(tmp_path)], ["torch"])
    card = card_of(load_network(str(path)))
    assert card.metrics["Tiny"][LOSS_KEY] == round(losses["Tiny"], 4)
    assert isinstance(card.metrics["Tiny"][MIXED_LOSS_KEY], float)
    after = load_file(str(path))
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert recorded_bfloat16_loss(load_network(str(path))) is None  # not Set5/Set14


@pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None, reason="openvino is not installed"
)
def test_openvino_is_among_the_bfloat16_engines(native: None) -> None:
    assert precision_loss.bfloat16_engines() == ["torch-channels-last", "openvino"]


def test_without_native_bfloat16_the_loss_is_measured_on_the_emulation(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(precision, "native_bfloat16", lambda device="cpu": False)
    assert precision_loss.bfloat16_engines() == ["emulated"]
    network = _network()
    with torch.no_grad():
        network.subpixel.bias.fill_(0.5)  # type: ignore[union-attr]
    losses = measure_bfloat16_loss(network, [_folder(tmp_path)])
    assert 0 < abs(losses["Tiny"]) < 0.5


def test_the_emulation_rounds_weights_input_and_every_layer_output_to_bfloat16() -> None:
    network = _network()
    emulated = precision_loss.emulate_bfloat16(network)
    for parameter in emulated.parameters():
        assert torch.equal(parameter, parameter.bfloat16().float())
    outputs: list[torch.Tensor] = []
    for layer in emulated.modules():
        if not list(layer.children()):
            layer.register_forward_hook(lambda _m, _i, out: outputs.append(out))
    x = torch.rand(1, 1, 9, 11)
    result = emulated(x)
    assert outputs and all(torch.equal(o, o.bfloat16().float()) for o in outputs)
    assert torch.equal(result, result.bfloat16().float())
    # The emulation's own hooks run before the test's, and the original is untouched.
    assert not torch.equal(network(x), result)
    assert any(not torch.equal(p, p.bfloat16().float()) for p in network.parameters())


def test_the_emulation_adds_a_residual_networks_input_back_in_float32() -> None:
    # Natively (autocast) a convolution reads the image in bfloat16, but a residual
    # network's input added back after the layers stays float32, and so does the sum that
    # the shuffle and the output layer pass on. With the layers' output zero, the network
    # is that skip alone: nearest-neighbour upsampling of the float32 input.
    network = ESPCN(ESPCNConfig(scale=2, features=(8,), kernels=(3, 3), residual=True)).eval()
    with torch.no_grad():
        network.subpixel.weight.zero_()
        network.subpixel.bias.zero_()
    x = torch.rand(1, 1, 9, 11)
    assert not torch.equal(x, x.bfloat16().float())
    result = precision_loss.emulate_bfloat16(network)(x)
    assert torch.equal(result, torch.nn.functional.interpolate(x, scale_factor=2))


@pytest.mark.skipif(not precision.native_bfloat16(), reason="this CPU has no native bfloat16")
def test_the_emulation_follows_native_bfloat16() -> None:
    network = _network()
    x = torch.rand(1, 1, 32, 32)
    native = make_engine(network, "torch-channels-last", precision="bfloat16")(x.numpy())
    emulated = precision_loss.emulate_bfloat16(network)(x).detach().numpy()
    reference = network(x).detach().numpy()
    # Closer to native bfloat16 than float32 is.
    assert np.abs(emulated - native).mean() < np.abs(reference - native).mean()


def test_the_first_layer_is_the_convolution_that_sees_the_image() -> None:
    network = _network()
    assert precision.first_layer(network) is network.features[0]  # type: ignore[index]
    fsrcnn = models.build("fsrcnn", scale=2)
    assert precision.first_layer(fsrcnn) is fsrcnn.body[0]  # type: ignore[index]
    assert precision.first_layer(models.build("bicubic", scale=2)) is None


def test_mixed_keeps_the_layers_that_see_the_image() -> None:
    network = _network()
    assert precision.float32_layers(network) == [network.features[0]]  # type: ignore[index]
    srcnn = models.build("srcnn", scale=2)
    assert precision.float32_layers(srcnn) == [srcnn.upscale, srcnn.body[0]]  # type: ignore[index]
    assert precision.float32_layers(models.build("bicubic", scale=2)) == []
    wrapped = precision.first_layer_in_float32(srcnn)
    assert [type(m).__name__ for m in wrapped.children()] == ["_Float32", "Sequential"]


def test_mixed_runs_the_first_layer_in_float32_and_the_rest_in_bfloat16() -> None:
    network = _network()
    mixed = precision.first_layer_in_float32(network)
    dtypes: list[torch.dtype] = []
    for layer in mixed.modules():
        if isinstance(layer, nn.Conv2d):
            layer.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    x = torch.rand(1, 1, 9, 11)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        mixed(x)
    assert dtypes == [torch.float32, torch.bfloat16, torch.bfloat16]
    with torch.no_grad():  # without autocast: the network itself, and the original intact
        assert torch.equal(mixed(x), network(x))
    assert isinstance(network.features[0], nn.Conv2d)  # type: ignore[index]


def test_the_mixed_emulation_keeps_the_first_layer_and_the_input_in_float32() -> None:
    network = _network()
    emulated = precision_loss.emulate_bfloat16(network, "mixed")
    first = precision.first_layer(emulated)
    assert first is not None
    assert all(
        torch.equal(p, q)
        for p, q in zip(first.parameters(), network.features[0].parameters(), strict=True)
    )  # type: ignore[index]
    later = [p for m in emulated.modules() if m is not first for p in m.parameters(recurse=False)]
    assert later and all(torch.equal(p, p.bfloat16().float()) for p in later)
    x = torch.rand(1, 1, 9, 11)
    with torch.no_grad():
        exact = first(x)
        seen: list[torch.Tensor] = []
        first.register_forward_hook(lambda _m, _i, out: seen.append(out))
        emulated(x)
    assert torch.equal(seen[0], exact)  # neither the input nor the first output rounded
    with pytest.raises(ValueError, match="precision"):
        precision_loss.emulate_bfloat16(network, "float16")
    # The mixed loss is nearer float32 than bfloat16's is.
    reference = network(x).detach()
    bf16 = precision_loss.emulate_bfloat16(network)(x).detach()
    assert (emulated(x).detach() - reference).abs().mean() < (bf16 - reference).abs().mean()
