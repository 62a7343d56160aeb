"""ONNX export (subpixel.export) and the engines that run it (subpixel.engines).

Exports take about a second each, so every network is exported once per (name, scale,
channels) and the bytes are shared between tests. onnx, onnxscript, onnxruntime and OpenCV
are optional: tests that need one skip with a reason when it is missing.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from subpixel import models
from subpixel.engines import (
    AUTO_ENGINES,
    ENGINES,
    Engine,
    EngineError,
    OnnxRuntimeEngine,
    TorchEngine,
    clear_engine_cache,
    make_engine,
)
from subpixel.errors import SubpixelError
from subpixel.export import ExportError, export_onnx, onnx_bytes, read_card
from subpixel.models import Bicubic
from subpixel.weights import CARD_KEY, ModelCard, describe

# "fsrcnn+subpixel" is FSRCNN converted by models.fsrcnn_to_subpixel; "ecbsr+collapsed" is
# the ESPCN (PReLU, global residual) a re-parameterised network collapses into.
NETWORKS = ["espcn", "espcn-7", "fsrcnn", "fsrcnn+subpixel", "fsrcnn-s", "srcnn", "srcnn-915"]
# Every network at x3; at x2 and x4 those whose exported geometry depends on the scale
# (shuffle, deconvolution output padding, sub-pixel pad and crop); bicubic's phase weights at
# x2 (every scale is checked against Bicubic in torch below); one RGB network.
CASES = [(name, 3, 1) for name in [*NETWORKS, "bicubic"]]
CASES += [(name, s, 1) for s in (2, 4) for name in ("espcn", "fsrcnn", "fsrcnn+subpixel")]
CASES += [("bicubic", 2, 1), ("espcn", 2, 3)]
CASES += [("ecbsr+collapsed", 3, 1), ("ecbsr+collapsed", 2, 3), ("sesr+collapsed", 4, 1)]
SIZES = [(1, 9, 11), (2, 16, 5), (1, 3, 1)]  # (B, H, W); none is export.TRACE_SIZE


def _require_onnx() -> None:
    pytest.importorskip("onnx", reason="ONNX export needs onnx")
    pytest.importorskip("onnxscript", reason="torch's ONNX exporter needs onnxscript")


def _ort() -> Any:
    _require_onnx()
    return pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")


def _randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Weights of unit-scale outputs, so a 1e-5 agreement means something.

    Fresh FSRCNN has a N(0, 0.001) deconvolution and zero biases: its outputs are ~1e-3, and
    any export would match them to 1e-5.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            fan_in = parameter[0].numel() if parameter.dim() > 1 else 10
            noise = torch.randn(parameter.shape, generator=generator) / math.sqrt(fan_in)
            parameter.copy_(noise)
    return model.eval()


@functools.cache
def _network(name: str, scale: int, channels: int) -> nn.Module:
    architecture, _, form = name.partition("+")
    net = models.build(architecture, scale=scale, channels=channels)
    if form == "collapsed":  # randomised collapsed: the branches would sum to outputs ~30
        return _randomise(net.collapse())  # type: ignore[operator]
    net = _randomise(net)
    return models.fsrcnn_to_subpixel(net) if form == "subpixel" else net  # type: ignore[arg-type]


@functools.cache
def _exported(name: str, scale: int, channels: int) -> bytes:
    return onnx_bytes(_network(name, scale, channels))


def _reference(model: nn.Module, lr: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(lr)).numpy()


def _inputs(channels: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((b, channels, h, w), dtype=np.float32) for b, h, w in SIZES]


# --------------------------------------------------------------------------- #
# Bicubic, rewritten for export
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("scale", [1, 2, 3, 4, 16])
@pytest.mark.parametrize("channels", [1, 3])
def test_exportable_bicubic_equals_matlab_bicubic(scale: int, channels: int) -> None:
    # Bicubic gathers with clamped indices from the MATLAB contributions; the exportable
    # form pads and convolves. Sizes from 1 pixel (all taps clamped) up.
    for h, w in [(1, 1), (1, 6), (2, 3), (5, 8), (12, 12)]:
        lr = torch.rand(2, channels, h, w, dtype=torch.float64).float()
        expected = Bicubic(scale, channels)(lr)
        got = models.BicubicConvolution(scale, channels)(lr)
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- #
# Export and run in onnxruntime
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(("name", "scale", "channels"), CASES)
def test_export_runs_in_onnxruntime_like_pytorch(name: str, scale: int, channels: int) -> None:
    ort = _ort()
    session = ort.InferenceSession(
        _exported(name, scale, channels), providers=["CPUExecutionProvider"]
    )
    model = _network(name, scale, channels)
    # The export swapped SRCNN's Bicubic for its exportable form in a copy, not in the model.
    assert isinstance(getattr(model, "upscale", Bicubic(scale)), Bicubic)
    for lr in _inputs(channels):
        (sr,) = session.run(None, {"lr": lr})
        expected = _reference(model, lr)
        assert (
            sr.shape == expected.shape == (*lr.shape[:2], scale * lr.shape[2], scale * lr.shape[3])
        )
        np.testing.assert_allclose(sr, expected, atol=1e-5, rtol=0)


def test_dynamic_export_has_symbolic_sizes_and_runs_at_any_size() -> None:
    ort = _ort()
    import onnx

    model = _network("fsrcnn+subpixel", 3, 1)
    data = _exported("fsrcnn+subpixel", 3, 1)
    graph = onnx.load_from_string(data).graph
    assert [i.name for i in graph.input] == ["lr"] and [o.name for o in graph.output] == ["sr"]
    for value in (graph.input[0], graph.output[0]):
        dims = value.type.tensor_type.shape.dim
        assert [d.HasField("dim_param") for d in dims] == [True, False, True, True]
        assert dims[1].dim_value == 1
    assert graph.initializer and all(not t.external_data for t in graph.initializer)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    for h, w in [(7, 30), (21, 4), (40, 40)]:
        lr = np.random.default_rng(h).random((1, 1, h, w), dtype=np.float32)
        (sr,) = session.run(None, {"lr": lr})
        assert sr.shape == (1, 1, 3 * h, 3 * w)
        np.testing.assert_allclose(sr, _reference(model, lr), atol=1e-5, rtol=0)


def test_static_export_is_fixed_to_the_traced_size() -> None:
    ort = _ort()
    data = onnx_bytes(_network("espcn", 2, 1), dynamic=False, trace_size=(1, 8, 12))
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    (sr,) = session.run(None, {"lr": np.zeros((1, 1, 8, 12), np.float32)})
    assert sr.shape == (1, 1, 16, 24)
    with pytest.raises(Exception, match="dimensions"):
        session.run(None, {"lr": np.zeros((1, 1, 9, 9), np.float32)})


# --------------------------------------------------------------------------- #
# Model card, files, errors
# --------------------------------------------------------------------------- #


def test_card_is_stored_in_the_metadata(tmp_path: Path) -> None:
    _require_onnx()
    import onnx

    model = models.build("espcn", scale=4)
    card = describe(model, "espcn", training={"data": "T91", "iterations": 10})
    path = export_onnx(model, tmp_path / "espcn_x4.onnx")
    metadata = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(metadata[CARD_KEY])["training"] == {"data": "T91", "iterations": 10}
    assert read_card(path) == card
    assert read_card(path.read_bytes()) == card


def test_a_bare_network_is_described_by_its_class_and_config() -> None:
    _require_onnx()
    card = read_card(_exported("espcn-7", 3, 1))
    assert (card.architecture, card.scale, card.channels) == ("espcn", 3, 1)
    rebuilt = card.build()  # the card alone rebuilds the same network shape
    assert sum(p.numel() for p in rebuilt.parameters()) == sum(
        p.numel() for p in _network("espcn-7", 3, 1).parameters()
    )
    assert read_card(_exported("bicubic", 2, 1)).architecture == "bicubic"


class _DataDependent(nn.Module):
    """Branches on pixel values: torch.export cannot trace that into a graph."""

    def forward(self, lr: Tensor) -> Tensor:
        if lr.sum() > 0:
            return lr.repeat_interleave(2, -1).repeat_interleave(2, -2)
        return torch.zeros(*lr.shape[:2], 2 * lr.shape[2], 2 * lr.shape[3])


def test_failed_export_writes_nothing_and_keeps_an_existing_file(tmp_path: Path) -> None:
    _require_onnx()
    card = ModelCard("bicubic", 2, 1)
    path = tmp_path / "out.onnx"
    with pytest.raises(ExportError, match="cannot export _DataDependent"):
        export_onnx(_DataDependent(), path, card=card)
    assert list(tmp_path.iterdir()) == []
    path.write_bytes(b"old")
    with pytest.raises(ExportError):
        export_onnx(_DataDependent(), path, card=card)
    assert path.read_bytes() == b"old" and list(tmp_path.iterdir()) == [path]


def test_a_failed_write_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _require_onnx()
    _exported("espcn", 3, 1)  # warm the cache; the export itself is tested elsewhere

    def refuse(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(ExportError, match=r"cannot write .*espcn\.onnx: disk full"):
        export_onnx(_network("espcn", 3, 1), tmp_path / "espcn.onnx")
    assert list(tmp_path.iterdir()) == []


def test_unknown_module_without_a_card_is_refused_clearly() -> None:
    with pytest.raises(ExportError, match="pass card="):
        onnx_bytes(nn.Conv2d(1, 1, 3))


def test_too_old_opset_is_refused() -> None:
    with pytest.raises(ExportError, match="opset"):
        onnx_bytes(models.build("espcn", scale=2), opset=13)


def test_read_card_rejects_other_files(tmp_path: Path) -> None:
    _require_onnx()
    import onnx

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a protobuf\xff" * 3)
    with pytest.raises(ExportError):
        read_card(junk)
    proto = onnx.load_from_string(_exported("espcn", 3, 1))
    del proto.metadata_props[:]
    with pytest.raises(ExportError, match=r"no subpixel\.card"):
        read_card(proto.SerializeToString())


# --------------------------------------------------------------------------- #
# OpenCV dnn
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name", ["espcn", "fsrcnn", "fsrcnn+subpixel"])
def test_export_runs_in_opencv_dnn(name: str) -> None:
    _require_onnx()
    cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed")
    net = cv2.dnn.readNetFromONNX(np.frombuffer(_exported(name, 3, 1), np.uint8))
    model = _network(name, 3, 1)
    for lr in _inputs(1)[:2]:
        net.setInput(lr, "lr")
        sr = net.forward()
        np.testing.assert_allclose(sr, _reference(model, lr), atol=1e-4, rtol=0)


# --------------------------------------------------------------------------- #
# Engines
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name", ["espcn", "fsrcnn", "ecbsr+collapsed"])
def test_engines_agree_with_pytorch(name: str, tmp_path: Path) -> None:
    model = _network(name, 3, 1)
    engines: list[Engine] = [TorchEngine(model), TorchEngine(model, channels_last=True)]
    if _has_onnx_stack():
        if name == "espcn":  # exports the model itself; the others reuse the shared export
            engines.append(OnnxRuntimeEngine(model, threads=1))
        path = tmp_path / "net.onnx"
        path.write_bytes(_exported(name, 3, 1))
        engines.append(OnnxRuntimeEngine.from_onnx(path))
    for lr in _inputs(1):
        expected = _reference(model, lr)
        for engine in engines:
            sr = engine(lr)
            assert sr.dtype == np.float32 and sr.shape == expected.shape, engine.name
            np.testing.assert_allclose(sr, expected, atol=1e-5, rtol=0, err_msg=engine.name)


def _has_onnx_stack() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def test_auto_engine_works_and_its_choice_is_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _ort()
    clear_engine_cache()
    cache = tmp_path / "cache" / "engines.json"
    model = _network("espcn", 3, 1)
    engine = make_engine(model, "auto", cache_file=cache)
    assert isinstance(engine, Engine) and engine.name in ENGINES
    lr = _inputs(1)[0]
    np.testing.assert_allclose(engine(lr), _reference(model, lr), atol=1e-5, rtol=0)
    (kind, entry), *others = json.loads(cache.read_text()).items()
    assert not others and kind.startswith("espcn/x3/c1/")
    assert kind.endswith(f"/float32/t{torch.get_num_threads()}")
    # Every candidate that is installed here was timed (OpenVINO is an optional extra).
    installed = {
        name
        for name in AUTO_ENGINES["float32"]
        if name != "openvino" or importlib.util.find_spec("openvino") is not None
    }
    assert entry["engine"] == engine.name and set(entry["milliseconds"]) == installed

    # The next process (memory cache cleared) reads the file instead of measuring again.
    clear_engine_cache()

    def no_calibration(*args: object, **kwargs: object) -> None:
        raise AssertionError("calibrated although the choice was cached")

    monkeypatch.setattr("subpixel.engines.auto.calibrate", no_calibration)
    assert make_engine(model, "auto", cache_file=cache).name == engine.name
    clear_engine_cache()


def test_engine_choice_tells_the_two_fsrcnn_forms_apart() -> None:
    from subpixel.engines.base import _network_kind

    plain, converted = _network("fsrcnn", 3, 1), _network("fsrcnn+subpixel", 3, 1)
    assert _network_kind(plain) != _network_kind(converted)
    assert _network_kind(_network("espcn", 3, 1)) != _network_kind(_network("espcn-7", 3, 1))


def test_missing_onnxruntime_is_an_error_only_when_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clear_engine_cache()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    model = _network("fsrcnn-s", 2, 1)
    with pytest.raises(EngineError, match=r"onnxruntime.*pip install"):
        make_engine(model, "onnxruntime")
    engine = make_engine(model, "auto")  # torch or OpenVINO, whichever timed faster
    assert engine.name != "onnxruntime"
    engine(np.zeros((1, 1, 4, 4), np.float32))
    clear_engine_cache()


def test_unknown_engine_name_is_an_error() -> None:
    with pytest.raises(EngineError, match="unknown engine 'tensorrt'") as caught:
        make_engine(models.build("espcn", scale=2), "tensorrt")
    assert isinstance(caught.value, SubpixelError)


def test_engines_take_only_four_dimensional_arrays() -> None:
    engine = TorchEngine(models.build("espcn", scale=2))
    with pytest.raises(EngineError, match=r"\(B, C, H, W\)"):
        engine(np.zeros((8, 8), np.float32))
