"""What every engine shares: the ``Engine`` protocol, its error, the names of the engines and
precisions, the input check, thread control, and the network kind that the export and
choice caches are keyed by.

An engine is anything with a ``name`` and ``__call__(lr) -> sr``; the same network gives the
same output (to float rounding, 1e-5; to about 1e-2 in bfloat16) whichever engine runs it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import os
import sys
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from subpixel.errors import SubpixelError
from subpixel.models import SRNetwork

ENGINES = (
    "torch",
    "torch-channels-last",
    "torch-native",
    "torch-compile",
    "onnxruntime",
    "openvino",
)
PRECISIONS = ("float32", "bfloat16", "mixed")


class EngineError(SubpixelError):
    """An unknown engine name, an engine that is not installed, or input it cannot take."""


@runtime_checkable
class Engine(Protocol):
    """Runs one network: (B, C, H, W) float32 array in [0, 1] -> (B, C, rH, rW) float32.

    ``precision`` is the arithmetic it runs in; ``form`` is ``"sub-pixel"`` when it runs
    FSRCNN's deconvolution in its exact sub-pixel form, else ``""``.
    """

    name: str
    precision: str
    form: str

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
    form = model.form_name if isinstance(model, SRNetwork) else ""
    return f"{card.architecture}{form}/x{card.scale}/c{card.channels}/{digest}"
