"""Engines: run a network on (B, C, H, W) float32 numpy arrays with PyTorch or ONNX Runtime.

An engine is anything with a ``name`` and ``__call__(lr) -> sr``; the same network gives the
same output (to float rounding, 1e-5; to about 1e-2 in bfloat16) whichever engine runs it.

- ``torch``: eager PyTorch, as the model is.
- ``torch-channels-last``: eager on a channels-last copy (oneDNN's preferred layout on CPU).
- ``torch-compile``: ``torch.compile`` with inductor's ``freezing`` (weights folded into the
  graph as constants, convolutions prepacked). The first call compiles (15 s on 2 cores, a
  few seconds for each later input shape), so it pays off on video, not on one image.
- ``onnxruntime``: the network exported in memory (``subpixel.export``) and run by ONNX
  Runtime on CPU.
- ``openvino``: the same export compiled by OpenVINO's CPU plugin (the ``openvino`` extra),
  in float32 or, with ``precision="bfloat16"``, in its native bfloat16 kernels.

The torch and OpenVINO engines also run in ``precision="bfloat16"`` (torch: autocast,
convolutions in bfloat16 on CPUs with native bfloat16, AVX-512 BF16 or AMX; outputs back in
float32), and in ``precision="mixed"``: the first convolution in float32, the rest in
bfloat16. What bfloat16 costs depends on the weights: Set5/Set14 PSNR fell by 0.023/0.014
dB for the bundled ESPCN x3 but by 0.117/0.054 dB for the published FSRCNN x2 weights, and
mixed keeps most of its speed for a fraction of that loss. So ``precision="auto"``
(``subpixel.precision``) runs bfloat16, or else mixed, only for weights whose card records a
measured loss under 0.05 dB on both sets, on a CPU with native bfloat16; float32 otherwise.
ONNX Runtime runs float32 only.

``make_engine(model, "auto")`` times the candidates (``AUTO_ENGINES``: torch,
torch-channels-last, onnxruntime and openvino, each where installed; in bfloat16 the same,
onnxruntime staying float32) interleaved on a 384x384 input and keeps the fastest; for
FSRCNN it tries both forms of its last layer, the transposed convolution and its exact
sub-pixel form (``models.fsrcnn_to_subpixel``), since which is faster depends on the
engine (see PERF-NOTES.md). ``torch-compile`` is not among the candidates: its compile time would
dominate a calibration, and in float32 it did not beat ONNX Runtime here.

The choice is remembered per network kind (architecture, FSRCNN's form, scale, channels,
precision) and thread count for the process, and, given ``cache_file``
(``default_cache_file()`` is ``~/.cache/subpixel/engines.json``), on disk: one small JSON
object mapping that kind to the chosen engine, the milliseconds of each candidate, and the
core and thread counts, library versions and input size it was measured with (an entry
measured with others is measured again). The same folder keeps what building an ONNX Runtime
or OpenVINO engine costs a process: the exported network (``onnx/``, by a hash of the
weights and the exporter) and OpenVINO's compiled model (``openvino/<precision>/``, its
``CACHE_DIR``), so a later process makes the remembered engine without exporting or
compiling (OpenVINO, ESPCN x3: 130-220 ms on the 2-core test machine, against seconds).
Either folder may be deleted at any time.

Example:
    >>> import numpy as np
    >>> from subpixel import models
    >>> from subpixel.engines import make_engine
    >>> engine = make_engine(models.build("espcn", scale=2), "torch")
    >>> engine(np.zeros((1, 1, 8, 8), np.float32)).shape
    (1, 1, 16, 16)
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from xml.etree import ElementTree

import numpy as np
import torch
from torch import nn

from subpixel.errors import SubpixelError
from subpixel.files import atomic_write
from subpixel.layers import SubpixelConv2d
from subpixel.precision import first_layer, first_layer_in_float32, resolve_precision

__all__ = [
    "AUTO_ENGINES",
    "ENGINES",
    "PRECISIONS",
    "Calibration",
    "Engine",
    "EngineError",
    "EngineModule",
    "OnnxRuntimeEngine",
    "OpenVinoEngine",
    "TorchEngine",
    "calibrate",
    "clear_engine_cache",
    "default_cache_file",
    "engine_module",
    "make_engine",
    "set_threads",
]

ENGINES = ("torch", "torch-channels-last", "torch-compile", "onnxruntime", "openvino")
PRECISIONS = ("float32", "bfloat16", "mixed")
#: The engines ``"auto"`` chooses from, by precision (onnxruntime always runs float32).
AUTO_ENGINES = {
    "float32": ("torch", "torch-channels-last", "onnxruntime", "openvino"),
    "bfloat16": ("torch", "torch-channels-last", "onnxruntime", "openvino"),
    "mixed": ("torch", "torch-channels-last", "onnxruntime", "openvino"),
}
# Square input side for calibration: large enough that the ranking is the one at video
# sizes, small enough to take 1-3 s once per network. Small inputs favour eager torch (its
# per-call overheads are small, its working set fits the caches): at 128x128 it looked
# fastest for FSRCNN and was 2x slower at 640x360; on Zen 5, at 256x256, channels-last
# torch ran FSRCNN x3's sub-pixel form within 10% of OpenVINO and 3.6x slower at 640x360,
# where 384x384 ranks them as 640x360 does.
CALIBRATION_SIZE = 384
CALIBRATION_RUNS = 5
SUBPIXEL_FORM = "+subpixel"  # suffix of a choice that runs FSRCNN in its sub-pixel form

logger = logging.getLogger(__name__)


class EngineError(SubpixelError):
    """An unknown engine name, an engine that is not installed, or input it cannot take."""


@runtime_checkable
class Engine(Protocol):
    """Runs one network: (B, C, H, W) float32 array in [0, 1] -> (B, C, rH, rW) float32."""

    name: str

    def __call__(self, lr: np.ndarray) -> np.ndarray: ...


def _check_input(lr: np.ndarray) -> np.ndarray:
    if not isinstance(lr, np.ndarray) or lr.ndim != 4:
        shape = getattr(lr, "shape", None)
        raise EngineError(f"engines take a (B, C, H, W) numpy array, got shape {shape}")
    return np.ascontiguousarray(lr, dtype=np.float32)


def _cores() -> int:
    """Cores this process may use (the affinity mask, where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def set_threads(threads: int) -> None:
    """Use ``threads`` threads for PyTorch, OpenCV and the ONNX Runtime sessions made later.

    All three default to the machine's cores; fewer leave room for other work (several
    processes side by side, say, each with ``threads=1``). Process-wide.
    """
    if threads < 1:
        raise EngineError(f"threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)
    with contextlib.suppress(ImportError):
        import cv2

        cv2.setNumThreads(threads)


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise EngineError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")


class TorchEngine:
    """PyTorch under ``inference_mode`` on the model's own device.

    Args:
        model: the network; it is put in eval mode, and run as is unless ``channels_last``
            or ``compiled``.
        channels_last: run a copy of the model with channels-last weights and input, which
            is faster for eager convolutions on CPU (same outputs, to float rounding).
        compiled: run ``torch.compile(model, options={"freezing": True})``: the weights are
            frozen into the graph when the first call compiles it, so later changes to the
            model are not seen (as with an ONNX export).
        precision: ``"float32"``, ``"bfloat16"`` (autocast on the model's device type) or
            ``"mixed"`` (autocast, the first layer left in float32).

    Raises:
        EngineError: an unknown precision; a failed compilation (at the first call).
    """

    form = ""  # "sub-pixel" when "auto" chose FSRCNN in its sub-pixel form

    def __init__(
        self,
        model: nn.Module,
        *,
        channels_last: bool = False,
        compiled: bool = False,
        precision: str = "float32",
    ) -> None:
        _check_precision(precision)
        if channels_last:
            model = copy.deepcopy(model).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if precision == "mixed":
            model = first_layer_in_float32(model)
        self.model = model.eval()
        self.channels_last = channels_last
        self.compiled = compiled
        self.precision = precision
        first = next(model.parameters(), None)
        self.device = first.device if first is not None else torch.device("cpu")
        # A network in float64 (a reference in a test) runs in float64, as it is.
        self.dtype = torch.float64 if first is not None and first.dtype == torch.float64 else None
        self._run: Any = torch.compile(model, options={"freezing": True}) if compiled else model
        self.name = (
            "torch-compile" if compiled else "torch-channels-last" if channels_last else "torch"
        )

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(_check_input(lr)).to(self.device, self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        bf16 = self.precision != "float32"
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16),
        ):
            try:
                sr = self._run(x)  # (B, C, rH, rW)
            except Exception as error:  # inductor raises many kinds; re-raised with the cause
                if not self.compiled:
                    raise
                raise EngineError(f"torch.compile failed: {error}") from error
        return np.ascontiguousarray(sr.float().cpu().numpy())


class OnnxRuntimeEngine:
    """ONNX Runtime on CPU, running the network exported in memory by ``subpixel.export``.

    The session is made once, here, and reused by every call. It runs one op at a time
    (``inter_op_num_threads = 1``) with as many intra-op threads as PyTorch uses
    (``torch.get_num_threads()``: the physical cores, or what ``set_threads`` set), and all
    graph optimisations; its threads sleep when idle rather than spin.

    Args:
        model: the network (exported as a float32 CPU copy; the model is not changed).
        threads: intra-op threads; default: ``torch.get_num_threads()``.
        cache_dir: a folder to keep the export in (``onnx/``), so that another process
            running the same weights skips it; ``None``: this process only.

    Raises:
        EngineError: onnxruntime (or onnx/onnxscript, needed to export) is not installed.
        subpixel.export.ExportError: the network cannot be exported.
    """

    name = "onnxruntime"
    precision = "float32"
    form = ""  # "sub-pixel" when "auto" chose FSRCNN in its sub-pixel form

    def __init__(
        self, model: nn.Module, *, threads: int | None = None, cache_dir: Path | None = None
    ) -> None:
        _require_onnxruntime()
        # The session itself is not cached (optimized_model_filepath): it takes a few
        # milliseconds for these networks, against a second or two for the export.
        self._open(_exported(model, cache_dir), threads)

    @classmethod
    def from_onnx(
        cls, source: str | Path | bytes, *, threads: int | None = None
    ) -> OnnxRuntimeEngine:
        """An engine for an ONNX file (or its bytes), for example one ``export_onnx`` wrote."""
        _require_onnxruntime()
        engine = cls.__new__(cls)
        engine._open(source if isinstance(source, bytes) else str(source), threads)
        return engine

    def _open(self, source: str | bytes, threads: int | None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle threads sleep instead of spinning: spinning ones took the cores from the
        # OpenCV and torch work right after a run, and from other sessions (+20-45% there).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(
                source, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime's own exception types; re-raised with cause
            raise EngineError(f"onnxruntime cannot load the model: {error}") from error
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        outputs = self.session.run([self.output_name], {self.input_name: _check_input(lr)})
        sr: np.ndarray = outputs[0]
        return sr


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


_EXPORTS: dict[str, bytes] = {}  # weights digest -> ONNX bytes, the last few exports
_EXPORTS_KEPT = 8


@functools.cache
def _exporter_digest() -> bytes:
    """What an export depends on besides the network: the exporter's versions and the
    source of subpixel's modules that make the graph (export, layers, models)."""
    digest = hashlib.sha256(f"torch {torch.__version__}".encode())
    for package in ("onnx", "onnxscript"):  # by their metadata: importing them takes seconds
        try:
            digest.update(f"{package} {importlib.metadata.version(package)}".encode())
        except importlib.metadata.PackageNotFoundError:
            digest.update(f"{package} none".encode())
    package_root = Path(__file__).parent
    sources = [package_root / "export.py", package_root / "layers.py"]
    for source in sorted([*sources, *(package_root / "models").glob("*.py")]):
        with contextlib.suppress(OSError):
            digest.update(source.name.encode() + source.read_bytes())
    return digest.digest()


def _exported(model: nn.Module, cache_dir: Path | None = None) -> bytes:
    """``export.onnx_bytes(model)``, remembered by the model's class, card and weights.

    An export takes a second or two; ``"auto"`` and a benchmark ask for the same network
    several times. The key hashes every parameter and buffer, so a model whose weights
    changed since (a training run evaluating as it goes) is exported again. Given
    ``cache_dir``, the export is also kept in ``cache_dir/onnx/<key>.onnx`` for later
    processes (the key also covers the exporter's versions and subpixel's export code).
    """
    digest = hashlib.sha256(_network_kind(model).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    key = digest.hexdigest()
    stored = None
    if cache_dir is not None:
        digest.update(_exporter_digest())
        stored = cache_dir / "onnx" / f"{digest.hexdigest()[:32]}.onnx"
    data = _EXPORTS.get(key)
    if data is None and stored is not None:
        data = _read_bytes(stored)
    if data is None:
        from subpixel.export import onnx_bytes

        data = onnx_bytes(model)
    if stored is not None and not stored.exists():
        _write_cache(stored, data)
    if key not in _EXPORTS:
        while len(_EXPORTS) >= _EXPORTS_KEPT:
            del _EXPORTS[next(iter(_EXPORTS))]
        _EXPORTS[key] = data
    return data


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes() or None
    except OSError:  # not there yet, or unreadable: made again
        return None


def _write_cache(path: Path, data: bytes) -> None:
    """Write a cache file atomically (``subpixel.files``); a failure is only logged: the
    cache saves time, nothing depends on it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda temporary: temporary.write_bytes(data))
    except OSError as error:
        logger.warning("could not write the cache file %s: %s", path, error)


def _writable_folder(root: Path | None, *parts: str) -> Path | None:
    """``root/parts...``, made if need be, or ``None`` when there is no root or it cannot be
    written (a read-only cache must not stop an engine)."""
    if root is None:
        return None
    folder = root.joinpath(*parts)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        logger.warning("could not make the cache folder %s: %s", folder, error)
        return None
    return folder if os.access(folder, os.W_OK) else None


def _require_onnxruntime() -> None:
    """Raise a clear error unless onnxruntime, and onnx and onnxscript to export, are there."""
    _require("onnxruntime", "onnx", "onnxruntime", "onnx", "onnxscript")


def _require(engine: str, extra: str, runtime: str, *exporter: str) -> None:
    """Raise a clear error naming the extra to install unless ``runtime`` imports and the
    ``exporter`` packages are installed. These are only looked for, not imported: onnx and
    onnxscript take a second or more to import, and an export read from the cache needs
    neither (``onnx_bytes`` imports them when it runs)."""
    missing = []
    try:
        importlib.import_module(runtime)
    except ImportError:
        missing.append(runtime)
    missing += [p for p in exporter if p not in sys.modules and not importlib.util.find_spec(p)]
    if missing:
        raise EngineError(
            f"the {engine} engine needs {', '.join(missing)}: pip install 'subpixel[{extra}]'"
        )


# --------------------------------------------------------------------------- #
# Choosing an engine
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Calibration:
    """Milliseconds per call (the fastest of a few) of each candidate, and the fastest.

    Candidates are engine names, with ``"+subpixel"`` for FSRCNN in its sub-pixel form.
    """

    kind: str
    milliseconds: dict[str, float]

    @property
    def fastest(self) -> str:
        return min(self.milliseconds, key=self.milliseconds.__getitem__)


_CHOICES: dict[str, str] = {}  # network kind -> candidate name, for this process


def clear_engine_cache() -> None:
    """Forget the engine choices made in this process (the disk cache is left alone)."""
    _CHOICES.clear()


def default_cache_file() -> Path:
    """``$XDG_CACHE_HOME/subpixel/engines.json``, by default ``~/.cache/subpixel/engines.json``."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "subpixel" / "engines.json"


def _network_kind(model: nn.Module) -> str:
    """``architecture[+subpixel]/x{scale}/c{channels}/{config digest}``.

    What an engine choice depends on: ESPCN and ESPCN-7 share an architecture but not a
    configuration, and FSRCNN's sub-pixel form runs at another speed than its deconvolution.
    """
    from subpixel.export import ExportError, _card_for

    try:
        card = _card_for(model)
    except ExportError:  # not one of ours and no card: remember it by class
        return f"{type(model).__module__}.{type(model).__qualname__}"
    config = json.dumps(card.config, sort_keys=True).encode()
    digest = hashlib.sha256(config).hexdigest()[:8]
    form = SUBPIXEL_FORM if isinstance(getattr(model, "deconv", None), SubpixelConv2d) else ""
    return f"{card.architecture}{form}/x{card.scale}/c{card.channels}/{digest}"


def _channels(model: nn.Module) -> int:
    card = getattr(model, "card", None)
    if card is not None:
        return int(card.channels)
    return int(getattr(getattr(model, "config", model), "channels", 1))


def _versions() -> str:
    versions = [f"torch {torch.__version__}"]
    for package in ("onnxruntime", "openvino"):
        try:
            version = importlib.import_module(package).__version__
        except ImportError:
            version = "none"
        versions.append(f"{package} {version}")
    return ", ".join(versions)


def _time_ms(engine: Engine, lr: np.ndarray) -> float:
    start = time.perf_counter()
    engine(lr)
    return (time.perf_counter() - start) * 1e3


def calibrate(
    engines: dict[str, Engine],
    channels: int,
    *,
    kind: str = "",
    size: int = CALIBRATION_SIZE,
    runs: int = CALIBRATION_RUNS,
) -> Calibration:
    """Time each engine on a (1, C, size, size) input: one warm-up call, then ``runs`` rounds.

    The rounds interleave the engines (one call each per round) and each keeps its fastest
    call: another job on the machine only ever adds time, and a median of a few calls on a
    busy 2-core machine still picked a 3x slower engine now and then.
    """
    lr = np.random.default_rng(0).random((1, channels, size, size), dtype=np.float32)
    for engine in engines.values():
        engine(lr)
    samples: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(runs):
        for name, engine in engines.items():
            samples[name].append(_time_ms(engine, lr))
    return Calibration(kind, {name: min(t) for name, t in samples.items()})


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):  # missing, unreadable or corrupt: measure again
        return {}
    return raw if isinstance(raw, dict) else {}


def _valid_candidate(name: object) -> bool:
    return isinstance(name, str) and name.removesuffix(SUBPIXEL_FORM) in ENGINES


def _choice_kind(model: nn.Module, precision: str, threads: int) -> str:
    """The key of a choice: ``{network kind}/{precision}/t{threads}``. The thread count is
    part of it because the ranking changes with it, and one machine runs both ways (one
    process on every core, or several with ``--threads 1``)."""
    return f"{_network_kind(model)}/{precision}/t{threads}"


def _cached_choice(path: Path, kind: str, threads: int | None = None) -> str | None:
    """The choice recorded for ``kind`` if it was measured as things are now, with
    ``threads`` threads (default ``torch.get_num_threads()``). An entry written before the
    key held the thread count (``.../{precision}``) is read when its recorded thread count
    is this one."""
    threads = threads or torch.get_num_threads()
    cache = _read_cache(path)
    for entry in (cache.get(kind), cache.get(kind.removesuffix(f"/t{threads}"))):
        if (
            isinstance(entry, dict)
            and _valid_candidate(entry.get("engine"))
            and entry.get("cores") == _cores()
            and entry.get("threads") == threads
            and entry.get("versions") == _versions()
            and entry.get("size") == CALIBRATION_SIZE
        ):
            return str(entry["engine"])
    return None


def _store_choice(path: Path, calibration: Calibration, threads: int) -> None:
    """Record a choice in the cache file (temp file + rename); failures are only logged.

    An entry of the same kind and thread count written with the older key (no thread count
    in it) is dropped: the new entry replaces it.
    """
    cache = _read_cache(path)
    older = calibration.kind.removesuffix(f"/t{threads}")
    superseded = cache.get(older) if older != calibration.kind else None
    if isinstance(superseded, dict) and superseded.get("threads") == threads:
        del cache[older]
    cache[calibration.kind] = {
        "engine": calibration.fastest,
        "milliseconds": {k: round(v, 3) for k, v in calibration.milliseconds.items()},
        "cores": _cores(),
        "threads": threads,
        "versions": _versions(),
        "size": CALIBRATION_SIZE,
    }
    _write_cache(path, json.dumps(cache, indent=1, sort_keys=True).encode())


def _build(
    model: nn.Module, name: str, precision: str, threads: int | None, cache_dir: Path | None
) -> Engine:
    """One engine by name (no ``"auto"``); ``threads`` and ``cache_dir`` reach ONNX Runtime
    and OpenVINO only."""
    if name == "torch":
        return TorchEngine(model, precision=precision)
    if name == "torch-channels-last":
        return TorchEngine(model, channels_last=True, precision=precision)
    if name == "torch-compile":
        return TorchEngine(model, compiled=True, precision=precision)
    if name == "onnxruntime":
        if precision != "float32":
            raise EngineError("the onnxruntime engine runs float32 only")
        return OnnxRuntimeEngine(model, threads=threads, cache_dir=cache_dir)
    if name == "openvino":
        return OpenVinoEngine(model, precision=precision, threads=threads, cache_dir=cache_dir)
    choices = ", ".join(("auto", *ENGINES))
    raise EngineError(f"unknown engine {name!r}; choose from {choices}")


def make_engine(
    model: nn.Module,
    name: str = "auto",
    *,
    precision: str = "auto",
    threads: int | None = None,
    cache_file: str | Path | None = None,
) -> Engine:
    """An engine running ``model``: one of ``ENGINES``, or ``"auto"``.

    ``"auto"`` uses the choice remembered for this kind of network (in this process, then
    in ``cache_file`` if given), else times the candidates of ``AUTO_ENGINES`` on a 384x384
    input, interleaved, and keeps the fastest. For FSRCNN each candidate also runs in the
    sub-pixel form of the last layer. Candidates that cannot run are left out: onnxruntime
    or openvino when it is not installed or cannot take the network. A model on a GPU gets
    ``torch``.

    Args:
        model: the network (a ``subpixel`` model, card attached or not).
        name: ``"auto"`` or one of ``ENGINES``.
        precision: ``"float32"``; ``"bfloat16"`` for the torch and OpenVINO engines
            (engine ``"auto"`` then also considers onnxruntime in float32); or ``"auto"``:
            ``subpixel.precision.resolve_precision`` (bfloat16 only for weights whose
            recorded loss allows it, on hardware that has it).
        threads: threads for ONNX Runtime or OpenVINO (default: ``torch.get_num_threads()``).
            PyTorch's and OpenCV's are process-wide: ``set_threads``.
        cache_file: a JSON file to read and record ``"auto"`` choices in, for example
            ``default_cache_file()``; ``None`` remembers them for this process only. Its
            folder also keeps the ONNX exports and OpenVINO's compiled models, so that a
            later process building the same engine skips the export (a second or two)
            and the compilation.

    Raises:
        EngineError: an unknown name or precision, onnxruntime asked for and not installed
            or asked for in bfloat16.
        subpixel.export.ExportError: ``"onnxruntime"`` asked for and the network cannot be
            exported.

    Example:
        >>> from subpixel import models
        >>> make_engine(models.build("fsrcnn", scale=3), "torch").name
        'torch'
    """
    if precision == "auto" and name == "onnxruntime":
        precision = "float32"  # the only arithmetic it has
    precision = resolve_precision(model, precision)
    _check_precision(precision)
    cache = None if cache_file is None else Path(cache_file)
    if name != "auto":
        return _build(model, name, precision, threads, None if cache is None else cache.parent)
    return _auto_engine(model, precision, threads, cache)


def _forms(model: nn.Module) -> dict[str, nn.Module]:
    """The model, and for FSRCNN with a transposed convolution also its sub-pixel form."""
    from subpixel.models import FSRCNN, fsrcnn_to_subpixel

    forms = {"": model}
    if isinstance(model, FSRCNN) and isinstance(model.deconv, nn.ConvTranspose2d):
        forms[SUBPIXEL_FORM] = fsrcnn_to_subpixel(model)  # a deep copy: the card comes along
    return forms


def _candidate(
    model: nn.Module, candidate: str, precision: str, threads: int | None, cache_dir: Path | None
) -> Engine | None:
    """The engine for ``"name[+subpixel]"``, or ``None`` when it cannot run here."""
    name = candidate.removesuffix(SUBPIXEL_FORM)
    network = _forms(model)[SUBPIXEL_FORM] if candidate.endswith(SUBPIXEL_FORM) else model
    engine_precision = "float32" if name == "onnxruntime" else precision
    try:
        engine = _build(network, name, engine_precision, threads, cache_dir)
    except SubpixelError as error:  # not installed, or not exportable
        logger.info("auto engine: %s unavailable (%s)", candidate, error)
        return None
    if network is not model:
        engine.form = "sub-pixel"  # type: ignore[attr-defined]
    return engine


def _auto_engine(
    model: nn.Module, precision: str, threads: int | None, cache_file: Path | None
) -> Engine:
    first = next(model.parameters(), None)
    if first is not None and first.device.type != "cpu":
        # ONNX Runtime here is CPU only; a GPU model stays on its GPU.
        return TorchEngine(model, precision=precision)
    count = threads or torch.get_num_threads()
    kind = _choice_kind(model, precision, count)
    cache_dir = None if cache_file is None else cache_file.parent
    choice = _CHOICES.get(kind)
    if choice is None and cache_file is not None:
        choice = _cached_choice(cache_file, kind, count)
    if choice is not None:
        engine = _candidate(model, choice, precision, threads, cache_dir)
        if engine is not None:
            _CHOICES[kind] = choice
            return engine
    engines: dict[str, Engine] = {}
    for form in _forms(model):
        for name in AUTO_ENGINES[precision]:
            engine = _candidate(model, name + form, precision, threads, cache_dir)
            if engine is not None:
                engines[name + form] = engine
    calibration = calibrate(engines, _channels(model), kind=kind)
    choice = calibration.fastest
    logger.info("auto engine for %s: %s (ms: %s)", kind, choice, calibration.milliseconds)
    if cache_file is not None:
        _store_choice(cache_file, calibration, count)
    _CHOICES[kind] = choice
    return engines[choice]


class EngineModule(nn.Module):
    """An engine behind the ``nn.Module`` call contract, so the image and video pipelines
    (tiling included) use it like the network it was made from.

    The network stays attached as ``.network`` (its layers tell the tiler how much context
    a tile needs) and its card as ``.card``.
    """

    def __init__(self, engine: Engine, network: nn.Module) -> None:
        super().__init__()
        self.engine = engine
        self.network = network
        card = getattr(network, "card", None)
        if card is not None:
            self.card = card
        self.config = getattr(network, "config", None)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        sr = self.engine(lr.detach().float().cpu().numpy())
        return torch.from_numpy(np.ascontiguousarray(sr)).to(lr.device)


def engine_module(
    model: nn.Module,
    name: str = "auto",
    *,
    precision: str = "auto",
    threads: int | None = None,
    cache_file: str | Path | None = None,
) -> nn.Module:
    """``model`` run by the engine ``name`` (see :func:`make_engine` for the keywords).

    Eager float32 torch returns the model itself; any other engine is wrapped in an
    ``EngineModule``, which the image and video pipelines use like the network.

    Example:
        >>> import subpixel
        >>> model = subpixel.load_model("bicubic", scale=2)
        >>> engine_module(model, "torch") is model
        True
    """
    engine = make_engine(model, name, precision=precision, threads=threads, cache_file=cache_file)
    if (
        isinstance(engine, TorchEngine)
        and (engine.name, engine.precision) == ("torch", "float32")
        and engine.model is model
    ):
        return model
    return EngineModule(engine, model)
