"""Adding a network is one model file plus one builder line.

The network below is defined here as a new model file would define it: an ``SRNetwork``
subclass that declares its facts. Registered with one ``BUILDERS`` line, it trains (with a
ten-times-slower output layer and unshuffled targets), is saved and loaded by its card, runs
through an ``Upscaler`` with the measured-fastest engine, and exports to ONNX, with no other
file of subpixel knowing it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from subpixel import Upscaler, models
from subpixel.export import export_onnx, read_card
from subpixel.training import TrainConfig, make_optimizer, output_layer, train
from subpixel.weights import card_of, load_network, save_weights


@dataclass(frozen=True)
class TinyConfig:
    scale: int = 2
    channels: int = 1
    width: int = 6


class Tiny(models.SRNetwork):
    """3x3 conv -> ReLU -> 3x3 conv to C r^2 phases -> periodic shuffle."""

    architecture = "tiny"
    ends_in_subpixel = True

    def __init__(self, config: TinyConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or TinyConfig()
        self.features = nn.Sequential(nn.Conv2d(c.channels, c.width, 3, padding=1), nn.ReLU())
        self.last = nn.Conv2d(c.width, c.channels * c.scale**2, 3, padding=1)
        self.shuffle = nn.PixelShuffle(c.scale)

    def forward(self, lr: Tensor) -> Tensor:
        return self.shuffle(self.forward_phases(lr))

    def forward_phases(self, lr: Tensor) -> Tensor:
        return self.last(self.features(lr))

    def output_layer(self) -> nn.Module:
        return self.last


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    # The one builder line.
    monkeypatch.setitem(models.BUILDERS, "tiny", lambda **options: Tiny(TinyConfig(**options)))


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(1)
    train_dir, val_dir = tmp_path / "train", tmp_path / "val"
    for folder, size, count in ((train_dir, 40, 3), (val_dir, 24, 1)):
        folder.mkdir()
        for i in range(count):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return train_dir, val_dir


def test_a_new_network_declares_its_facts_and_is_rebuilt_from_them(registered: None) -> None:
    net = models.build("tiny", scale=3, channels=1, width=4)
    assert models.architecture_of(net) == "tiny"
    assert models.settings_of(net) == {"scale": 3, "channels": 1, "width": 4}
    assert card_of(net).architecture == "tiny"
    assert output_layer(net) is net.last
    assert net.fast_form() is None and net.form_name == ""
    assert models.trainable("tiny") and not models.trainable("bicubic")

    class Changed(Tiny):  # a subclass that declares nothing of its own is not a Tiny
        pass

    assert models.architecture_of(Changed()) is None


def test_a_new_network_trains_saves_loads_upscales_and_exports(
    registered: None, folders: tuple[Path, Path], tmp_path: Path
) -> None:
    train_dir, val_dir = folders
    config = TrainConfig(
        model="tiny",
        scale=2,
        data=(str(train_dir),),
        val=str(val_dir),
        iterations=6,
        batch_size=2,
        patch_size=8,
        patches_per_image=4,
        val_every=3,
        workers=0,
        unshuffled_targets=True,
        model_options={"width": 5},
    )
    net = models.build("tiny", scale=2, width=5)
    groups = make_optimizer(net, config).param_groups
    assert [group["lr"] for group in groups] == [config.lr, config.lr * config.head_lr_scale]

    run = tmp_path / "run"
    train(config, run, cache_dir=tmp_path / "cache")
    loaded = load_network(run / "best.safetensors")
    assert isinstance(loaded, Tiny) and loaded.config == TinyConfig(2, 1, 5)

    saved = save_weights(loaded, tmp_path / "tiny.safetensors")
    again = load_network(saved)
    lr = torch.rand(1, 1, 9, 11)
    with torch.no_grad():
        assert torch.equal(again(lr), loaded(lr))

    upscaler = Upscaler.from_network(again, cache_file=None)
    image = Image.fromarray(np.random.default_rng(2).integers(0, 256, (13, 17, 3), np.uint8))
    assert upscaler(image).size == (34, 26)

    onnx = export_onnx(again, tmp_path / "tiny.onnx")
    assert read_card(onnx).architecture == "tiny"
