"""Bicubic upscaling as a model, so every tool can compare a network against it."""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from subpixel.resize import contributions

#: LR pixels on each side that an output pixel's taps reach at an integer scale.
REACH = 2


@functools.cache
def phase_weights(scale: int) -> np.ndarray:
    """(r, 5) float64: output phase ``p`` of LR pixel ``q`` is ``sum_k w[p, k] x[q - 2 + k]``.

    At an integer scale MATLAB's bicubic is periodic: output pixel ``r q + p`` takes the same
    weights from LR pixels ``q - 2 .. q + 2`` for every ``q``, with indices clamped to the
    image (edge replication) at the borders. The weights are read off ``contributions`` far
    from the borders, where nothing is clamped. Read-only.

    Example:
        >>> phase_weights(2).shape
        (2, 5)
    """
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    q = 2 * REACH  # rows q - 2 .. q + 2 of a (2q + 1)-row input are all in range
    indices, weights = contributions(2 * q + 1, (2 * q + 1) * scale, float(scale))
    table = np.zeros((scale, 2 * REACH + 1))
    for phase in range(scale):
        row = q * scale + phase
        for index, weight in zip(indices[row], weights[row], strict=True):
            if weight != 0.0:  # only rows q - 2 .. q + 2 have nonzero weights, at any scale
                table[phase, int(index) - q + REACH] += float(weight)
    table.setflags(write=False)
    return table


Taps = tuple[tuple[tuple[int, float], ...], ...]


def phase_taps(scale: int) -> Taps:
    """``phase_weights`` as plain numbers: per phase, (offset into the padded input, weight)
    for the nonzero weights only (even scales have a zero tap in every phase)."""
    return tuple(
        tuple((k, w) for k, w in enumerate(weights.tolist()) if w != 0.0)
        for weights in phase_weights(scale)
    )


def upscale_axis(x: Tensor, taps: Taps, dim: int) -> Tensor:
    """MATLAB bicubic along one dimension of ``x``, phase by phase (``taps = phase_taps(r)``).

    Edge padding by 2 and, for each of the r output phases, a weighted sum of 5 shifted
    views: the whole pass is 5 r multiply-adds per input value with no index tensors, and
    the phases are interleaved by one ``stack``. Float rounding aside it equals the tap
    gather of ``contributions`` (tests hold it to 1e-12 in float64).
    """
    dim = dim % x.dim()
    if dim < x.dim() - 2:
        raise ValueError("upscale_axis works along one of the last two dimensions")
    length = x.shape[dim]
    # F.pad lists the last dimension first; "replicate" is MATLAB's index clamping.
    padding = (REACH, REACH, 0, 0) if dim == x.dim() - 1 else (0, 0, REACH, REACH)
    padded = F.pad(x, padding, mode="replicate")
    phases = []
    for (k0, w0), *rest in taps:
        acc = padded.narrow(dim, k0, length) * w0
        for k, weight in rest:
            acc.add_(padded.narrow(dim, k, length), alpha=weight)
        phases.append(acc)
    return torch.stack(phases, dim=dim + 1).flatten(dim, dim + 1)


class Bicubic(nn.Module):
    """MATLAB-compatible bicubic upscaling (cubic kernel a = -0.5, edge pixels replicated).

    Input (B, C, H, W) float; output (B, C, rH, rW), computed in float with no rounding between
    the two 1-D passes (``subpixel.resize.imresize`` on uint8 arrays rounds like MATLAB).
    Channels are treated independently, so any C works. No learned parameters.

    Each pass runs phase by phase (``upscale_axis``): at an integer scale every output pixel
    of phase p takes the same 5 weights from its LR neighbourhood, so there is nothing to
    gather.

    Example:
        >>> Bicubic(scale=2)(torch.ones(1, 1, 4, 4)).shape
        torch.Size([1, 1, 8, 8])
    """

    def __init__(self, scale: int = 3, channels: int = 1) -> None:
        super().__init__()
        if scale < 1:
            raise ValueError(f"scale must be >= 1, got {scale}")
        self.scale = scale
        self.channels = channels
        # Plain numbers, worked out once: nothing for torch.compile to trace into.
        self.taps = phase_taps(scale)

    def forward(self, lr: Tensor) -> Tensor:
        # Rows first, then columns, as MATLAB's imresize does at equal scales.
        rows = upscale_axis(lr, self.taps, dim=-2)  # (B, C, rH, W)
        return upscale_axis(rows, self.taps, dim=-1)  # (B, C, rH, rW)
