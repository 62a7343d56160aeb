"""Engines run on a fixed grid of tiles: the grid cut, the grid probe, the automatic choice,
and the image pipeline's tiles equal to its whole image with an engine whose arithmetic
depends on the input's shape."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import subpixel
from subpixel import models
from subpixel.engines import AUTO_ENGINES, Engine, TorchEngine, auto, clear_engine_cache
from subpixel.engines.grid import GRID_TILE, GridEngine
from subpixel.engines.tile_probe import grid_mismatches, tile_mismatches
from subpixel.pipeline.tiling import receptive_radius, run_in_grid, tile_margin


class _ShapeDependent:
    """A network's engine whose output moves by a few float steps with the input's shape,
    as kernels chosen by shape do (``subpixel.engines.tile_probe``)."""

    name = "torch"
    precision = "float32"
    form = ""

    def __init__(self, engine: Engine, *, noisy: bool = False) -> None:
        self.engine = engine
        self.noisy = noisy
        self.calls = 0

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        self.calls += 1
        out = self.engine(lr)
        height, width = lr.shape[-2:]
        step = (height * 7 + width) % 5 + (self.calls % 3 if self.noisy else 0)
        return out + np.float32(3e-3 * step)  # a level or so of 8 bits


class _Exact(TorchEngine):
    """Eager float32 torch without oneDNN, whose kernels are chosen by shape: the same
    arithmetic for a pixel whatever the input's shape (tile-exact; ``torch-native``)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__(network, onednn=False)


def _network(name: str = "espcn", scale: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return models.build(name, scale=scale).eval()


@pytest.mark.parametrize("seed", range(6))
def test_run_in_grid_is_the_network_on_the_whole_frame(seed: int) -> None:
    """Stitching: random frames, scales, tiles and batches give the whole frame's output
    (an exact engine: eager float32 torch, to float rounding)."""
    rng = np.random.default_rng(seed)
    scale = int(rng.integers(2, 5))
    network = _network("fsrcnn-s" if seed % 2 else "espcn", scale)
    engine = TorchEngine(network)
    batch, height, width = (
        int(rng.integers(1, 3)),
        int(rng.integers(5, 70)),
        int(rng.integers(5, 70)),
    )
    lr = rng.random((batch, 1, height, width), dtype=np.float32)
    tile = int(rng.integers(4, 40))
    margin = tile_margin(receptive_radius(network))
    out = run_in_grid(engine, lr, tile=tile, margin=margin)
    assert out.shape == (batch, 1, scale * height, scale * width)
    np.testing.assert_allclose(out, engine(lr), atol=2e-5)


def test_the_grid_probe_passes_a_shape_dependent_engine_and_fails_a_noisy_one() -> None:
    network = _network()
    shaky = _ShapeDependent(_Exact(network))
    assert tile_mismatches(_Exact(network), network, 1) == 0
    assert tile_mismatches(shaky, network, 1) > 0  # its free tiles differ from the whole
    assert grid_mismatches(GridEngine(shaky, network, tile=40), 1) == 0  # the grid's do not
    noisy = _ShapeDependent(_Exact(network), noisy=True)
    assert grid_mismatches(GridEngine(noisy, network, tile=40), 1) > 0


def test_the_probe_takes_the_grid_when_the_exact_engine_is_much_slower() -> None:
    network = _network()
    shaky, exact = _ShapeDependent(_Exact(network)), _Exact(network)
    noisy = _ShapeDependent(_Exact(network), noisy=True)
    forms = {"": network}
    engines: dict[str, Engine] = {"fast": shaky, "exact": exact, "noisy": noisy}

    def probe(milliseconds: dict[str, float]) -> auto.TileProbe:
        return auto._probe_tiles(engines, forms, auto.Calibration("k", milliseconds), 1)

    near = 0.9 * auto.GRID_GAIN
    far = 1.1 * auto.GRID_GAIN
    # The exact engine within the grid's cost: it is kept, no grid.
    found = probe({"fast": 1.0, "exact": near})
    assert (found.choice, found.exact, found.failed) == ("exact", True, ("fast",))
    # Slower than that: the fastest runs on its grid.
    found = probe({"fast": 1.0, "exact": far})
    assert (found.choice, found.exact, found.failed) == ("fast+grid", True, ("fast",))
    # Nothing else: the grid too.
    found = probe({"fast": 1.0})
    assert (found.choice, found.exact) == ("fast+grid", True)
    # An engine that is not even the same from call to call gets no grid: the exact one.
    found = probe({"noisy": 1.0, "exact": far})
    assert (found.choice, found.exact, found.failed) == ("exact", True, ("noisy",))
    found = probe({"noisy": 1.0})  # nothing exact: ``make_engine`` tries the fallback
    assert (found.choice, found.exact, found.failed) == ("noisy", False, ("noisy",))


@pytest.mark.parametrize("fallback_exact", [True, False])
def test_when_nothing_is_exact_the_fallback_is_timed_and_probed(
    fallback_exact: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Candidates whose tiles differ and which do not repeat themselves (no grid): the exact
    fallback, ``torch-native`` (oneDNN off), is chosen and recorded; when it differs too,
    the fastest is kept with a warning."""
    built: dict[str, Engine] = {}

    def build(model: nn.Module, name: str, *args: object) -> Engine:
        exact = _Exact(model)
        keep = name == "torch-native" and fallback_exact
        built[name] = exact if keep else _ShapeDependent(exact, noisy=True)
        return built[name]

    timings = {"torch": 1.0, "torch-channels-last": 2.0, "torch-native": 5.0}
    monkeypatch.setitem(AUTO_ENGINES, "float32", ("torch", "torch-channels-last"))
    monkeypatch.setattr(auto, "_build", build)
    monkeypatch.setattr(
        auto,
        "calibrate",
        lambda engines, _c, kind: auto.Calibration(kind, {n: timings[n] for n in engines}),
    )
    clear_engine_cache()
    cache = tmp_path / "engines.json"
    with caplog.at_level("WARNING", logger="subpixel.engines.auto"):
        engine = auto.make_engine(_network(), "auto", precision="float32", cache_file=cache)
    clear_engine_cache()
    (entry,) = json.loads(cache.read_text()).values()
    assert set(entry["milliseconds"]) == set(timings)
    if fallback_exact:
        assert engine is built["torch-native"] and entry["engine"] == "torch-native"
        assert entry["tile_exact"] is True
        assert entry["probe_failed"] == ["torch", "torch-channels-last"]
        assert "may differ along tile seams" not in caplog.text
    else:
        assert engine is built["torch"] and entry["engine"] == "torch"
        assert entry["tile_exact"] is False
        assert entry["probe_failed"] == ["torch", "torch-channels-last", "torch-native"]
        assert "may differ along tile seams" in caplog.text


def test_a_base_install_chooses_a_tile_exact_engine_in_float32(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """torch alone (no ONNX Runtime, no OpenVINO), the default ESPCN x3 in float32 (16-bit
    images, and CPUs without native bfloat16): on 2 Zen 3 and 2 Intel AMX cores oneDNN's
    tiles differed from the whole in both layouts, so the choice was the grid or the
    fallback. Whatever this machine chose, its tiles equal its whole image."""
    monkeypatch.setitem(AUTO_ENGINES, "float32", ("torch", "torch-channels-last"))
    clear_engine_cache()
    upscaler = subpixel.load_model("espcn", scale=3, precision="float32", cache_file=None)
    engine = upscaler.engine_for("float32")
    clear_engine_cache()
    if isinstance(engine, GridEngine):
        assert grid_mismatches(engine, 1) == 0, engine.name
    else:
        assert tile_mismatches(engine, upscaler.network, 1) == 0, engine.name


@pytest.fixture
def shaky_fastest(monkeypatch: pytest.MonkeyPatch) -> dict[str, Engine]:
    """``"auto"`` choosing between a fast shape-dependent torch and an exact one twice as
    slow; what was built, by name."""
    built: dict[str, Engine] = {}

    def build(model: nn.Module, name: str, *args: object) -> Engine:
        exact = _Exact(model)
        built[name] = _ShapeDependent(exact) if name == "torch" else exact
        return built[name]

    timings = {"torch": 1.0, "torch-channels-last": 2.0}
    monkeypatch.setitem(AUTO_ENGINES, "float32", tuple(timings))
    monkeypatch.setattr(auto, "_build", build)
    monkeypatch.setattr(auto, "calibrate", lambda _e, _c, kind: auto.Calibration(kind, timings))
    clear_engine_cache()
    yield built
    clear_engine_cache()


def test_a_grid_choice_is_recorded_read_back_and_handed_on_by_name(
    shaky_fastest: dict[str, Engine], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    network = _network()
    cache = tmp_path / "engines.json"
    engine = auto.make_engine(network, "auto", precision="float32", cache_file=cache)
    assert isinstance(engine, GridEngine) and engine.engine is shaky_fastest["torch"]
    assert (engine.tile, engine.margin) == (GRID_TILE, tile_margin(receptive_radius(network)))
    (entry,) = json.loads(cache.read_text()).values()
    assert entry["engine"] == "torch+grid" and entry["tile_exact"] is True
    assert entry["probe_failed"] == ["torch"] and entry["grid_gain"] == auto.GRID_GAIN
    # A later process reads it back without measuring; another is handed it by name.
    clear_engine_cache()
    monkeypatch.setattr(auto, "calibrate", lambda *_a, **_k: pytest.fail("calibrated again"))
    again = auto.make_engine(network, "auto", precision="float32", cache_file=cache)
    assert isinstance(again, GridEngine) and isinstance(again.engine, _ShapeDependent)
    assert auto.auto_choice(network, "float32", cache_file=cache) == "torch+grid"
    upscaler = subpixel.Upscaler.from_network(
        network, precision="float32", choices={"float32": "torch+grid"}, cache_file=None
    )
    assert upscaler.engine_choice() == "torch+grid" and upscaler.tile_grid() == GRID_TILE
    # Written before the grid existed: measured again.
    del entry["grid_gain"]
    cache.write_text(json.dumps({"k": entry}))
    assert auto._cached_choice(cache, "k") is None


@pytest.mark.parametrize(
    ("mode", "scale"), [("RGB", None), ("RGBA", None), ("L", 2.5), ("I;16", None)]
)
def test_tiles_of_a_grid_engine_equal_its_whole_image(
    shaky_fastest: dict[str, Engine], mode: str, scale: float | None
) -> None:
    """The image pipeline with the engine ``"auto"`` puts on a grid: every tile size gives
    the untiled bytes, for colour, alpha, a non-native scale and 16 bits."""
    upscaler = subpixel.Upscaler.from_network(_network(), precision="float32", cache_file=None)
    assert upscaler.tile_grid() == GRID_TILE
    rng = np.random.default_rng(1)
    size = (300, GRID_TILE + 20)  # two tiles of the grid across, two down
    if mode == "I;16":
        image: np.ndarray = rng.integers(0, 65536, size, dtype=np.uint16)
    else:
        channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
        image = rng.integers(0, 256, (*size, channels), dtype=np.uint8)
    whole = upscaler(image, scale=scale)
    for tile in (17, 37, 97, 1000):
        np.testing.assert_array_equal(upscaler(image, scale=scale, tile=tile), whole)
    # Without the grid the same engine's tiles differ: the test can fail.
    shaky = shaky_fastest["torch"]
    plane = rng.random((1, 1, *size), dtype=np.float32)
    grid = GridEngine(shaky, upscaler.network)
    assert np.array_equal(grid(plane), upscaler.run(plane))
    assert not np.array_equal(shaky(plane), grid(plane))
