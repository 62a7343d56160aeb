"""ESPCN: features in LR space, then a sub-pixel convolution and periodic shuffling to HR.

Shi et al. 2016, "Real-Time Single Image and Video Super-Resolution Using an Efficient
Sub-Pixel Convolutional Neural Network".
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from subpixel.models.base import SRNetwork

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "prelu": nn.PReLU, "sigmoid": nn.Sigmoid}


@dataclass(frozen=True)
class ESPCNConfig:
    """Depth, widths, kernels and activations of an ESPCN.

    ``features[i]`` channels come out of a ``kernels[i]`` x ``kernels[i]`` convolution followed
    by ``activation``; the last kernel belongs to the sub-pixel layer (C * scale^2 outputs).
    The paper's network is the default: 5x5 -> 64, tanh; 3x3 -> 32, tanh; 3x3 -> C r^2.
    ``residual`` adds the input to every one of its r^2 phases before the shuffle, i.e.
    nearest-neighbour upsampling of the input to the output (ECBSR's global skip), so the
    layers learn the difference; the collapsed form of ``models.ReparamSR`` uses it.
    """

    scale: int = 3
    channels: int = 1
    features: tuple[int, ...] = (64, 32)
    kernels: tuple[int, ...] = (5, 3, 3)
    activation: str = "tanh"
    output_activation: str | None = None
    residual: bool = False

    def __post_init__(self) -> None:
        if self.scale < 1:
            raise ValueError(f"scale must be >= 1, got {self.scale}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 (luminance) or 3 (RGB), got {self.channels}")
        if len(self.kernels) != len(self.features) + 1:
            raise ValueError("need one kernel size per feature layer plus one for the output layer")
        if any(k % 2 == 0 for k in self.kernels):
            raise ValueError(f"kernel sizes must be odd for 'same' padding, got {self.kernels}")
        for name in (self.activation, self.output_activation):
            if name is not None and name not in _ACTIVATIONS:
                raise ValueError(f"unknown activation {name!r}; choose from {sorted(_ACTIVATIONS)}")


# The 7-layer variant: six tanh feature layers, a sigmoid on the output, depth_to_space.
ESPCN7 = {
    "features": (64, 64, 64, 32, 32, 32),
    "kernels": (5, 3, 3, 3, 3, 3, 3),
    "output_activation": "sigmoid",
}


def _activation(name: str, channels: int) -> nn.Module:
    # PReLU learns one slope per channel; the others take no size.
    return nn.PReLU(channels) if name == "prelu" else _ACTIVATIONS[name]()


class ESPCN(SRNetwork):
    """Efficient sub-pixel convolutional network (Shi et al. 2016).

    Input (B, C, H, W) float in [0, 1]; output (B, C, rH, rW), not clamped.
    Deviations from the paper: "same" zero padding, so the output covers the whole input
    (the paper trained on unpadded patches and cropped the targets); optionally the global
    residual of ``ESPCNConfig.residual``, which the paper does not have.

    Example:
        >>> import torch
        >>> ESPCN(ESPCNConfig(scale=3))(torch.rand(1, 1, 8, 8)).shape
        torch.Size([1, 1, 24, 24])
    """

    architecture = "espcn"
    ends_in_subpixel = True

    def __init__(self, config: ESPCNConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ESPCNConfig()
        layers: list[nn.Module] = []
        in_channels = config.channels
        for width, kernel in zip(config.features, config.kernels, strict=False):
            layers += [
                nn.Conv2d(in_channels, width, kernel, padding=kernel // 2),
                _activation(config.activation, width),
            ]
            in_channels = width
        self.features = nn.Sequential(*layers)
        last = config.kernels[-1]
        # The sub-pixel convolution: C * r^2 LR-space outputs, one per HR phase.
        self.subpixel = nn.Conv2d(
            in_channels, config.channels * config.scale**2, last, padding=last // 2
        )
        self.shuffle = nn.PixelShuffle(config.scale)
        self.output_activation = (
            _activation(config.output_activation, config.channels)
            if config.output_activation
            else nn.Identity()
        )

    def forward(self, lr: Tensor) -> Tensor:
        return self.shuffle(self.forward_phases(lr))  # (B, C, rH, rW)

    def output_layer(self) -> nn.Module:
        return self.subpixel

    def at_scale(self, scale: int) -> ESPCN:
        """A copy at another scale that starts where this one is: the same features, and
        each HR phase (i, j) of the new sub-pixel layer is a copy of this one's phase
        (i q // r, j q // r), q this scale and r the new one. So the copy's output is this
        network's output resampled by nearest neighbour onto the finer (or coarser) grid:
        exactly when r is a multiple of q (x4 from x2 is x2's output upsampled twice).
        How a run at one scale trains on from another's weights (``start_from``)."""
        config = replace(self.config, scale=scale)
        parameter = next(self.parameters())
        copy = ESPCN(config).to(parameter.device, parameter.dtype)
        copy.features.load_state_dict(self.features.state_dict())
        copy.output_activation.load_state_dict(self.output_activation.state_dict())
        q, c = self.config.scale, config.channels
        phase = torch.arange(scale) * q // scale  # the donor's phase row (or column) for each
        donor = (phase[:, None] * q + phase[None, :]).reshape(-1)  # (r^2,) of the q^2
        index = (torch.arange(c)[:, None] * q * q + donor[None, :]).reshape(-1)  # (C r^2,)
        with torch.no_grad():
            copy.subpixel.weight.copy_(self.subpixel.weight[index])
            assert self.subpixel.bias is not None and copy.subpixel.bias is not None
            copy.subpixel.bias.copy_(self.subpixel.bias[index])
        return copy.train(self.training)

    def start_from(self, donor: nn.Module) -> None:
        """A network of this configuration as a state dict; one that differs only in scale
        through ``at_scale`` (a run at x4 starting from x2's weights)."""
        if (
            isinstance(donor, ESPCN)
            and donor.config.scale != self.config.scale
            and donor.config == replace(self.config, scale=donor.config.scale)
        ):
            donor = donor.at_scale(self.config.scale)
        super().start_from(donor)

    def forward_phases(self, lr: Tensor) -> Tensor:
        """The output before periodic shuffling: (B, C r^2, H, W), one channel per HR phase.

        Training can compare this with ``pixel_unshuffle(hr, r)`` and skip the shuffle; the
        output activation is elementwise, so it commutes with the shuffle.
        """
        x = self.features(lr)  # (B, F, H, W)
        phases = self.subpixel(x)  # (B, C r^2, H, W)
        if self.config.residual:
            phases = add_nearest(phases, lr)
        return self.output_activation(phases)


def add_nearest(phases: Tensor, lr: Tensor) -> Tensor:
    """``phases`` (B, C r^2, H, W) plus ``lr`` (B, C, H, W) at every phase of its colour.

    After the shuffle this is the output plus ``lr`` upsampled by nearest neighbour; torch's
    shuffle reads colour c at phase s from channel c r^2 + s, hence the (C, r^2) split.
    """
    b, c, h, w = lr.shape
    split = phases.reshape(b, c, -1, h, w) + lr.unsqueeze(2)  # (B, C, r^2, H, W)
    return split.reshape(b, -1, h, w)
