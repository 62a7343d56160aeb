"""Bicubic upscaling as a model, so every tool can compare a network against it."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from subpixel.resize import contributions


class Bicubic(nn.Module):
    """MATLAB-compatible bicubic upscaling (cubic kernel a = -0.5, edge pixels replicated).

    Input (B, C, H, W) float; output (B, C, rH, rW), computed in float with no rounding between
    the two 1-D passes (``subpixel.resize.imresize`` on uint8 arrays rounds like MATLAB).
    Channels are treated independently, so any C works. No learned parameters.

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

    def _taps(self, length: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        indices, weights = contributions(length, length * self.scale, float(self.scale))
        return (
            torch.from_numpy(indices).to(device),
            torch.from_numpy(weights).to(device=device, dtype=dtype),
        )

    def _resize_rows(self, x: Tensor) -> Tensor:
        # x (..., H, W) -> (..., rH, W): a weighted sum over P gathered rows per output row.
        indices, weights = self._taps(x.shape[-2], x.device, x.dtype)
        out = x.new_zeros((*x.shape[:-2], indices.shape[0], x.shape[-1]))
        for tap in range(indices.shape[1]):
            out += weights[:, tap, None] * x[..., indices[:, tap], :]
        return out

    def forward(self, lr: Tensor) -> Tensor:
        # Rows first, then columns, as MATLAB's imresize does at equal scales.
        rows = self._resize_rows(lr)  # (B, C, rH, W)
        return self._resize_rows(rows.transpose(-1, -2)).transpose(-1, -2)  # (B, C, rH, rW)
