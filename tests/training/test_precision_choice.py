"""The automatic training precision: measured where bfloat16 is native, cached, recorded."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from subpixel import models
from subpixel.precision import native_bfloat16
from subpixel.training import TrainConfig, precision_choice, train
from subpixel.training.loop import step_timer
from subpixel.training.precision_choice import BFLOAT16_PAYS, choose_training_precision


def _config(**fields: object) -> TrainConfig:
    options: dict[str, object] = {
        "model": "espcn",
        "scale": 2,
        "model_options": {"features": [8, 4]},
        "data": ("unused",),
        "batch_size": 4,
        "patch_size": 8,
    }
    options.update(fields)
    return TrainConfig(**options)  # type: ignore[arg-type]


class _Timer:
    """A step timer where bfloat16 is ``speedup`` times faster than float32."""

    def __init__(self, speedup: float) -> None:
        self.speedup, self.calls = speedup, 0

    def __call__(self, config: TrainConfig, precision: str) -> float:
        self.calls += 1
        return 0.01 if precision == "float32" else 0.01 / self.speedup


@pytest.fixture
def native(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision_choice, "native_bfloat16", lambda device: True)


@pytest.mark.usefixtures("native")
@pytest.mark.parametrize(
    ("speedup", "want"),
    [(2.0, "bfloat16"), (BFLOAT16_PAYS, "bfloat16"), (1.2, "float32"), (0.7, "float32")],
)
def test_bfloat16_is_chosen_only_where_a_step_is_enough_faster(
    speedup: float, want: str, tmp_path: Path
) -> None:
    timer = _Timer(speedup)
    cache = tmp_path / "choices.json"
    assert choose_training_precision(_config(), "cpu", timer, cache_file=cache) == want
    assert timer.calls > 2  # both precisions, more than once
    entry = next(iter(json.loads(cache.read_text()).values()))
    assert entry["precision"] == want
    assert entry["speedup"] == pytest.approx(speedup, rel=1e-3)


def test_without_native_bfloat16_the_choice_is_float32_unmeasured(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(precision_choice, "native_bfloat16", lambda device: False)
    timer = _Timer(10.0)
    choice = choose_training_precision(_config(), "cpu", timer, cache_file=tmp_path / "c.json")
    assert choice == "float32"
    assert timer.calls == 0


@pytest.mark.usefixtures("native")
def test_the_choice_is_kept_per_step_shape_and_measured_again_when_unreadable(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "choices.json"
    assert choose_training_precision(_config(), "cpu", _Timer(2.0), cache_file=cache) == "bfloat16"
    again = _Timer(0.5)  # a later measurement would say otherwise: the kept choice holds
    assert choose_training_precision(_config(), "cpu", again, cache_file=cache) == "bfloat16"
    assert again.calls == 0
    wider = _Timer(0.5)  # another batch is another shape, measured on its own
    choice = choose_training_precision(_config(batch_size=8), "cpu", wider, cache_file=cache)
    assert choice == "float32"
    assert wider.calls > 0
    assert len(json.loads(cache.read_text())) == 2
    cache.write_text("{not json")
    remeasured = _Timer(0.5)
    assert choose_training_precision(_config(), "cpu", remeasured, cache_file=cache) == "float32"
    assert remeasured.calls > 0


def test_the_step_timer_leaves_the_network_and_the_random_state_alone() -> None:
    torch.manual_seed(5)
    network = models.build("espcn", scale=2, features=[8, 4])
    weights = {k: v.clone() for k, v in network.state_dict().items()}
    state = torch.random.get_rng_state()
    timer = step_timer(network, torch.device("cpu"), 2)
    for precision in ("float32", "bfloat16", "float32"):
        assert timer(_config(), precision) > 0
    assert torch.equal(torch.random.get_rng_state(), state)
    for key, value in network.state_dict().items():
        assert torch.equal(value, weights[key]), key


def _not_measured(config: TrainConfig, precision: str) -> float:
    raise AssertionError("the choice should have come from the cache")


def test_a_default_run_trains_in_this_machines_choice_and_resumes_in_it(
    tmp_path: Path, random_images: Callable[..., Path]
) -> None:
    """The default precision on the machine the tests run on: made concrete in the run's
    config, the cached choice for its shape, and kept on resume whatever the cache says by
    then."""
    train_dir = random_images(tmp_path / "train", 3, (40, 48))
    val_dir = random_images(tmp_path / "val", 1, (40, 48), seed=1)
    config = _config(data=(str(train_dir),), val=str(val_dir), iterations=2, val_every=2)
    assert config.precision == "auto"  # the default
    out = tmp_path / "run"
    train(config, out, cache_dir=tmp_path / "patches")
    used = TrainConfig.load(out / "config.json").precision
    assert used == choose_training_precision(config, "cpu", _not_measured)
    if not native_bfloat16("cpu"):
        assert used == "float32"
    other = "float32" if used == "bfloat16" else "bfloat16"
    cache = precision_choice.default_cache_file()
    if cache.exists():  # the next choice of this shape would be the other precision
        entries = json.loads(cache.read_text())
        cache.write_text(json.dumps({k: {**v, "precision": other} for k, v in entries.items()}))
    longer = dataclasses.replace(TrainConfig.load(out / "config.json"), iterations=4)
    (out / "config.json").write_text(longer.to_json())  # what `--resume --iterations 4` does
    result = train(config, out, resume=True, cache_dir=tmp_path / "patches")
    assert result.iteration == 4
    assert TrainConfig.load(out / "config.json").precision == used
    if cache.exists():
        cache.write_text(json.dumps(entries))  # the other tests' choices as measured
