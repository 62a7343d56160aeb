"""Engines (subpixel.engines), the pipeline's fast arithmetic (subpixel.pipeline.fastpath) and the
speed benchmark (benchmarks/speed.py).

Every engine is checked against eager PyTorch float32 on the same network: float32 to 1e-5,
bfloat16 to 2% of the output's range (and it must differ, or bfloat16 was not used). The fast
colour pipeline is checked against the plain float64 maths of ``subpixel.colour`` and
``models.Bicubic``, with OpenCV and without.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib
import importlib.metadata
import importlib.util
import json
import math
import multiprocessing
import os
import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import subpixel
from subpixel import models
from subpixel.bicubic import phase_weights
from subpixel.colour import rgb_to_ycbcr, ycbcr_to_rgb
from subpixel.engines import (
    AUTO_ENGINES,
    ENGINES,
    Engine,
    EngineError,
    EngineModule,
    TorchEngine,
    auto,
    base,
    clear_engine_cache,
    engine_module,
    exports,
    make_engine,
    openvino_engine,
)
from subpixel.engines.grid import GridEngine
from subpixel.engines.tile_probe import grid_mismatches, tile_mismatches
from subpixel.layers import SubpixelConv2d
from subpixel.pipeline import fastpath
from subpixel.precision import native_bfloat16
from subpixel.resize import imresize
from subpixel.upscaler import upscale_array
from subpixel.weights import describe

ROOT = Path(__file__).resolve().parents[2]


# bfloat16 is the default only where the CPU has it natively; elsewhere it is emulated
# (probing every engine so took 90 s of a 15-minute suite on Zen 3), for a path no default
# takes.
NATIVE_BFLOAT16_ONLY = pytest.mark.skipif(
    not native_bfloat16(), reason="this CPU has no native bfloat16"
)


def _has(*packages: str) -> bool:
    return all(importlib.util.find_spec(p) is not None for p in packages)


HAS_ORT = _has("onnx", "onnxscript", "onnxruntime")
HAS_OPENVINO = _has("onnx", "onnxscript", "openvino")
HAS_CV2 = _has("cv2")
needs_ort = pytest.mark.skipif(not HAS_ORT, reason="onnx, onnxscript or onnxruntime missing")
needs_cv2 = pytest.mark.skipif(not HAS_CV2, reason="OpenCV is not installed")


@functools.cache
def _network(name: str, scale: int = 3, form: str = "") -> nn.Module:
    """Weights giving outputs of about unit size, so tolerances mean something (fresh
    FSRCNN's deconvolution is N(0, 0.001))."""
    network = models.build(name, scale=scale)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in network.parameters():
            fan_in = parameter[0].numel() if parameter.dim() > 1 else 10
            parameter.copy_(torch.randn(parameter.shape, generator=generator) / math.sqrt(fan_in))
    describe(network, name)
    if form == "subpixel":
        network = models.fsrcnn_to_subpixel(network)  # type: ignore[arg-type]
    return network.eval()


def _lr(height: int = 13, width: int = 17, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((1, 1, height, width), dtype=np.float32)


def _eager(network: nn.Module, lr: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return network(torch.from_numpy(lr)).numpy()


def test_torch_native_turns_onednn_off_for_its_calls_only() -> None:
    """``torch-native`` runs with oneDNN off and puts the switch back, after an error too."""
    network = models.build("espcn", scale=3).eval()
    seen: list[bool] = []
    network.register_forward_pre_hook(lambda *_: seen.append(torch.backends.mkldnn.enabled))
    native = make_engine(network, "torch-native", precision="float32")
    assert native.name == "torch-native"
    native(_lr())
    assert seen == [False] and torch.backends.mkldnn.enabled
    with pytest.raises(RuntimeError):
        native(np.zeros((1, 2, 5, 5), np.float32))  # one channel expected
    assert seen == [False, False] and torch.backends.mkldnn.enabled
    make_engine(network, "torch", precision="float32")(_lr())
    assert seen[-1] is True


def test_torch_native_and_other_torch_calls_in_other_threads_never_overlap() -> None:
    """oneDNN's switch is process-wide: while a ``torch-native`` call runs with it off, a
    ``torch`` call in another thread waits, then runs with oneDNN on, as it was."""
    native_network = models.build("espcn", scale=3).eval()
    plain_network = models.build("espcn", scale=3).eval()
    inside, release = threading.Event(), threading.Event()

    def hold(*_: object) -> None:
        inside.set()
        assert release.wait(30)

    native_network.register_forward_pre_hook(hold)
    seen: list[bool] = []
    plain_network.register_forward_pre_hook(lambda *_: seen.append(torch.backends.mkldnn.enabled))
    native = make_engine(native_network, "torch-native", precision="float32")
    plain = make_engine(plain_network, "torch", precision="float32")
    first = threading.Thread(target=native, args=(_lr(),))
    first.start()
    assert inside.wait(30)
    second = threading.Thread(target=plain, args=(_lr(),))
    second.start()
    second.join(0.5)
    waited = second.is_alive() and not seen  # still at the gate while oneDNN is off
    release.set()
    first.join(30)
    second.join(30)
    assert waited and seen == [True] and torch.backends.mkldnn.enabled


def _check(engine: Engine, network: nn.Module, lr: np.ndarray, precision: str) -> None:
    expected = _eager(network, lr)
    sr = engine(lr)
    assert sr.dtype == np.float32 and sr.shape == expected.shape, engine.name
    error = np.abs(sr - expected).max()
    if engine.name == "openvino" and not native_bfloat16():
        precision = "float32"  # OpenVINO computes bfloat16 only where the CPU has it
    if precision == "float32":
        assert error <= 1e-5, (engine.name, error)
    else:  # bfloat16 keeps 8 bits: about 1% of the output's range, never exactly float32
        assert 1e-4 < error <= 0.02 * np.abs(expected).max(), (engine.name, error)


# --------------------------------------------------------------------------- #
# Engines against eager PyTorch
# --------------------------------------------------------------------------- #

CASES = [("espcn", ""), ("fsrcnn", ""), ("fsrcnn", "subpixel"), ("fsrcnn-s", ""), ("srcnn", "")]


@pytest.mark.parametrize(("name", "form"), CASES)
@pytest.mark.parametrize(
    ("engine", "precision"),
    [
        ("torch", "bfloat16"),
        ("torch-channels-last", "float32"),
        ("torch-channels-last", "bfloat16"),
        ("torch-native", "float32"),
        ("onnxruntime", "float32"),
        ("openvino", "float32"),
        ("openvino", "bfloat16"),
        ("torch", "mixed"),
        ("openvino", "mixed"),
    ],
)
def test_engines_agree_with_eager_torch(name: str, form: str, engine: str, precision: str) -> None:
    if engine == "onnxruntime" and not HAS_ORT:
        pytest.skip("onnx, onnxscript or onnxruntime missing")
    if engine == "openvino" and not HAS_OPENVINO:
        pytest.skip("onnx, onnxscript or openvino missing")
    network = _network(name, 3, form)
    _check(make_engine(network, engine, precision=precision), network, _lr(), precision)


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compiled_engine_agrees_in_both_precisions_and_at_a_new_size() -> None:
    network = _network("fsrcnn-s", 2)
    for precision in ("float32", "bfloat16"):
        try:
            engine = make_engine(network, "torch-compile", precision=precision)
            _check(engine, network, _lr(), precision)
        except EngineError as error:  # no C++ compiler for inductor, for example
            pytest.skip(f"torch.compile does not work here: {error}")
        _check(engine, network, _lr(9, 20, seed=1), precision)  # recompiles for the shape
        assert engine.name == "torch-compile"


@pytest.mark.skipif(not HAS_OPENVINO, reason="onnx, onnxscript or openvino missing")
@NATIVE_BFLOAT16_ONLY
@pytest.mark.parametrize(
    ("name", "form", "in_float32"), [("espcn", "", 1), ("fsrcnn", "subpixel", 1), ("srcnn", "", 2)]
)
def test_openvino_mixed_runs_the_layers_through_the_first_in_float32_only(
    name: str, form: str, in_float32: int
) -> None:
    network = _network(name, 2, form)
    core = openvino_engine._openvino_core()
    exported = core.read_model(exports._exported(network), b"")
    kept = openvino_engine._layers_through_first(exported, network)
    marked = openvino_engine._keeping_precision(core, exported, kept)
    compiled = core.compile_model(marked, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
    convolutions = [
        op.get_friendly_name()
        for op in marked.get_ordered_ops()
        if op.get_type_name() in openvino_engine._OPENVINO_CONVOLUTIONS
    ]
    ran = [openvino_engine._runtime_precision(compiled, c) for c in convolutions]
    # SRCNN's bicubic upscaling is a convolution too, before its first layer.
    assert ran[:in_float32] == ["f32"] * in_float32, ran
    assert set(ran[in_float32:]) == {"bf16"}, ran


def test_openvino_mixed_finds_the_first_layer_by_its_weights() -> None:
    if not HAS_OPENVINO:
        pytest.skip("onnx, onnxscript or openvino missing")
    network = _network("srcnn", 2)
    exported = openvino_engine._openvino_core().read_model(exports._exported(network), b"")
    kept = openvino_engine._layers_through_first(exported, network)
    (last,) = [op for op in exported.get_ordered_ops() if op.get_friendly_name() == kept[-1]]
    assert "body.0.weight" in openvino_engine._input_names(last, 1)
    # Weights the export does not hold: an error, not a guess.
    with pytest.raises(EngineError, match=r"uses 0\.weight"):
        openvino_engine._layers_through_first(exported, nn.Sequential(nn.Conv2d(1, 1, 3)))


@pytest.mark.skipif(not HAS_OPENVINO, reason="onnx, onnxscript or openvino missing")
def test_openvino_that_would_run_the_first_layer_in_bfloat16_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(openvino_engine, "_runtime_precision", lambda _compiled, _layer: "bf16")
    with pytest.raises(EngineError, match="does not keep the first layer in float32"):
        make_engine(_network("espcn", 2), "openvino", precision="mixed")


def test_bad_precisions_and_engines_are_errors() -> None:
    network = _network("espcn", 2)
    with pytest.raises(EngineError, match="unknown precision 'float16'"):
        make_engine(network, "torch", precision="float16")
    with pytest.raises(EngineError, match="float32 only"):
        make_engine(network, "onnxruntime", precision="bfloat16")
    with pytest.raises(EngineError, match="unknown engine 'tensorrt'"):
        make_engine(network, "tensorrt")
    assert set(AUTO_ENGINES["float32"]) <= set(ENGINES) and "torch-compile" in ENGINES


@pytest.mark.parametrize(("engine", "extra"), [("onnxruntime", "onnx"), ("openvino", "openvino")])
def test_a_missing_runtime_names_the_extra_to_install(
    engine: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.import_module

    def without(name: str) -> ModuleType:
        if name == engine:
            raise ImportError(f"No module named {name!r}")
        return real(name)

    monkeypatch.setattr(importlib, "import_module", without)
    with pytest.raises(EngineError, match=rf"needs {engine}: pip install 'subpixel\[{extra}\]'"):
        make_engine(_network("espcn", 2), engine, precision="float32")


# --------------------------------------------------------------------------- #
# The automatic choice
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "precision", ["float32", pytest.param("bfloat16", marks=NATIVE_BFLOAT16_ONLY)]
)
def test_auto_tries_both_fsrcnn_forms_and_returns_a_working_engine(
    precision: str, tmp_path: Path
) -> None:
    clear_engine_cache()
    network = _network("fsrcnn", 3)
    cache = tmp_path / "engines.json"
    engine = make_engine(network, "auto", precision=precision, cache_file=cache)
    assert isinstance(engine, Engine) and engine.name in ENGINES
    ran = getattr(engine, "precision", "float32")  # onnxruntime is float32 in either case
    _check(engine, network, _lr(), ran)
    (kind, entry), *others = json.loads(cache.read_text()).items()
    assert not others and kind.startswith("fsrcnn/x3/c1/")
    assert kind.endswith(f"/{precision}/t{torch.get_num_threads()}")
    tried = set(entry["milliseconds"])
    expected = {e + form for e in AUTO_ENGINES[precision] for form in ("", "+subpixel")}
    missing = ([] if HAS_ORT else ["onnxruntime"]) + ([] if HAS_OPENVINO else ["openvino"])
    assert tried == {t for t in expected if t.removesuffix("+subpixel") not in missing}
    # The fastest whose tiles matched the whole in the probe, those faster failing it; or
    # the fastest on its grid, when the first that matched was GRID_GAIN times slower.
    ranked = sorted(entry["milliseconds"], key=entry["milliseconds"].get)
    chosen = entry["engine"].removesuffix("+grid")
    assert isinstance(engine, GridEngine) == entry["engine"].endswith("+grid")
    if isinstance(engine, GridEngine):
        assert entry["tile_exact"] and chosen == ranked[0] == entry["probe_failed"][0]
        slowest_probed = entry["milliseconds"][entry["probe_failed"][-1]]
        assert slowest_probed <= auto.GRID_GAIN * entry["milliseconds"][chosen]
    elif entry["tile_exact"]:
        assert entry["probe_failed"] == ranked[: ranked.index(chosen)]
        assert entry["milliseconds"][chosen] <= auto.GRID_GAIN * entry["milliseconds"][ranked[0]]
    else:  # none matched, not even on the grid: the fastest, all probed
        assert chosen == ranked[0] and entry["probe_failed"] == ranked
    assert (getattr(engine, "form", "") == "sub-pixel") == chosen.endswith("+subpixel")

    # Whatever was chosen, a later process rebuilds it from the file, in the same form.
    clear_engine_cache()
    again = make_engine(network, "auto", precision=precision, cache_file=cache)
    assert (again.name, getattr(again, "form", "")) == (engine.name, getattr(engine, "form", ""))
    clear_engine_cache()


def test_a_cached_sub_pixel_choice_runs_the_sub_pixel_form(tmp_path: Path) -> None:
    clear_engine_cache()
    network = _network("fsrcnn", 2)
    kind = f"{base._network_kind(network)}/float32/t{torch.get_num_threads()}"
    cache = tmp_path / "engines.json"
    entry = {"engine": "torch+subpixel", "milliseconds": {}, "cores": base._cores()}
    entry["threads"] = torch.get_num_threads()
    entry |= {"size": auto.CALIBRATION_SIZE, "tile_exact": True, "probe_failed": []}
    entry["grid_gain"] = auto.GRID_GAIN
    cache.write_text(json.dumps({kind: {**entry, "versions": auto._versions()}}))
    engine = make_engine(network, "auto", cache_file=cache)
    assert isinstance(engine, TorchEngine) and engine.form == "sub-pixel"
    assert isinstance(engine.model.deconv, SubpixelConv2d)
    _check(engine, network, _lr(), "float32")
    clear_engine_cache()


def test_auto_choice_names_the_remembered_choice_and_make_engine_builds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A choice handed to another process by name runs there in the same form."""
    clear_engine_cache()
    network = _network("fsrcnn", 2)
    kind = f"{base._network_kind(network)}/float32/t{torch.get_num_threads()}"
    cache = tmp_path / "engines.json"
    entry = {"engine": "torch+subpixel", "milliseconds": {}, "cores": base._cores()}
    entry["threads"] = torch.get_num_threads()
    entry |= {"size": auto.CALIBRATION_SIZE, "tile_exact": True, "probe_failed": []}
    entry["grid_gain"] = auto.GRID_GAIN
    cache.write_text(json.dumps({kind: {**entry, "versions": auto._versions()}}))
    monkeypatch.setattr(auto, "calibrate", _no_calibration)
    assert auto.auto_choice(network, "float32", cache_file=cache) == "torch+subpixel"
    engine = make_engine(network, "torch+subpixel", precision="float32")
    assert isinstance(engine, TorchEngine) and engine.form == "sub-pixel"
    assert isinstance(engine.model.deconv, SubpixelConv2d)
    _check(engine, network, _lr(), "float32")
    with pytest.raises(EngineError, match="sub-pixel form"):
        make_engine(_network("espcn", 2), "torch+subpixel", precision="float32")
    clear_engine_cache()


def test_auto_choice_measures_once_and_make_engine_auto_agrees(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_engine_cache()
    monkeypatch.setitem(AUTO_ENGINES, "float32", ("torch", "torch-channels-last"))
    network = _network("espcn", 2)
    cache = tmp_path / "engines.json"
    choice = auto.auto_choice(network, "float32", threads=1, cache_file=cache)
    (entry,) = json.loads(cache.read_text()).values()
    assert choice == entry["engine"] and entry["threads"] == 1
    clear_engine_cache()  # a new process reads it, measures nothing
    monkeypatch.setattr(auto, "calibrate", _no_calibration)
    engine = make_engine(network, "auto", precision="float32", threads=1, cache_file=cache)
    grid = "+grid" if isinstance(engine, GridEngine) else ""  # torch alone: may be on a grid
    assert engine.name + grid == choice
    clear_engine_cache()


def test_a_choice_calibrated_at_another_size_or_not_probed_is_measured_again(
    tmp_path: Path,
) -> None:
    clear_engine_cache()
    network = _network("espcn", 2)
    kind = f"{base._network_kind(network)}/float32/t{torch.get_num_threads()}"
    entry = {"engine": "torch", "milliseconds": {}, "cores": base._cores()}
    entry |= {"threads": torch.get_num_threads(), "versions": auto._versions(), "size": 256}
    entry |= {"tile_exact": True, "probe_failed": [], "grid_gain": auto.GRID_GAIN}
    cache = tmp_path / "engines.json"
    cache.write_text(json.dumps({kind: entry}))
    assert auto._cached_choice(cache, kind) is None
    entry["size"] = auto.CALIBRATION_SIZE
    cache.write_text(json.dumps({kind: entry}))
    assert auto._cached_choice(cache, kind) == "torch"
    # Written before the grid (no grid_gain) or the tile probe: measured again.
    for key in ("tile_exact", "probe_failed", "grid_gain"):
        cache.write_text(json.dumps({kind: {k: v for k, v in entry.items() if k != key}}))
        assert auto._cached_choice(cache, kind) is None


_VERSIONS = """
import sys
from subpixel.engines import auto
print(auto._versions())
print(sorted(m for m in ("onnxruntime", "openvino") if m in sys.modules))
"""


def test_a_cached_choice_is_keyed_without_importing_the_engines() -> None:
    # The key of a cached choice names the engines' versions; importing both to read them
    # cost a few tenths of a second a process, for an engine the choice may not use.
    done = subprocess.run(
        [sys.executable, "-c", _VERSIONS], capture_output=True, text=True, check=True, timeout=300
    )
    versions, imported = done.stdout.strip().splitlines()
    assert imported == "[]"
    for package in ("onnxruntime", "openvino"):
        try:
            installed = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            installed = "none"
        assert f"{package} {installed}" in versions


def _no_calibration(*args: object, **kwargs: object) -> auto.Calibration:
    raise AssertionError("calibrated although a choice was cached")


def test_choices_are_kept_per_thread_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Alternating thread counts reads each one's choice instead of measuring again."""
    clear_engine_cache()
    monkeypatch.setitem(AUTO_ENGINES, "float32", ("torch", "torch-channels-last"))
    network = _network("espcn", 2)
    cache = tmp_path / "engines.json"
    for threads in (1, 2):
        make_engine(network, "auto", precision="float32", threads=threads, cache_file=cache)
    kind = f"{base._network_kind(network)}/float32"
    entries = json.loads(cache.read_text())
    assert sorted(entries) == [f"{kind}/t1", f"{kind}/t2"]
    assert [entries[f"{kind}/t{n}"]["threads"] for n in (1, 2)] == [1, 2]
    clear_engine_cache()  # a new process
    monkeypatch.setattr(auto, "calibrate", _no_calibration)
    for threads in (1, 2, 1):
        make_engine(network, "auto", precision="float32", threads=threads, cache_file=cache)
    clear_engine_cache()


def test_an_entry_keyed_without_threads_is_measured_again_and_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Such entries predate the tile probe: the choice is made again, and the new entry
    replaces the old one of the same thread count only."""
    clear_engine_cache()
    monkeypatch.setitem(AUTO_ENGINES, "float32", ("torch", "torch-channels-last"))
    network = _network("espcn", 2)
    older = f"{base._network_kind(network)}/float32"
    entry = {"engine": "torch-channels-last", "milliseconds": {}, "cores": base._cores()}
    entry |= {"threads": 1, "versions": auto._versions(), "size": auto.CALIBRATION_SIZE}
    cache = tmp_path / "engines.json"
    cache.write_text(json.dumps({older: entry}))
    make_engine(network, "auto", precision="float32", threads=2, cache_file=cache)
    assert sorted(json.loads(cache.read_text())) == [older, f"{older}/t2"]
    clear_engine_cache()
    make_engine(network, "auto", precision="float32", threads=1, cache_file=cache)
    entries = json.loads(cache.read_text())
    assert sorted(entries) == [f"{older}/t1", f"{older}/t2"]
    assert isinstance(entries[f"{older}/t1"]["probe_failed"], list)
    clear_engine_cache()


class _NumpyConv:
    """A 3x3 convolution to 4 channels and a x2 pixel shuffle, in float64 numpy, each output
    summed in one fixed order whatever the input's shape: tile-exact by construction.
    ``wobble`` adds ``wobble * (H % 2)``, an output that depends on the input's shape as
    shape-chosen kernels do."""

    name, precision, form = "numpy", "float32", ""  # the Engine protocol's facts

    def __init__(self, network: nn.Sequential, wobble: float = 0.0) -> None:
        conv = network[0]
        self.weight = conv.weight.detach().double().numpy()  # (4, 1, 3, 3)
        self.bias = conv.bias.detach().double().numpy()
        self.wobble = wobble

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        b, _, h, w = lr.shape
        padded = np.pad(lr[:, 0].astype(np.float64), ((0, 0), (1, 1), (1, 1)))
        out = np.zeros((b, 4, h, w))
        for k in range(4):
            out[:, k] = self.bias[k]
            for dy in range(3):
                for dx in range(3):
                    out[:, k] += self.weight[k, 0, dy, dx] * padded[:, dy : dy + h, dx : dx + w]
        sr = out.reshape(b, 1, 2, 2, h, w).transpose(0, 1, 4, 2, 5, 3).reshape(b, 1, 2 * h, 2 * w)
        return sr.astype(np.float32) + np.float32(self.wobble * (h % 2))


def _numpy_conv_network() -> nn.Sequential:
    network = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.PixelShuffle(2))
    with torch.no_grad():
        network[0].weight.copy_(
            torch.randn((4, 1, 3, 3), generator=torch.Generator().manual_seed(0))
        )
    return network.eval()


def test_the_tile_probe_rejects_an_engine_whose_output_depends_on_the_shape(
    caplog: pytest.LogCaptureFixture,
) -> None:
    network = _numpy_conv_network()
    exact, shaky = _NumpyConv(network), _NumpyConv(network, wobble=1e-7)
    lr = _lr(9, 11)
    np.testing.assert_allclose(exact(lr), _eager(network, lr), atol=1e-5)  # it is the network
    assert tile_mismatches(exact, network, 1) == 0
    # Odd crops (tiles of 17, 37 and 97 plus a margin of 1) differ from the whole (192, even).
    assert tile_mismatches(shaky, network, 1) > 0

    forms = {"": network}
    calibration = auto.Calibration("k", {"shaky": 1.0, "exact": 1.2, "slower": 3.0})
    candidates: dict[str, Engine] = {"shaky": shaky, "exact": exact, "slower": shaky}
    probe = auto._probe_tiles(candidates, forms, calibration, 1)
    assert (probe.choice, probe.exact, probe.failed) == ("exact", True, ("shaky",))
    # None exact: the fastest on its fixed grid (test_grid.py), where it repeats itself.
    calibration = auto.Calibration("k", {"shaky": 1.0, "slower": 3.0})
    with caplog.at_level("WARNING", logger="subpixel.engines.auto"):
        probe = auto._probe_tiles(candidates, forms, calibration, 1)
    assert (probe.choice, probe.exact, probe.failed) == ("shaky+grid", True, ("shaky",))
    assert "may differ along tile seams" not in caplog.text


def test_auto_keeps_the_fastest_engine_whose_tiles_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The choice and what the probe found are recorded, and read back without probing."""
    clear_engine_cache()
    network = _numpy_conv_network()
    built = {"torch": _NumpyConv(network, wobble=1e-7), "torch-channels-last": _NumpyConv(network)}
    monkeypatch.setitem(AUTO_ENGINES, "float32", tuple(built))
    monkeypatch.setattr(auto, "_build", lambda _model, name, *_args: built[name])
    timings = {"torch": 1.0, "torch-channels-last": 1.2}  # the shaky one a little faster
    monkeypatch.setattr(auto, "calibrate", lambda _e, _c, kind: auto.Calibration(kind, timings))
    cache = tmp_path / "engines.json"
    engine = make_engine(network, "auto", precision="float32", cache_file=cache)
    assert engine is built["torch-channels-last"]
    (entry,) = json.loads(cache.read_text()).values()
    assert entry["engine"] == "torch-channels-last" and entry["tile_exact"] is True
    assert entry["probe_failed"] == ["torch"] and entry["probe_ms"] >= 0
    clear_engine_cache()
    monkeypatch.setattr(auto, "calibrate", _no_calibration)
    monkeypatch.setattr(auto, "tile_mismatches", _no_calibration)
    assert make_engine(network, "auto", precision="float32", cache_file=cache) is engine
    clear_engine_cache()


def test_the_automatic_engine_of_a_bundled_model_is_tile_exact() -> None:
    """On the machine the suite runs on, with its default precision and threads: FSRCNN x3,
    where OpenVINO and eager torch tiles differed from the whole on 2 Zen 4 cores."""
    clear_engine_cache()
    upscaler = subpixel.load_model("fsrcnn", scale=3)  # the defaults: auto engine and precision
    engine = upscaler.engine_for(upscaler.precision_for(8))
    if isinstance(engine, GridEngine):  # a faster engine on its fixed grid of tiles
        assert grid_mismatches(engine, 1) == 0, engine.name
    else:
        assert tile_mismatches(engine, upscaler.network, 1) == 0, engine.name
    # And so the image pipeline's tiles equal its whole image, on another size too (larger
    # than a grid tile: 450x300).
    cat = np.asarray(Image.open(ROOT / "examples" / "cat.png").convert("RGB"))
    rgb = np.ascontiguousarray(np.tile(cat, (2, 2, 1)))
    whole = upscaler(rgb)
    for tile in (17, 64):
        np.testing.assert_array_equal(upscaler(rgb, tile=tile), whole)
    clear_engine_cache()


@pytest.mark.skipif(not HAS_OPENVINO, reason="onnx, onnxscript or openvino missing")
def test_a_later_process_takes_the_export_and_compiled_model_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subpixel.export

    network = _network("fsrcnn-s", 2)
    cache = tmp_path / "engines.json"
    monkeypatch.setattr(exports, "_EXPORTS", {})
    make_engine(network, "openvino", precision="float32", cache_file=cache)
    (stored,) = (tmp_path / "onnx").glob("*.onnx")
    assert subpixel.export.read_card(stored.read_bytes()).architecture == "fsrcnn-s"
    assert any((tmp_path / "openvino" / "float32").iterdir())  # OpenVINO's compiled model

    def no_export(model: nn.Module, **kwargs: object) -> bytes:
        raise AssertionError("exported although the export was cached")

    monkeypatch.setattr(exports, "_EXPORTS", {})  # a new process
    monkeypatch.setattr(subpixel.export, "onnx_bytes", no_export)
    _check(
        make_engine(network, "openvino", precision="float32", cache_file=cache),
        network,
        _lr(),
        "float32",
    )
    if HAS_ORT:
        engine = make_engine(network, "onnxruntime", cache_file=cache)
        _check(engine, network, _lr(), "float32")
    # Other weights are another export.
    other = copy.deepcopy(network)
    with torch.no_grad():
        other.deconv.bias.fill_(0.5)  # type: ignore[union-attr]
    with pytest.raises(EngineError, match="exported although"):  # openvino wraps it
        make_engine(other, "openvino", precision="float32", cache_file=cache)


def test_engine_module_wraps_all_but_plain_eager_torch() -> None:
    clear_engine_cache()
    network = _network("espcn", 2)
    assert engine_module(network, "torch") is network
    wrapped = engine_module(network, "torch-channels-last")
    assert isinstance(wrapped, EngineModule) and wrapped.network is network
    assert wrapped.card == network.card
    rgb = np.random.default_rng(0).integers(0, 256, (11, 13, 3), dtype=np.uint8)
    np.testing.assert_allclose(
        subpixel.upscale_image(rgb, wrapped), subpixel.upscale_image(rgb, network), atol=1
    )
    auto = engine_module(network)
    assert subpixel.upscale_image(rgb, auto).shape == (22, 26, 3)
    clear_engine_cache()


@needs_ort
def test_exports_are_reused_until_the_weights_change(monkeypatch: pytest.MonkeyPatch) -> None:
    import subpixel.export

    calls = []
    original = subpixel.export.onnx_bytes

    def counting(model: nn.Module, **kwargs: object) -> bytes:
        calls.append(model)
        return original(model, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(subpixel.export, "onnx_bytes", counting)
    network = models.build("fsrcnn-s", scale=4).eval()
    first = make_engine(network, "onnxruntime")
    make_engine(network, "onnxruntime")
    assert len(calls) == 1
    with torch.no_grad():
        network.deconv.bias.fill_(0.5)  # type: ignore[union-attr]
    second = make_engine(network, "onnxruntime")
    assert len(calls) == 2
    lr = _lr()
    assert np.abs(second(lr) - first(lr)).min() > 0.4  # the new weights are the ones run
    _check(second, network, lr, "float32")


# --------------------------------------------------------------------------- #
# The fast pipeline arithmetic
# --------------------------------------------------------------------------- #


@pytest.fixture(params=[True, False], ids=["opencv", "fallback"])
def opencv(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    if request.param and not HAS_CV2:
        pytest.skip("OpenCV is not installed")
    monkeypatch.setattr(fastpath, "HAVE_OPENCV", request.param)
    return bool(request.param)


@pytest.mark.parametrize("scale", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("shape", [(1, 1), (2, 7), (9, 13), (16, 5)])
def test_bicubic_by_phases_is_matlab_bicubic_in_float64(scale: int, shape: tuple[int, int]) -> None:
    image = np.random.default_rng(scale).random(shape)
    ours = models.Bicubic(scale)(torch.from_numpy(image)[None, None])[0, 0].numpy()
    assert ours.dtype == np.float64
    np.testing.assert_allclose(ours, imresize(image, scale=scale), rtol=0, atol=1e-12)
    assert phase_weights(scale).sum(axis=1) == pytest.approx(np.ones(scale), abs=1e-15)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_fast_bicubic_planes_match_matlab_bicubic(opencv: bool, scale: int) -> None:
    planes = np.random.default_rng(scale).random((2, 7, 12)).astype(np.float32)
    for plane, out in zip(planes, fastpath.bicubic_planes(planes, scale), strict=True):
        assert out.dtype == np.float32 and out.shape == (7 * scale, 12 * scale)
        np.testing.assert_allclose(out, imresize(plane.astype(np.float64), scale=scale), atol=2e-6)


@pytest.mark.parametrize("peak", [255.0, 65535.0, 1.0])
def test_split_and_finish_are_the_colour_module_maths(opencv: bool, peak: float) -> None:
    rng = np.random.default_rng(1)
    values = rng.integers(0, int(peak) + 1, (6, 7, 3)) if peak > 1 else rng.random((6, 7, 3))
    rgb = values.astype({255.0: np.uint8, 65535.0: np.uint16, 1.0: np.float32}[peak])
    ycbcr = rgb_to_ycbcr(rgb / peak)
    y, chroma = fastpath.split_luma(rgb, peak, out_peak=255.0)
    np.testing.assert_allclose(y, ycbcr[..., 0], atol=1e-6)
    # Chroma terms plus the gains times Y give RGB back (here without any upscaling).
    back = fastpath.finish([y] * 3, fastpath.luma_gains(255.0), chroma, np.float32)
    np.testing.assert_allclose(back, 255.0 * ycbcr_to_rgb(ycbcr), atol=2e-3)
    rounded = fastpath.finish([y] * 3, fastpath.luma_gains(255.0), chroma, np.uint8)
    reference = np.clip(np.rint(255.0 * ycbcr_to_rgb(ycbcr)), 0, 255)
    assert rounded.dtype == np.uint8 and np.abs(rounded - reference).max() <= 1


def test_finish_rounds_half_to_even_and_saturates(opencv: bool) -> None:
    plane = np.array([[0.5, 1.5, 2.5, -0.6, 255.4, 255.6, 70000.0]], np.float32)
    for dtype, top in ((np.uint8, 255), (np.uint16, 65535)):
        out = fastpath.finish([plane], [1.0], [0.0], dtype)[..., 0]
        assert out.dtype == dtype
        np.testing.assert_array_equal(out, np.clip(np.rint(plane), 0, top))


def _plain_pipeline(rgb: np.ndarray, network: nn.Module, scale: int) -> np.ndarray:
    """The upscaling as the README describes it, in float64, one step at a time."""
    ycbcr = rgb_to_ycbcr(rgb / 255.0)
    with torch.no_grad():
        y = network(torch.from_numpy(ycbcr[..., 0].astype(np.float32))[None, None])[0, 0]
    chroma = [imresize(ycbcr[..., c], scale=scale) for c in (1, 2)]
    sr = ycbcr_to_rgb(np.dstack([y.double().numpy(), *chroma]))
    return np.clip(np.rint(255.0 * np.clip(sr, 0, 1)), 0, 255)


def test_the_image_pipeline_matches_the_plain_maths(opencv: bool) -> None:
    network = _network("espcn", 3)
    rgb = np.random.default_rng(2).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    ours = subpixel.upscale_image(rgb, network)
    reference = _plain_pipeline(rgb, network, 3)
    assert ours.dtype == np.uint8 and np.abs(ours - reference).max() <= 1
    assert (ours != reference).mean() < 1e-3  # only float rounding at a .5 boundary


def test_opencv_and_the_fallback_give_the_same_images(monkeypatch: pytest.MonkeyPatch) -> None:
    if not HAS_CV2:
        pytest.skip("OpenCV is not installed")
    network = _network("fsrcnn", 2)
    rgba = np.random.default_rng(3).integers(0, 256, (15, 12, 4), dtype=np.uint8)
    sixteen = np.random.default_rng(4).integers(0, 65536, (9, 8, 3), dtype=np.uint16)
    results = {}
    for flag in (True, False):
        monkeypatch.setattr(fastpath, "HAVE_OPENCV", flag)
        results[flag] = [
            subpixel.upscale_image(rgba, network).astype(int),
            subpixel.upscale_image(rgba, network, alpha="network").astype(int),
            subpixel.upscale_image(sixteen, network).astype(int),
            subpixel.upscale_image(rgba[..., 0], network).astype(int),
        ]
    for with_cv2, without in zip(results[True], results[False], strict=True):
        assert with_cv2.shape == without.shape and np.abs(with_cv2 - without).max() <= 1


@pytest.mark.parametrize("channels", [3, 4])
def test_tiles_rounded_in_place_equal_the_whole_image(opencv: bool, channels: int) -> None:
    network = _network("espcn", 2)
    image = np.random.default_rng(5).integers(0, 256, (21, 26, channels), dtype=np.uint8)
    whole = subpixel.upscale_image(image, network)
    np.testing.assert_array_equal(subpixel.upscale_image(image, network, tile=8), whole)
    pil = subpixel.upscale_image(Image.fromarray(image), network, tile=10)
    np.testing.assert_array_equal(np.asarray(pil), whole)


def test_float_arrays_keep_float_and_are_clipped(opencv: bool) -> None:
    network = _network("espcn", 2)
    planes = np.random.default_rng(6).random((5, 6, 3)).astype(np.float32)
    out = upscale_array(planes, network)
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
    tiled = upscale_array(planes, network, tile=3)
    np.testing.assert_allclose(tiled, out, atol=1e-5)


# --------------------------------------------------------------------------- #
# The speed benchmark
# --------------------------------------------------------------------------- #


def _speed_module() -> ModuleType:
    name = "subpixel_speed_benchmark"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "speed.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@needs_ort
def test_speed_benchmark_quick_mode_writes_its_table_and_plot(tmp_path: Path) -> None:
    command = [sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--quick"]
    command += ["--networks", "fsrcnn-s-x3", "--workloads", "64x48", "--runs", "1"]
    command += ["--out", str(tmp_path), "--gpu", "cpu", "--gpu-batch", "2"]  # its GPU section
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    records = json.loads((tmp_path / "speed.json").read_text())["records"]
    labels = {r["label"] for r in records}
    assert {"torch float32", "onnxruntime float32 sub-pixel"} <= labels
    if native_bfloat16():
        assert {"torch-channels-last bfloat16", "torch-channels-last mixed"} <= labels
    else:  # emulated bfloat16 is never chosen, so not timed
        assert not any("bfloat16" in label for label in labels)
        assert "no native bfloat16" in (tmp_path / "speed.md").read_text()
    assert any(r["label"].startswith("subpixel default (auto: ") for r in records)
    # The CLI and the Python API on the same files (the benchmark checks their pixels agree).
    files = {r["label"] for r in records if r["path"] == "BMP files, per image"}
    assert files == {"subpixel upscale (the CLI)", "Python: load_model, upscale_image, save"}
    assert "fsrcnn-s-x3, BMP files, per image: Python" in (tmp_path / "speed.md").read_text()
    if HAS_CV2:
        assert "OpenCV bicubic" in labels
    assert all(r["ms"] > 0 and r["lr_size"] == [64, 48] for r in records)
    table = (tmp_path / "speed.md").read_text()
    assert "GFLOP/s fp32" in table and "| fsrcnn-s-x3 | 64x48 | RGB end to end |" in table
    # The GPU section, run on the CPU here: every row at batch 1 and 2, network-alone rows
    # with their share of the device's matmul peak.
    gpu = json.loads((tmp_path / "speed.json").read_text())["gpu"]
    whats = {(r["what"], r["precision"], r["batch"]) for r in gpu["rows"]}
    assert whats == {
        (what, precision, batch)
        for what, precision in [
            ("default (upscale_batch)", subpixel.load_model("fsrcnn-s", scale=3).precision_for(8)),
            ("device pipeline, host to host", "float32"),
            ("network alone", "float32"),
        ]
        for batch in (1, 2)
    }
    assert gpu["peaks"]["float32"] > 0 and all(r["ms_per_frame"] > 0 for r in gpu["rows"])
    assert "| fsrcnn-s-x3 | 64x48 | network alone | float32 | 2 |" in table
    if _has("matplotlib"):
        assert (tmp_path / "speed.png").stat().st_size > 1000


def test_speed_benchmark_measures_the_bf16_loss_per_arithmetic(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    rng = np.random.default_rng(7)
    for index in range(2):
        image = rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)
        Image.fromarray(image).resize((60, 48)).save(tmp_path / f"{index}.png")
    speed = _speed_module()
    monkeypatch.setattr(speed, "QUALITY_SETS", (str(tmp_path),))
    trained = copy.deepcopy(_network("espcn", 2))
    trained.card = dataclasses.replace(trained.card, metrics={"Set5": {"psnr": 30.0}})
    untrained = models.build("espcn", scale=2)
    describe(untrained, "espcn")
    engines = ["torch", "torch-compile", "onnxruntime"]
    losses = speed.weights_psnr_losses({"trained": trained, "random": untrained}, engines)
    # One autocast, no fp32-only engine; bfloat16 and mixed.
    assert list(losses) == [("trained", "torch-channels-last", p) for p in ("bfloat16", "mixed")]
    loss = losses["trained", "torch-channels-last", "bfloat16"][tmp_path.name]
    assert 0 < abs(loss) < 0.5  # bfloat16 moves a few pixels by a level


def test_green_chroma_term_follows_from_red_and_blue() -> None:
    rgb = np.random.default_rng(5).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    for out_peak in (255.0, 65535.0, 1.0):
        _, (red, green, blue) = fastpath.split_luma(rgb, 255.0, out_peak)
        a, b, c = fastpath.green_from_red_blue(out_peak)
        np.testing.assert_allclose(a * red + b * blue + c, green, atol=3e-5 * out_peak)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_rgb_from_luma_is_finish_of_bicubic_chroma(
    opencv: bool, threads: int, dtype: type[np.generic]
) -> None:
    """Banded, on several threads, with green's term derived: the plain steps' result."""
    scale, out_peak = 3, 255.0 if dtype == np.uint8 else 65535.0 if dtype == np.uint16 else 1.0
    rng = np.random.default_rng(threads)
    rgb = rng.integers(0, 256, (150, 37, 3), dtype=np.uint8)  # more rows than one band
    y, chroma = fastpath.split_luma(rgb, 255.0, out_peak)
    y_sr = fastpath.bicubic_planes([y], scale)[0] + rng.normal(0, 0.02, (450, 111)).astype(
        np.float32
    )
    cv2 = fastpath.cv2  # None without OpenCV: the fallback has no bands
    before = cv2.getNumThreads() if cv2 is not None else 0
    if cv2 is not None:
        cv2.setNumThreads(threads)
    try:
        ours = fastpath.rgb_from_luma(y_sr, chroma, scale, out_peak, dtype)
    finally:
        if cv2 is not None:
            cv2.setNumThreads(before)
    gains = fastpath.luma_gains(out_peak)
    plain = fastpath.finish([y_sr] * 3, gains, fastpath.bicubic_planes(chroma, scale), dtype)
    assert ours.dtype == np.dtype(dtype) and ours.shape == (450, 111, 3)
    if dtype == np.float32:
        np.testing.assert_allclose(ours, plain, atol=2e-6)
    else:
        difference = np.abs(ours.astype(int) - plain)
        assert difference.max() <= 1 and (difference > 0).mean() < 1e-3


def _rgb_from_luma_sum(threads: int) -> float:
    fastpath.cv2.setNumThreads(threads)
    y, chroma = fastpath.split_luma(np.full((130, 9, 3), 99, np.uint8), 255.0, 255.0)
    return float(
        fastpath.rgb_from_luma(
            np.kron(y, np.ones((2, 2), np.float32)), chroma, 2, 255.0, np.float32
        ).sum()
    )


@needs_cv2
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_rgb_from_luma_runs_in_a_forked_child() -> None:
    """The band threads are per process: a child forked after the parent used them works."""
    before = fastpath.cv2.getNumThreads()
    try:
        expected = _rgb_from_luma_sum(2)  # the parent's pool exists now
        with multiprocessing.get_context("fork").Pool(1) as pool:
            assert pool.apply_async(_rgb_from_luma_sum, (2,)).get(timeout=60) == expected
    finally:
        fastpath.cv2.setNumThreads(before)
