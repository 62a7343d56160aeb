"""The ``openvino`` engine: the network exported by ``subpixel.export`` and compiled by
OpenVINO's CPU plugin (the ``openvino`` extra), in float32, in its native bfloat16 kernels
(``precision="bfloat16"``), or ``"mixed"``: bfloat16 with the layers through the first
convolution marked to stay float32 (the ``DisablePrecisionConversion`` attribute of its
model format, written into the IR), checked in the compiled model.
"""

from __future__ import annotations

import functools
import importlib
import tempfile
import threading
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import numpy as np
import torch
from torch import nn

from subpixel.engines.base import EngineError, _check_input, _check_precision, _require
from subpixel.engines.exports import _exported, _writable_folder
from subpixel.precision import first_layer


class OpenVinoEngine:
    """OpenVINO's CPU plugin, compiling the network exported in memory by ``subpixel.export``.

    The model is compiled once, here, for any input size (a new size costs a few
    milliseconds at its first call), with as many threads as PyTorch uses and the latency
    hint. ``precision`` is OpenVINO's inference precision: ``"float32"`` or ``"bfloat16"``
    (which the plugin runs natively on CPUs with AVX-512 BF16 or AMX, and in float32
    elsewhere), or ``"mixed"``: bfloat16, with the first convolution and everything before
    it (SRCNN's bicubic upscaling) kept in float32. One request serves the calls, one at a
    time.

    Args:
        model: the network (exported as a float32 CPU copy; the model is not changed).
        precision: ``"float32"``, ``"bfloat16"`` or ``"mixed"``.
        threads: inference threads; default: ``torch.get_num_threads()``.
        cache_dir: a folder to keep the export (``onnx/``) and OpenVINO's compiled models
            (its ``CACHE_DIR``, ``openvino/<precision>/``) in, so that another process
            running the same weights skips both; ``None``: this process only.

    Raises:
        EngineError: openvino (or onnx/onnxscript, needed to export) is not installed, it
            cannot compile the network, or (``"mixed"``) it ran the first layer in bfloat16.
        subpixel.export.ExportError: the network cannot be exported.
    """

    name = "openvino"
    form = ""  # "sub-pixel" when "auto" chose FSRCNN in its sub-pixel form

    def __init__(
        self,
        model: nn.Module,
        *,
        precision: str = "float32",
        threads: int | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        _check_precision(precision)
        _require("openvino", "openvino", "openvino", "onnx", "onnxscript")
        self.precision = precision
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": "f32" if precision == "float32" else "bf16",
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(),
            # Threads float: the colour work and other processes share the cores.
            "ENABLE_CPU_PINNING": False,
        }
        # One folder per precision: in one folder, a float32 and a bfloat16 compilation of
        # a network left a single file between them (OpenVINO 2026.4).
        compiled_models = _writable_folder(cache_dir, "openvino", precision)
        if compiled_models is not None:
            config["CACHE_DIR"] = str(compiled_models)
        try:
            core = _openvino_core()
            network = core.read_model(_exported(model, cache_dir), b"")
            kept = _layers_through_first(network, model) if precision == "mixed" else []
            if kept:
                network = _keeping_precision(core, network, kept)
            compiled = core.compile_model(network, "CPU", config)
        except Exception as error:  # openvino's own exception types; re-raised with cause
            raise EngineError(f"openvino cannot compile the model: {error}") from error
        if kept and _runtime_precision(compiled, kept[-1]) != "f32":
            raise EngineError(
                f"openvino {importlib.import_module('openvino').__version__} does not keep "
                "the first layer in float32"
            )
        self._request = compiled.create_infer_request()
        self._lock = threading.Lock()

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        with self._lock:
            self._request.infer({0: _check_input(lr)})
            # The output tensor is the request's own buffer, reused by the next call.
            return np.array(self._request.get_output_tensor(0).data, np.float32, copy=True)


_OPENVINO_CONVOLUTIONS = ("Convolution", "ConvolutionBackpropData", "GroupConvolution")


def _layers_through_first(network: Any, model: nn.Module) -> list[str]:
    """The names of the OpenVINO model's operations that run before the first layer of
    ``model`` (``precision.first_layer``) and that layer's convolution, last, in execution
    order: those ``"mixed"`` keeps in float32. The convolution is found by its weights,
    which the export names after the parameter (``features.0.weight``); [] for a network
    without one.

    Raises:
        EngineError: no convolution of the exported network has the first layer's weights.
    """
    first = first_layer(model)
    if first is None:
        return []
    prefix = next(name for name, module in model.named_modules() if module is first)
    weight = f"{prefix}.weight" if prefix else "weight"
    names = []
    for op in network.get_ordered_ops():
        if op.get_type_name() in ("Parameter", "Constant"):
            continue
        names.append(str(op.get_friendly_name()))
        if op.get_type_name() in _OPENVINO_CONVOLUTIONS and weight in _input_names(op, 1):
            return names
    raise EngineError(f"openvino: no convolution of the exported network uses {weight}")


def _input_names(op: Any, port: int) -> set[str]:
    """The tensor names of what feeds ``op``'s input ``port`` (its weights, for port 1)."""
    return {str(name) for name in op.input_value(port).get_names()}


def _keeping_precision(core: Any, network: Any, layers: list[str]) -> Any:
    """``network`` with ``layers`` marked to keep their float32 under a bfloat16 hint.

    The mark is the ``DisablePrecisionConversion`` runtime attribute, which the CPU plugin
    honours but Python cannot set: it is written into the model's IR (XML) and read back.
    """
    import openvino

    with tempfile.TemporaryDirectory() as folder:
        xml_path = Path(folder) / "network.xml"
        openvino.save_model(network, xml_path, compress_to_fp16=False)
        tree = ElementTree.parse(xml_path)
        weights = np.fromfile(xml_path.with_suffix(".bin"), np.uint8)
    for element in tree.getroot().iter("layer"):
        if element.get("name") in layers:
            rt_info = element.find("rt_info")
            if rt_info is None:
                rt_info = ElementTree.SubElement(element, "rt_info")
            attribute = {"name": "DisablePrecisionConversion", "version": "0"}
            ElementTree.SubElement(rt_info, "attribute", attribute, value="dynamic:dynamic")
    return core.read_model(ElementTree.tostring(tree.getroot()), openvino.Tensor(weights))


def _runtime_precision(compiled: Any, layer: str) -> str | None:
    """The precision the compiled model runs ``layer`` in (``"f32"``, ``"bf16"``)."""
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if op.get_friendly_name() == layer and "runtimePrecision" in info:
            return str(info["runtimePrecision"].astype(str))
    return None


@functools.cache
def _openvino_core() -> Any:
    """One OpenVINO runtime per process: each ``Core`` keeps its own plugins and threads."""
    import openvino

    return openvino.Core()
