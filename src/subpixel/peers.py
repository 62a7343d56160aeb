"""Other projects' published weights, mapped onto subpixel's networks for comparison.

Peer ``.pth`` files are read with ``torch.load(weights_only=True)``, which restores tensors
only and refuses to run pickled code.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from subpixel import models
from subpixel.errors import ModelError
from subpixel.paths import data_root
from subpixel.weights import describe

__all__ = ["OPENCV_MODELS", "load_yjn870_fsrcnn", "opencv_peer_problem", "opencv_upscaler"]

# subpixel architecture -> (OpenCV dnn_superres algorithm name, file prefix)
OPENCV_MODELS = {
    "espcn": ("espcn", "ESPCN"),
    "fsrcnn": ("fsrcnn", "FSRCNN"),
    "fsrcnn-s": ("fsrcnn", "FSRCNN-small"),
}


def load_yjn870_fsrcnn(path: str | Path, scale: int) -> nn.Module:
    """FSRCNN(56, 12, 4) weights from yjn870/FSRCNN-pytorch as a subpixel FSRCNN (Y channel).

    That project names the layers ``first_part`` (5x5 conv, PReLU), ``mid_part`` (shrink,
    4 x mapping, expand, each with PReLU) and ``last_part`` (the 9x9 deconvolution with
    padding 4 and output_padding r - 1, the same geometry as ours).
    """
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for a bad or unsafe file
        raise ModelError(f"cannot read peer weights {path}: {error}") from error
    renamed: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        part, _, rest = key.partition(".")
        if part == "first_part":
            renamed[f"body.{rest}"] = tensor
        elif part == "mid_part":
            index, _, leaf = rest.partition(".")
            renamed[f"body.{int(index) + 2}.{leaf}"] = tensor
        elif part == "last_part":
            renamed[f"deconv.{rest}"] = tensor
        else:
            raise ModelError(f"unexpected tensor {key!r} in {path}")
    model = models.build("fsrcnn", scale=scale, channels=1)
    try:
        model.load_state_dict(renamed, strict=True)
    except RuntimeError as error:
        raise ModelError(
            f"{path} is not an FSRCNN x{scale}: {str(error).splitlines()[0]}"
        ) from error
    describe(model, "fsrcnn", training={"source": "yjn870/FSRCNN-pytorch", "data": "T91"})
    return model.eval()


def opencv_peer_problem() -> str | None:
    """Why OpenCV's dnn_superres peers cannot run here, or None when they can.

    They need the contrib build (``cv2.dnn_superres``) and an OpenCV that still reads its own
    TensorFlow ``.pb`` models: 5.1's importer asserts ``model_proto.has_graph()`` on them.
    """
    try:
        import cv2
    except ImportError:
        return "OpenCV is not installed (pip install 'subpixel[peers]')"
    if not hasattr(cv2, "dnn_superres"):
        return f"OpenCV {cv2.__version__} has no dnn_superres (install the contrib build)"
    major, minor = (int(part) for part in cv2.__version__.split(".")[:2])
    if (major, minor) >= (5, 1):
        return f"OpenCV {cv2.__version__} cannot read dnn_superres .pb models (5.0 and 4.x can)"
    return None


def opencv_upscaler(
    architecture: str, scale: int, folder: Path | None = None
) -> Callable[[np.ndarray], np.ndarray]:
    """OpenCV's dnn_superres with its published model, as a uint8 RGB/gray -> uint8 function.

    OpenCV upscales the full-range Y of ``cvtColor(BGR2YCrCb)`` with the network and Cr/Cb
    with bilinear ``resize``. Gray images are fed as BGR with B = G = R and read back from
    one channel. The models are TensorFlow graphs in ``$SUBPIXEL_DATA/peers/opencv_dnn_superres``.
    """
    problem = opencv_peer_problem()
    if problem is not None:
        raise ModelError(f"OpenCV peers unavailable: {problem}")
    import cv2

    if architecture not in OPENCV_MODELS:
        raise ModelError(f"no OpenCV peer for {architecture!r}; have {sorted(OPENCV_MODELS)}")
    algorithm, prefix = OPENCV_MODELS[architecture]
    path = (folder or data_root() / "peers" / "opencv_dnn_superres") / f"{prefix}_x{scale}.pb"
    if not path.is_file():
        raise ModelError(f"OpenCV peer model not found: {path}")
    engine = cv2.dnn_superres.DnnSuperResImpl_create()  # type: ignore[attr-defined]
    engine.readModel(str(path))
    engine.setModel(algorithm, scale)

    def upscale(lr: np.ndarray) -> np.ndarray:
        gray = lr.ndim == 2
        bgr = cv2.cvtColor(lr, cv2.COLOR_GRAY2BGR if gray else cv2.COLOR_RGB2BGR)
        out = engine.upsample(bgr)
        return out[..., 0] if gray else cv2.cvtColor(out, cv2.COLOR_BGR2RGB)

    return upscale
