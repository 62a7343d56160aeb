"""SRCNN: bicubic upscaling, then three convolutions in HR space (the HR-space baseline).

Dong, Loy, He and Tang 2014/2016, "Image Super-Resolution Using Deep Convolutional Networks".
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from subpixel.models.base import SRNetwork
from subpixel.models.bicubic import Bicubic


@dataclass(frozen=True)
class SRCNNConfig:
    """SRCNN f1-f2-f3 with n1, n2 filters: 9-5-5 (default) or 9-1-5, n1 = 64, n2 = 32."""

    scale: int = 3
    channels: int = 1
    kernels: tuple[int, int, int] = (9, 5, 5)
    features: tuple[int, int] = (64, 32)

    def __post_init__(self) -> None:
        if self.scale < 1:
            raise ValueError(f"scale must be >= 1, got {self.scale}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 (luminance) or 3 (RGB), got {self.channels}")
        if len(self.kernels) != 3 or len(self.features) != 2:
            raise ValueError("SRCNN has three kernels and two feature widths")
        if any(k % 2 == 0 for k in self.kernels):
            raise ValueError(f"kernel sizes must be odd for 'same' padding, got {self.kernels}")


class SRCNN(SRNetwork):
    """Super-resolution CNN (Dong et al.): every convolution runs at HR resolution.

    Input (B, C, H, W) float in [0, 1] at LR size; the network upscales it by MATLAB-style
    bicubic first, so callers treat it like the LR-space networks. Output (B, C, rH, rW).
    Deviation from the paper: "same" zero padding, so the output is not cropped.

    Example:
        >>> import torch
        >>> SRCNN(SRCNNConfig(scale=2))(torch.rand(1, 1, 8, 8)).shape
        torch.Size([1, 1, 16, 16])
    """

    architecture = "srcnn"

    def __init__(self, config: SRCNNConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or SRCNNConfig()
        (k1, k2, k3), (n1, n2) = c.kernels, c.features
        self.upscale = Bicubic(c.scale, c.channels)
        self.body = nn.Sequential(
            nn.Conv2d(c.channels, n1, k1, padding=k1 // 2),  # patch extraction
            nn.ReLU(inplace=True),
            nn.Conv2d(n1, n2, k2, padding=k2 // 2),  # non-linear mapping
            nn.ReLU(inplace=True),
            nn.Conv2d(n2, c.channels, k3, padding=k3 // 2),  # reconstruction
        )

    def output_layer(self) -> nn.Module:
        return self.body[-1]

    def forward(self, lr: Tensor) -> Tensor:
        return self.body(self.upscale(lr))  # (B, C, H, W) -> (B, C, rH, rW)
