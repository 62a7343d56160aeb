from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import subpixel
from subpixel import models, weights
from subpixel.errors import ModelError, ScaleError
from subpixel.weights import ModelCard, describe, load_network, load_weights, save_weights


@pytest.mark.parametrize("name", ["espcn", "espcn-7", "fsrcnn", "fsrcnn-s", "srcnn", "srcnn-915"])
def test_build_save_load_gives_the_same_output(tmp_path: Path, name: str) -> None:
    torch.manual_seed(0)
    net = models.build(name, scale=2).eval()
    describe(net, name, training={"data": "none"}, metrics={"Set5": {"psnr": 1.0}})
    path = save_weights(net, tmp_path / f"{name}.safetensors")
    loaded = load_network(path)
    assert loaded.card == net.card
    x = torch.rand(1, 1, 6, 7)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)


def test_card_keeps_a_non_default_config(tmp_path: Path) -> None:
    net = models.build("espcn", scale=4, channels=3, features=(16, 8), activation="relu")
    describe(net, "espcn")
    loaded = load_weights(save_weights(net, tmp_path / "w.safetensors"))
    assert loaded.config == net.config
    assert loaded.card.colour_space == "rgb"


def test_a_pickle_is_not_loaded(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    torch.save(models.build("espcn").state_dict(), path)  # a pickle with the right extension
    with pytest.raises(ModelError, match="not a safetensors"):
        subpixel.load_model(path)


def test_safetensors_without_a_card_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "plain.safetensors"
    save_file(models.build("espcn").state_dict(), str(path))
    with pytest.raises(ModelError, match="no model card"):
        load_weights(path)


def test_tensors_that_do_not_match_the_card_are_refused(tmp_path: Path) -> None:
    card = ModelCard(architecture="fsrcnn", scale=3, channels=1)
    path = tmp_path / "mismatch.safetensors"
    save_weights(models.build("espcn", scale=3), path, card=card)
    with pytest.raises(ModelError, match="does not match"):
        load_weights(path)


def test_truncated_and_empty_files_are_refused(tmp_path: Path) -> None:
    good = models.build("espcn")
    describe(good, "espcn")
    data = save_weights(good, tmp_path / "good.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.safetensors").write_bytes(b"")
    for name in ("cut", "empty", "missing"):
        with pytest.raises(ModelError):
            load_weights(tmp_path / f"{name}.safetensors")


def test_card_metadata_is_plain_json(tmp_path: Path) -> None:
    from safetensors import safe_open

    net = models.build("fsrcnn-s", scale=3)
    describe(net, "fsrcnn-s", degradation="matlab-bicubic")
    path = save_weights(net, tmp_path / "w.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        card = json.loads(handle.metadata()["subpixel.card"])
    assert card["architecture"] == "fsrcnn-s"
    assert card["config"] == {"d": 32, "s": 5, "m": 1, "deconv_kernel": 9}


def test_load_model_by_name_and_scale_errors(tmp_path: Path) -> None:
    assert subpixel.load_model("bicubic", scale=4).card.scale == 4
    with pytest.raises(ModelError, match="unknown model"):
        subpixel.load_model("no-such-model")
    net = models.build("espcn", scale=2)
    describe(net, "espcn")
    path = save_weights(net, tmp_path / "x2.safetensors")
    with pytest.raises(ScaleError, match="x2 model"):
        subpixel.load_model(path, scale=3)


def test_card_validation() -> None:
    with pytest.raises(ValueError, match="architecture"):
        ModelCard(architecture="edsr", scale=2, channels=1)
    with pytest.raises(ValueError, match="channel"):
        ModelCard(architecture="espcn", scale=2, channels=3, colour_space="y")
    with pytest.raises(ValueError, match="unknown model-card keys"):
        ModelCard.from_json('{"architecture": "espcn", "scale": 2, "channels": 1, "x": 1}')


def _no_real_build(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make building a network anywhere but on the meta device fail; returns where each build
    was asked for."""
    built: list[str] = []
    real = ModelCard.build

    def build(card: ModelCard) -> torch.nn.Module:
        built.append(torch.get_default_device().type)
        if built[-1] != "meta":
            raise AssertionError("a network was built before the card was checked")
        return real(card)

    monkeypatch.setattr(ModelCard, "build", build)
    return built


def test_an_oversized_card_is_refused_before_anything_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 93 KB of ESPCN tensors under a card asking for two 12000-wide layers (5 GB to build).
    card = ModelCard("espcn", scale=3, channels=1, config={"features": [12000, 12000]})
    path = save_weights(models.build("espcn", scale=3), tmp_path / "big.safetensors", card=card)
    built = _no_real_build(monkeypatch)
    with pytest.raises(ModelError, match="does not match its model card") as refused:
        load_weights(path)
    message = str(refused.value)
    assert str(path) in message and "\n" not in message
    assert "features.0.weight" in message  # the first tensor whose shape differs
    assert built == ["meta"]


@pytest.mark.parametrize(
    "config", [{"blocks": 10**12}, {"features": 10**9}, {"kernels": [3] * 100 + [3, 3]}]
)
def test_absurd_card_numbers_are_refused_without_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: dict[str, object]
) -> None:
    architecture = "espcn" if "kernels" in config else "ecbsr"
    card = ModelCard(architecture, scale=3, channels=1, config=config)
    path = save_weights(models.build("espcn", scale=3), tmp_path / "w.safetensors", card=card)
    built = _no_real_build(monkeypatch)
    with pytest.raises(ModelError, match=f"does not match its model card: {next(iter(config))}="):
        load_weights(path)
    assert built == []


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_refused(tmp_path: Path, bad: float) -> None:
    net = models.build("espcn", scale=2)
    describe(net, "espcn")
    with torch.no_grad():
        net.features[2].weight[0, 0, 1, 1] = bad  # one value of the second layer
    path = save_weights(net, tmp_path / "broken.safetensors")
    with pytest.raises(ModelError, match="NaN or infinite") as refused:
        subpixel.load_model(path)
    assert str(path) in str(refused.value) and "features.2.weight" in str(refused.value)


def test_a_file_named_like_a_bundled_model_does_not_replace_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    impostor = models.build("espcn", scale=3)
    with torch.no_grad():
        for parameter in impostor.parameters():
            parameter.zero_()  # a one-colour network
    describe(impostor, "espcn")
    monkeypatch.chdir(tmp_path)
    save_weights(impostor, tmp_path / "espcn")
    save_weights(impostor, tmp_path / "mine")
    bundled = load_weights(weights.bundled_weights()[("espcn", 3)])

    by_name = load_network("espcn")
    for name, tensor in bundled.state_dict().items():
        torch.testing.assert_close(by_name.state_dict()[name], tensor, rtol=0, atol=0)
    assert weights.native_scales("espcn") == [2, 3, 4]
    by_path = load_network("./espcn")  # a path: it has a separator
    assert all(bool((p == 0).all()) for p in by_path.parameters())
    assert weights.native_scales("./espcn") == [3]
    for call in (subpixel.load_model, weights.native_scales):
        with pytest.raises(ModelError) as refused:
            call("mine")  # a bare name that is no bundled model, whatever the folder holds
        assert str(refused.value) == (
            "unknown model 'mine' (no bundled model of that name, see `subpixel models`; "
            "a weights file is given as a path like ./mine)"
        )
    with pytest.raises(ModelError, match=r"path like \./espcn2\.safetensors\)"):
        subpixel.load_model("espcn2")


def test_the_same_network_and_card_always_give_the_same_bytes(tmp_path: Path) -> None:
    """The file is a function of its contents (safetensors alone orders the metadata as a
    hash map does, differently from one write to the next), so a rebuilt bundle can be
    compared with the shipped file byte for byte."""
    torch.manual_seed(0)
    net = models.build("espcn", scale=3)
    first = save_weights(net, tmp_path / "first.safetensors").read_bytes()
    for n in range(8):
        assert save_weights(net, tmp_path / f"again{n}.safetensors").read_bytes() == first
    length = int.from_bytes(first[:8], "little")
    assert length % 8 == 0
    again = load_network(tmp_path / "again0.safetensors")
    for name, value in net.state_dict().items():
        assert torch.equal(again.state_dict()[name], value), name


_LOADS = """
import sys
import subpixel
from subpixel.weights import bundled_weights
for architecture, scale in bundled_weights():
    subpixel.load_model(architecture, scale=scale)
print(sorted(m for m in ("torch._dynamo", "torch.onnx") if m in sys.modules))
"""


def test_loading_a_model_imports_no_compiler() -> None:
    # Checking a card builds the network on "meta"; drawing FSRCNN's initial values there
    # imported torch._dynamo, which made every load of FSRCNN seconds long.
    result = subprocess.run(
        [sys.executable, "-c", _LOADS], capture_output=True, text=True, check=True, timeout=300
    )
    assert result.stdout.strip() == "[]"
