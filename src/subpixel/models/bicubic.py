"""Bicubic upscaling as a model, so every tool can compare a network against it."""

from __future__ import annotations

from torch import Tensor, nn

from subpixel.bicubic import phase_taps, upscale_axis


class Bicubic(nn.Module):
    """MATLAB-compatible bicubic upscaling (cubic kernel a = -0.5, edge pixels replicated).

    Input (B, C, H, W) float; output (B, C, rH, rW), computed in float with no rounding between
    the two 1-D passes (``subpixel.resize.imresize`` on uint8 arrays rounds like MATLAB).
    Channels are treated independently, so any C works. No learned parameters.

    Each pass runs phase by phase (``subpixel.bicubic.upscale_axis``): at an integer scale
    every output pixel of phase p takes the same 5 weights from its LR neighbourhood, so there
    is nothing to gather.

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
