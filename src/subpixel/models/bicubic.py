"""Bicubic upscaling as a model, so every tool can compare a network against it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from subpixel.bicubic import REACH, phase_taps, phase_weights, upscale_axis
from subpixel.models.base import SRNetwork


@dataclass(frozen=True)
class BicubicConfig:
    """Bicubic upscaling has no settings but its scale and channels."""

    scale: int = 3
    channels: int = 1

    def __post_init__(self) -> None:
        if self.scale < 1:
            raise ValueError(f"scale must be >= 1, got {self.scale}")


class Bicubic(SRNetwork):
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

    architecture = "bicubic"
    trainable = False

    def __init__(self, scale: int = 3, channels: int = 1) -> None:
        super().__init__()
        self.config = BicubicConfig(scale, channels)
        # Plain numbers, worked out once: nothing for torch.compile to trace into.
        self.taps = phase_taps(scale)

    def forward(self, lr: Tensor) -> Tensor:
        # Rows first, then columns, as MATLAB's imresize does at equal scales.
        rows = upscale_axis(lr, self.taps, dim=-2)  # (B, C, rH, W)
        return upscale_axis(rows, self.taps, dim=-1)  # (B, C, rH, rW)

    def onnx_form(self) -> nn.Module:
        """``BicubicConvolution``: no size-dependent index tensors, so it exports with dynamic
        sizes."""
        return BicubicConvolution(self.scale, self.channels)


class BicubicConvolution(nn.Module):
    """``Bicubic`` as edge padding, a depthwise 5x5 convolution and a depth-to-space shuffle.

    Input (B, C, H, W); output (B, C, rH, rW), equal to ``Bicubic(scale, channels)`` up to
    float rounding. Clamping indices to the image is edge ("replicate") padding.
    """

    def __init__(self, scale: int, channels: int) -> None:
        super().__init__()
        self.scale = scale
        self.channels = channels
        self.weight: Tensor
        phases = torch.from_numpy(phase_weights(scale).copy())  # (r, 5) float64
        # Channel c r^2 + i r + j is colour c at phase (row i, column j): torch's shuffle order.
        kernel = torch.einsum("ik,jl->ijkl", phases, phases).reshape(scale * scale, 1, 5, 5)
        weight = kernel.repeat(channels, 1, 1, 1).float()  # (C r^2, 1, 5, 5)
        self.register_buffer("weight", weight)

    def forward(self, lr: Tensor) -> Tensor:
        x = F.pad(lr, (REACH,) * 4, mode="replicate")  # (B, C, H + 4, W + 4)
        phases = F.conv2d(x, self.weight, groups=self.channels)  # (B, C r^2, H, W)
        return F.pixel_shuffle(phases, self.scale)  # (B, C, rH, rW)
