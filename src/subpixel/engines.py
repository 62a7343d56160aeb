"""Engines: run a network on (B, C, H, W) float32 numpy arrays with PyTorch or ONNX Runtime.

An engine is anything with a ``name`` and ``__call__(lr) -> sr``; the same network gives the
same output (to float rounding, 1e-5) whichever engine runs it. ``make_engine`` builds one by
name, or with ``"auto"`` times both on a 64x64 input and keeps the faster one. Which is faster
depends on the network and the machine: on a 2-core CPU ONNX Runtime ran ESPCN and FSRCNN
2-4x faster than eager PyTorch, and FSRCNN's sub-pixel form slower than its deconvolution
(see PERF-NOTES.md).

The choice is remembered per network kind (architecture, FSRCNN's form, scale, channels) for
the process, and, given ``cache_file`` (``default_cache_file()`` is
``~/.cache/subpixel/engines.json``), on disk: one small JSON object mapping that kind to the
chosen engine, the median milliseconds of each, and the core count and library versions it
was measured with (an entry measured on other cores or versions is measured again).

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
import hashlib
import importlib
import json
import logging
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from subpixel.errors import SubpixelError
from subpixel.layers import SubpixelConv2d

__all__ = [
    "ENGINES",
    "Calibration",
    "Engine",
    "EngineError",
    "EngineModule",
    "OnnxRuntimeEngine",
    "TorchEngine",
    "calibrate",
    "clear_engine_cache",
    "default_cache_file",
    "engine_module",
    "make_engine",
]

ENGINES = ("torch", "onnxruntime")
CALIBRATION_SIZE = 64  # pixels, square: small enough to take well under a second
CALIBRATION_RUNS = 5

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


class TorchEngine:
    """Eager PyTorch under ``inference_mode`` on the model's own device.

    Args:
        model: the network; it is put in eval mode, and run as is unless ``channels_last``.
        channels_last: run a copy of the model with channels-last weights and input, which
            is faster for eager convolutions on CPU (same outputs, to float rounding).
    """

    name = "torch"

    def __init__(self, model: nn.Module, *, channels_last: bool = False) -> None:
        if channels_last:
            model = copy.deepcopy(model).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.model = model.eval()
        self.channels_last = channels_last
        first = next(model.parameters(), None)
        self.device = first.device if first is not None else torch.device("cpu")

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(_check_input(lr)).to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            sr = self.model(x)  # (B, C, rH, rW)
        return np.ascontiguousarray(sr.float().cpu().numpy())


class OnnxRuntimeEngine:
    """ONNX Runtime on CPU, running the network exported in memory by ``subpixel.export``.

    The session is made once, here, and reused by every call. It runs one op at a time
    (``inter_op_num_threads = 1``) with ``intra_op_num_threads`` = the cores this process
    may use, and all graph optimisations.

    Args:
        model: the network (exported as a float32 CPU copy; the model is not changed).
        threads: intra-op threads; default: all usable cores.

    Raises:
        EngineError: onnxruntime (or onnx/onnxscript, needed to export) is not installed.
        subpixel.export.ExportError: the network cannot be exported.
    """

    name = "onnxruntime"

    def __init__(self, model: nn.Module, *, threads: int | None = None) -> None:
        _require_onnxruntime()
        from subpixel.export import onnx_bytes

        self._open(onnx_bytes(model), threads)

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
        options.intra_op_num_threads = threads or _cores()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
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


def _require_onnxruntime() -> None:
    """Raise a clear error unless onnxruntime, and onnx and onnxscript to export, are there."""
    missing = []
    for package in ("onnxruntime", "onnx", "onnxscript"):
        try:
            importlib.import_module(package)
        except ImportError:
            missing.append(package)
    if missing:
        raise EngineError(
            f"the onnxruntime engine needs {', '.join(missing)}: pip install 'subpixel[onnx]'"
        )


# --------------------------------------------------------------------------- #
# Choosing an engine
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Calibration:
    """Median milliseconds per call of each engine that could run, and the fastest."""

    kind: str
    milliseconds: dict[str, float]

    @property
    def fastest(self) -> str:
        return min(self.milliseconds, key=self.milliseconds.__getitem__)


_CHOICES: dict[str, str] = {}  # network kind -> engine name, for this process


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
    form = "+subpixel" if isinstance(getattr(model, "deconv", None), SubpixelConv2d) else ""
    return f"{card.architecture}{form}/x{card.scale}/c{card.channels}/{digest}"


def _channels(model: nn.Module) -> int:
    card = getattr(model, "card", None)
    if card is not None:
        return int(card.channels)
    return int(getattr(getattr(model, "config", model), "channels", 1))


def _versions() -> str:
    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = "none"
    return f"torch {torch.__version__}, onnxruntime {ort_version}"


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

    The rounds interleave the engines (one call each per round), so a load change on a noisy
    machine hits them alike; the median of each is kept.
    """
    lr = np.random.default_rng(0).random((1, channels, size, size), dtype=np.float32)
    for engine in engines.values():
        engine(lr)
    samples: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(runs):
        for name, engine in engines.items():
            samples[name].append(_time_ms(engine, lr))
    return Calibration(kind, {name: statistics.median(t) for name, t in samples.items()})


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):  # missing, unreadable or corrupt: measure again
        return {}
    return raw if isinstance(raw, dict) else {}


def _cached_choice(path: Path, kind: str) -> str | None:
    entry = _read_cache(path).get(kind)
    if (
        isinstance(entry, dict)
        and entry.get("engine") in ENGINES
        and entry.get("cores") == _cores()
        and entry.get("versions") == _versions()
    ):
        return str(entry["engine"])
    return None


def _store_choice(path: Path, calibration: Calibration) -> None:
    """Record a choice in the cache file (temp file + rename); failures are only logged."""
    cache = _read_cache(path)
    cache[calibration.kind] = {
        "engine": calibration.fastest,
        "milliseconds": {k: round(v, 3) for k, v in calibration.milliseconds.items()},
        "cores": _cores(),
        "versions": _versions(),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".engines.", suffix=".tmp")
        try:
            with os.fdopen(handle, "w") as file:
                json.dump(cache, file, indent=1, sort_keys=True)
            os.replace(temporary, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
    except OSError as error:
        logger.warning("could not write the engine cache %s: %s", path, error)


def make_engine(
    model: nn.Module, name: str = "auto", *, cache_file: str | Path | None = None
) -> Engine:
    """An engine running ``model``: ``"torch"``, ``"onnxruntime"`` or ``"auto"``.

    ``"auto"`` uses the choice remembered for this kind of network (in this process, then
    in ``cache_file`` if given), else times both engines on a 64x64 input and keeps the
    faster. It falls back to torch, without an error, when onnxruntime is not installed or
    cannot export the network, and picks torch for a model on a GPU.

    Args:
        model: the network (a ``subpixel`` model, card attached or not).
        name: ``"auto"``, ``"torch"`` or ``"onnxruntime"``.
        cache_file: a JSON file to read and record ``"auto"`` choices in, for example
            ``default_cache_file()``; ``None`` remembers them for this process only.

    Raises:
        EngineError: an unknown name, or ``"onnxruntime"`` asked for and not installed.
        subpixel.export.ExportError: ``"onnxruntime"`` asked for and the network cannot be
            exported.

    Example:
        >>> from subpixel import models
        >>> make_engine(models.build("fsrcnn", scale=3), "torch").name
        'torch'
    """
    if name == "torch":
        return TorchEngine(model)
    if name == "onnxruntime":
        return OnnxRuntimeEngine(model)
    if name != "auto":
        choices = ", ".join(("auto", *ENGINES))
        raise EngineError(f"unknown engine {name!r}; choose from {choices}")
    return _auto_engine(model, None if cache_file is None else Path(cache_file))


def _auto_engine(model: nn.Module, cache_file: Path | None) -> Engine:
    torch_engine = TorchEngine(model)
    if torch_engine.device.type != "cpu":
        return torch_engine  # ONNX Runtime here is CPU only; a GPU model stays on its GPU
    kind = _network_kind(model)
    choice = _CHOICES.get(kind)
    if choice is None and cache_file is not None:
        choice = _cached_choice(cache_file, kind)
    if choice == "torch":
        return torch_engine
    try:
        ort_engine = OnnxRuntimeEngine(model)
    except SubpixelError as error:  # not installed, or not exportable: torch it is
        logger.info("auto engine: using torch, onnxruntime unavailable (%s)", error)
        _CHOICES[kind] = "torch"
        return torch_engine
    if choice is None:
        engines: dict[str, Engine] = {"torch": torch_engine, "onnxruntime": ort_engine}
        calibration = calibrate(engines, _channels(model), kind=kind)
        choice = calibration.fastest
        logger.info("auto engine for %s: %s (ms: %s)", kind, choice, calibration.milliseconds)
        if cache_file is not None:
            _store_choice(cache_file, calibration)
    _CHOICES[kind] = choice
    return ort_engine if choice == "onnxruntime" else torch_engine


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


def engine_module(model: nn.Module, name: str = "auto") -> nn.Module:
    """``model`` run by the engine ``name`` (see :func:`make_engine`); torch returns it as is."""
    engine = make_engine(model, name)
    if isinstance(engine, TorchEngine):
        return model
    return EngineModule(engine, model)
