"""FSRCNN: feature extraction, shrinking, mapping, expanding, and a 9x9 deconvolution.

Dong, Loy and Tang 2016, "Accelerating the Super-Resolution Convolutional Neural Network".
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from subpixel.layers import SubpixelConv2d, deconv_to_subpixel, deconv_via_subpixel
from subpixel.models.base import SUBPIXEL_FORM, SRNetwork


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

    def trunk_config_key(self) -> tuple[int, ...]:
        """What the trunk's shape depends on (everything but the scale)."""
        return (self.channels, self.d, self.s, self.m, self.deconv_kernel)


class FSRCNN(SRNetwork):
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

    architecture = "fsrcnn"
    # oneDNN's kernels for its narrow layers run about 1.5x faster channels-last (measured).
    channels_last_on_cpu = True

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
        if self.deconv.weight.is_meta:
            # Built for its shapes only (a weights file's card is checked so): no values to
            # draw, and drawing normal values on "meta" imports torch._dynamo, seconds a load.
            return
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

    def output_layer(self) -> nn.Module:
        return self.deconv

    def forward_for_training(self, lr: Tensor) -> Tensor:
        """The deconvolution in its exact sub-pixel form, computed from its own parameters:
        the same function and gradients, about 1.5x faster on CPU."""
        if not isinstance(self.deconv, nn.ConvTranspose2d):
            return self(lr)
        return deconv_via_subpixel(self.deconv, self.body(lr))  # (B, C, rH, rW)

    def fast_form(self) -> FSRCNN | None:
        """The sub-pixel form (``fsrcnn_to_subpixel``) of a network with a deconvolution."""
        return fsrcnn_to_subpixel(self) if isinstance(self.deconv, nn.ConvTranspose2d) else None

    @property
    def form_name(self) -> str:
        return SUBPIXEL_FORM if isinstance(self.deconv, SubpixelConv2d) else ""


def fsrcnn_to_subpixel(model: FSRCNN) -> FSRCNN:
    """A copy of ``model`` whose 9x9 deconvolution runs as an LR-space convolution + shuffle.

    The outputs are the same (to float rounding): a stride-r transposed convolution is an
    LR-space convolution with C * r^2 outputs followed by periodic shuffling.
    """
    converted = copy.deepcopy(model)
    if isinstance(converted.deconv, nn.ConvTranspose2d):
        converted.deconv = deconv_to_subpixel(converted.deconv)
    return converted


@dataclass(frozen=True)
class MultiScaleFSRCNNConfig:
    """One FSRCNN trunk with a deconvolution head for each of ``scales``; ``scale`` is the
    head a plain call uses."""

    scale: int = 3
    channels: int = 1
    d: int = 56
    s: int = 12
    m: int = 4
    deconv_kernel: int = 9
    scales: tuple[int, ...] = (2, 3, 4)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", tuple(sorted(int(s) for s in self.scales)))
        if self.scale not in self.scales:
            raise ValueError(f"scale {self.scale} is not one of the heads {self.scales}")
        self.trunk_config(self.scale)  # validates the shared fields

    def trunk_config(self, scale: int) -> FSRCNNConfig:
        return FSRCNNConfig(scale, self.channels, self.d, self.s, self.m, self.deconv_kernel)


class MultiScaleFSRCNN(SRNetwork):
    """FSRCNN's multi-scale form (Dong et al. 2016, section 3.4): the convolution layers are
    shared by every scale and only the deconvolution differs, so one trunk run serves all.

    ``forward(lr)`` uses the default head; ``forward_all(lr)`` returns every scale's output
    from one trunk run; ``at_scale(r)`` is a plain FSRCNN sharing this module's parameters.
    """

    architecture = "fsrcnn-multiscale"
    trainable = False

    def __init__(self, config: MultiScaleFSRCNNConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or MultiScaleFSRCNNConfig()
        self.body = FSRCNN(c.trunk_config(c.scale)).body
        self.heads = nn.ModuleDict({f"x{r}": FSRCNN(c.trunk_config(r)).deconv for r in c.scales})

    def forward(self, lr: Tensor) -> Tensor:
        return self.heads[f"x{self.config.scale}"](self.body(lr))  # (B, C, rH, rW)

    def output_layer(self) -> nn.Module:
        return self.heads[f"x{self.config.scale}"]

    def forward_all(self, lr: Tensor) -> dict[int, Tensor]:
        features = self.body(lr)  # (B, d, H, W), computed once
        return {r: self.heads[f"x{r}"](features) for r in self.config.scales}

    def at_scale(self, scale: int) -> FSRCNN:
        """A single-scale FSRCNN that shares (not copies) this trunk and the x``scale`` head."""
        if scale not in self.config.scales:
            raise ValueError(f"no x{scale} head; heads: {self.config.scales}")
        single = FSRCNN(self.config.trunk_config(scale))
        single.body = self.body
        single.deconv = self.heads[f"x{scale}"]
        return single


def combine_fsrcnn_heads(
    networks: list[FSRCNN], default_scale: int | None = None
) -> MultiScaleFSRCNN:
    """Put FSRCNNs that share one trunk (trained with ``--train-only head`` from the same run)
    into one multi-scale network. Raises ValueError when the trunks differ."""
    if not networks:
        raise ValueError("give at least one FSRCNN")
    first = networks[0].config
    scales = [n.config.scale for n in networks]
    if len(set(scales)) != len(scales):
        raise ValueError(f"two networks have the same scale: {scales}")
    trunk = networks[0].body.state_dict()
    for network in networks[1:]:
        other = network.body.state_dict()
        same = all(torch.equal(trunk[k], other[k]) for k in trunk)
        if network.config.trunk_config_key() != first.trunk_config_key() or not same:
            raise ValueError(
                f"the x{network.config.scale} network's trunk differs from the "
                f"x{first.scale} network's; train heads with --train-only head from one run"
            )
    config = MultiScaleFSRCNNConfig(
        scale=default_scale or first.scale,
        channels=first.channels,
        d=first.d,
        s=first.s,
        m=first.m,
        deconv_kernel=first.deconv_kernel,
        scales=tuple(scales),
    )
    combined = MultiScaleFSRCNN(config)
    combined.body.load_state_dict(trunk)
    for network in networks:
        if not isinstance(network.deconv, nn.ConvTranspose2d):
            raise ValueError("combine FSRCNNs in their deconvolution form")
        combined.heads[f"x{network.config.scale}"].load_state_dict(network.deconv.state_dict())
    return combined
