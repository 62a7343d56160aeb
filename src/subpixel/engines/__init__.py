"""Engines: run a network on (B, C, H, W) float32 numpy arrays with PyTorch, ONNX Runtime or
OpenVINO, and choose the fastest.

An engine is anything with a ``name`` and ``__call__(lr) -> sr``; the same network gives the
same output (to float rounding, 1e-5; to about 1e-2 in bfloat16) whichever engine runs it.

- ``torch``, ``torch-channels-last``, ``torch-native`` (oneDNN off), ``torch-compile``:
  ``subpixel.engines.torch_engine``.
- ``onnxruntime``: the network exported in memory (``subpixel.export``) and run by ONNX
  Runtime on CPU (``subpixel.engines.onnxruntime_engine``).
- ``openvino``: the same export compiled by OpenVINO's CPU plugin (the ``openvino`` extra),
  in float32 or, with ``precision="bfloat16"``, in its native bfloat16 kernels
  (``subpixel.engines.openvino_engine``).

The torch and OpenVINO engines also run in ``precision="bfloat16"`` (torch: autocast,
convolutions in bfloat16 on CPUs with native bfloat16, AVX-512 BF16 or AMX; outputs back in
float32), and in ``precision="mixed"``: the first convolution in float32, the rest in
bfloat16. What bfloat16 costs depends on the weights: Set5/Set14 PSNR fell by 0.023/0.014
dB for the bundled ESPCN x3 but by 0.117/0.054 dB for the published FSRCNN x2 weights, and
mixed keeps most of its speed for a fraction of that loss. So ``precision="auto"``
(``subpixel.precision``) runs bfloat16, or else mixed, only for weights whose card records a
measured loss under 0.05 dB on both sets, on a CPU with native bfloat16; float32 otherwise.
ONNX Runtime runs float32 only.

``make_engine(model, "auto")`` chooses among them: the fastest of those whose tiles matched
the whole image bit for bit in a probe, or a faster one run on a fixed grid of tiles that
every image is cut into however it is tiled (``subpixel.engines.grid``), so that tiled
upscaling equals untiled on the default path (``subpixel.engines.auto``,
``subpixel.engines.tile_probe``); engines named by the user may differ by a level at a few
pixels along tile seams. It remembers the choice; the exports
and compiled models it needs are kept by ``subpixel.engines.exports``. What every engine
shares (the protocol, its error, the names) is ``subpixel.engines.base``.

Example:
    >>> import numpy as np
    >>> from subpixel import models
    >>> from subpixel.engines import make_engine
    >>> engine = make_engine(models.build("espcn", scale=2), "torch")
    >>> engine(np.zeros((1, 1, 8, 8), np.float32)).shape
    (1, 1, 16, 16)
"""

from __future__ import annotations

from subpixel.engines.auto import (
    AUTO_ENGINES,
    Calibration,
    EngineModule,
    auto_choice,
    calibrate,
    chosen_engine,
    clear_engine_cache,
    default_cache_file,
    engine_module,
    make_engine,
)
from subpixel.engines.base import ENGINES, PRECISIONS, Engine, EngineError, set_threads
from subpixel.engines.grid import GridEngine
from subpixel.engines.onnxruntime_engine import OnnxRuntimeEngine
from subpixel.engines.openvino_engine import OpenVinoEngine
from subpixel.engines.torch_engine import TorchEngine

__all__ = [
    "AUTO_ENGINES",
    "ENGINES",
    "PRECISIONS",
    "Calibration",
    "Engine",
    "EngineError",
    "EngineModule",
    "GridEngine",
    "OnnxRuntimeEngine",
    "OpenVinoEngine",
    "TorchEngine",
    "auto_choice",
    "calibrate",
    "chosen_engine",
    "clear_engine_cache",
    "default_cache_file",
    "engine_module",
    "make_engine",
    "set_threads",
]
