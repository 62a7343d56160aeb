"""FSRCNN: feature extraction, shrinking, mapping, expanding, and a 9x9 deconvolution.

Dong, Loy and Tang 2016, "Accelerating the Super-Resolution Convolutional Neural Network".
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from torch import Tensor, nn


@dataclass(frozen=True)
class FSRCNNConfig:
    """FSRCNN(d, s, m): FSRCNN is (56, 12, 4), FSRCNN-s is (32, 5, 1)."""

    scale: int = 3
    channels: int = 1
    d: int = 56
    s: int = 12
    m: int = 4
    deconv_kernel: int = 9

    def __post_init__(self) -> None:
        if self.scale < 1:
            raise ValueError(f"scale must be >= 1, got {self.scale}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 (luminance) or 3 (RGB), got {self.channels}")
        if min(self.d, self.s) < 1 or self.m < 0:
            raise ValueError(f"need d, s >= 1 and m >= 0, got {(self.d, self.s, self.m)}")
        if self.deconv_kernel % 2 == 0:
            raise ValueError(f"deconv_kernel must be odd, got {self.deconv_kernel}")


class FSRCNN(nn.Module):
    """Fast super-resolution CNN (Dong et al. 2016).

    Input (B, C, H, W) float in [0, 1]; output (B, C, rH, rW), not clamped.

    Layout: conv 5x5 -> d, PReLU; conv 1x1 d -> s, PReLU (shrinking); m x (conv 3x3 s -> s,
    PReLU) (mapping); conv 1x1 s -> d, PReLU (expanding); ConvTranspose2d 9x9, stride r -> C.

    The deconvolution uses padding 4 and output_padding r - 1, so the output is exactly
    (rH, rW) and LR pixel i feeds HR pixels r*i - 4 .. r*i + 4 (the kernel's centre tap lands
    on HR pixel r*i). The bicubic LR grid puts LR pixel i at HR coordinate r*i + (r - 1) / 2,
    so a trained kernel sits (r - 1) / 2 pixels off its centre; the 9x9 support leaves room
    for that at r <= 4. The same convention is used by common PyTorch FSRCNN weights.
    Deviation from the paper: "same" zero padding in every layer, so nothing is cropped.

    Example:
        >>> import torch
        >>> FSRCNN(FSRCNNConfig(scale=2))(torch.rand(1, 1, 8, 8)).shape
        torch.Size([1, 1, 16, 16])
    """

    def __init__(self, config: FSRCNNConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or FSRCNNConfig()
        layers: list[nn.Module] = [nn.Conv2d(c.channels, c.d, 5, padding=2), nn.PReLU(c.d)]
        layers += [nn.Conv2d(c.d, c.s, 1), nn.PReLU(c.s)]
        for _ in range(c.m):
            layers += [nn.Conv2d(c.s, c.s, 3, padding=1), nn.PReLU(c.s)]
        layers += [nn.Conv2d(c.s, c.d, 1), nn.PReLU(c.d)]
        self.body = nn.Sequential(*layers)
        k = c.deconv_kernel
        self.deconv: nn.Module = nn.ConvTranspose2d(
            c.d, c.channels, k, stride=c.scale, padding=k // 2, output_padding=c.scale - 1
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # The paper: He initialisation for the convolutions, N(0, 0.001) for the deconvolution.
        for module in self.body:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, a=0.25, nonlinearity="leaky_relu")
                assert module.bias is not None  # every convolution is built with a bias
                nn.init.zeros_(module.bias)
        if isinstance(self.deconv, nn.ConvTranspose2d):
            nn.init.normal_(self.deconv.weight, std=0.001)
            assert self.deconv.bias is not None  # built with a bias
            nn.init.zeros_(self.deconv.bias)

    def forward(self, lr: Tensor) -> Tensor:
        x = self.body(lr)  # (B, d, H, W)
        return self.deconv(x)  # (B, C, rH, rW)


def fsrcnn_to_subpixel(model: FSRCNN) -> FSRCNN:
    """A copy of ``model`` whose 9x9 deconvolution runs as an LR-space convolution + shuffle.

    The outputs are the same (to float rounding): a stride-r transposed convolution is an
    LR-space convolution with C * r^2 outputs followed by periodic shuffling.
    """
    from subpixel.layers import deconv_to_subpixel

    converted = copy.deepcopy(model)
    if isinstance(converted.deconv, nn.ConvTranspose2d):
        converted.deconv = deconv_to_subpixel(converted.deconv)
    return converted
