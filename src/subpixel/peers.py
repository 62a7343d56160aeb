"""Other projects' published weights, mapped onto subpixel's networks for comparison.

Peer ``.pth`` files are read with ``torch.load(weights_only=True)``, which restores tensors
only and refuses to run pickled code.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from subpixel import models
from subpixel.errors import ModelError
from subpixel.weights import describe

__all__ = ["load_yjn870_fsrcnn"]


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
