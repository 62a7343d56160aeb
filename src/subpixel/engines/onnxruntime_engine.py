"""The ``onnxruntime`` engine: the network exported by ``subpixel.export`` (through the
export cache, ``subpixel.engines.exports``) and run by ONNX Runtime on CPU, float32 only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from subpixel.engines.base import EngineError, _check_input, _require
from subpixel.engines.exports import _exported


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
        # No memory pattern: with one, a session's second run also maps fresh memory (the
        # planned block), 40-60 ms more than later runs for ESPCN x3 at 640x360 on 2
        # cores; without, only the first does, and later runs take as long.
        options.enable_mem_pattern = False
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
    _require("onnxruntime", "onnx", "onnxruntime", "onnx", "onnxscript")
