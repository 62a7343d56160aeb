"""Networks trained with re-parameterised blocks that collapse into a plain network.

Zhang et al. 2021, "Edge-oriented Convolution Block for Real-time Super Resolution on Mobile
Devices" (ECBSR); Bhardwaj et al. 2022, "Collapsible Linear Blocks for Super-Efficient Super
Resolution" (SESR). Both train a plain chain of convolutions and activations whose every
convolution is a block of linear branches (``subpixel.reparam``); each block collapses into
one convolution, so the trained network *is* an ESPCN-class network of the same depth and
width, and runs at that cost. ``LinearFSRCNN`` trains FSRCNN the same way (SESR's blocks in
place of its body's convolutions) and collapses into an ordinary ``FSRCNN``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from subpixel.models.base import SRNetwork
from subpixel.models.espcn import ESPCN, ESPCNConfig, add_nearest
from subpixel.models.fsrcnn import FSRCNN, FSRCNNConfig
from subpixel.reparam import CollapsibleLinearBlock, EdgeOrientedBlock

BLOCKS = ("ecb", "sesr")


@dataclass(frozen=True)
class ReparamSRConfig:
    """Block kind, depth and widths of a re-parameterised network.

    ``blocks`` middle blocks of ``features`` channels sit between a first block (C ->
    ``features``) and a last block (``features`` -> C r^2); ``kernels`` are the first,
    middle and last kernel sizes; ``hidden`` is the width of each block's expanded branch
    while training; ``identity`` adds the identity branch to blocks that keep their channel
    count; ``residual`` adds the input, nearest-neighbour upsampled, to the output.
    The default is ECBSR-M4C16.
    """

    scale: int = 3
    channels: int = 1
    block: str = "ecb"
    blocks: int = 4
    features: int = 16
    hidden: int = 32
    kernels: tuple[int, int, int] = (3, 3, 3)
    identity: bool = True
    residual: bool = True

    def __post_init__(self) -> None:
        if self.scale < 1:
            raise ValueError(f"scale must be >= 1, got {self.scale}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 (luminance) or 3 (RGB), got {self.channels}")
        if self.block not in BLOCKS:
            raise ValueError(f"unknown block {self.block!r}; choose from {list(BLOCKS)}")
        if self.blocks < 0 or self.features < 1 or self.hidden < 1:
            raise ValueError("need blocks >= 0, features >= 1 and hidden >= 1")
        if len(self.kernels) != 3:
            raise ValueError(f"need three kernel sizes (first, middle, last), got {self.kernels}")
        smallest = 3 if self.block == "ecb" else 1  # ECB's edge filters are 3x3
        if any(k < smallest or k % 2 == 0 for k in self.kernels):
            raise ValueError(f"{self.block} kernel sizes must be odd and >= {smallest}")


class ReparamSR(SRNetwork):
    """A chain of re-parameterised blocks with PReLU, a last block to C r^2 phases, and a
    periodic shuffle (ECBSR; SESR without its long residual).

    Input (B, C, H, W) float in [0, 1]; output (B, C, rH, rW), not clamped. ``collapse()``
    returns the equal ``models.ESPCN`` (PReLU, ``residual`` as configured), which is what
    weights files hold (``subpixel.weights.save_weights`` collapses it).

    Deviations from the papers: ECBSR's expanded branch is ``2 x out_channels`` wide, here
    ``hidden`` for every block (the same except the last block at x2 and x3); ECBSR adds the
    input by broadcasting, which works for C = 1 only, here per colour. SESR's long residual
    (from the first block's output over the middle blocks) is left out, since it spans the
    activations and no plain chain can hold it; SESR's global skip is ``residual``.

    Example:
        >>> net = ReparamSR(ReparamSRConfig(scale=2))
        >>> lr = torch.rand(1, 1, 8, 8)
        >>> bool((net.collapse()(lr) - net(lr)).abs().max() < 1e-5)
        True
    """

    architecture = "ecbsr"
    ends_in_subpixel = True

    def __init__(self, config: ReparamSRConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ReparamSRConfig()
        first, middle, last = config.kernels
        widths = [config.channels] + [config.features] * (config.blocks + 1)
        kernels = [first] + [middle] * config.blocks
        pairs = zip(widths[:-1], widths[1:], kernels, strict=True)
        self.blocks = nn.ModuleList(self._block(c_in, c_out, k) for c_in, c_out, k in pairs)
        self.activations = nn.ModuleList(nn.PReLU(config.features) for _ in self.blocks)
        self.last = self._block(config.features, config.channels * config.scale**2, last)
        self.shuffle = nn.PixelShuffle(config.scale)

    def _block(
        self, c_in: int, c_out: int, kernel: int
    ) -> EdgeOrientedBlock | CollapsibleLinearBlock:
        c = self.config
        if c.block == "ecb":
            return EdgeOrientedBlock(c_in, c_out, kernel, c.hidden, c.identity)
        return CollapsibleLinearBlock(c_in, c_out, kernel, c.hidden, c.identity)

    def architecture_name(self) -> str | None:
        if super().architecture_name() is None:
            return None
        return "ecbsr" if self.config.block == "ecb" else "sesr"

    def output_layer(self) -> nn.Module:
        return self.last

    def forward(self, lr: Tensor) -> Tensor:
        return self.shuffle(self.forward_phases(lr))  # (B, C, rH, rW)

    def forward_phases(self, lr: Tensor) -> Tensor:
        """The output before periodic shuffling: (B, C r^2, H, W), one channel per HR phase."""
        x = lr
        for block, activation in zip(self.blocks, self.activations, strict=True):
            x = activation(block(x))  # (B, F, H, W)
        phases = self.last(x)  # (B, C r^2, H, W)
        return add_nearest(phases, lr) if self.config.residual else phases

    def espcn_config(self) -> ESPCNConfig:
        """The configuration of the ESPCN this network collapses into."""
        c = self.config
        first, middle, last = c.kernels
        return ESPCNConfig(
            scale=c.scale,
            channels=c.channels,
            features=(c.features,) * (c.blocks + 1),
            kernels=(first,) + (middle,) * c.blocks + (last,),
            activation="prelu",
            residual=c.residual,
        )

    def collapse(self) -> ESPCN:
        """A new ``models.ESPCN`` equal to this network (to float rounding), in the same
        training/eval mode, on the same device and dtype."""
        parameter = next(self.parameters())
        espcn = ESPCN(self.espcn_config()).to(parameter.device, parameter.dtype)
        convs = [m for m in espcn.features if isinstance(m, nn.Conv2d)] + [espcn.subpixel]
        prelus = [m for m in espcn.features if isinstance(m, nn.PReLU)]
        with torch.no_grad():
            for conv, block in zip(convs, [*self.blocks, self.last], strict=True):
                collapsed = block.collapse()
                conv.weight.copy_(collapsed.weight)
                assert conv.bias is not None and collapsed.bias is not None
                conv.bias.copy_(collapsed.bias)
            for prelu, activation in zip(prelus, self.activations, strict=True):
                assert isinstance(activation, nn.PReLU)
                prelu.weight.copy_(activation.weight)
        return espcn.train(self.training)

    def start_from(self, donor: nn.Module) -> None:
        """A collapsed file (what weights files hold: an ``ESPCN``) through
        ``load_collapsed``, one of another scale through ``ESPCN.at_scale`` first; a
        checkpoint's training form as a state dict."""
        if isinstance(donor, ESPCN):
            if donor.config.scale != self.config.scale:
                donor = donor.at_scale(self.config.scale)  # x4 from x2's file
            self.load_collapsed(donor)
        else:
            super().start_from(donor)

    def load_collapsed(self, plain: ESPCN) -> None:
        """Set every block and activation so that this network equals ``plain`` (to float
        rounding), the inverse of ``collapse``: a shipped (collapsed) model, or any ESPCN of
        ``espcn_config()``, goes on training re-parameterised.

        Raises:
            ValueError: ``plain`` is an ESPCN of another configuration.
        """
        if plain.config != self.espcn_config():
            raise ValueError(
                f"cannot load {plain.config} into a network that collapses into "
                f"{self.espcn_config()}"
            )
        convs = [m for m in plain.features if isinstance(m, nn.Conv2d)] + [plain.subpixel]
        prelus = [m for m in plain.features if isinstance(m, nn.PReLU)]
        for conv, block in zip(convs, [*self.blocks, self.last], strict=True):
            assert conv.bias is not None
            block.set_collapsed(conv.weight, conv.bias)
        with torch.no_grad():
            for prelu, activation in zip(prelus, self.activations, strict=True):
                assert isinstance(activation, nn.PReLU)
                activation.weight.copy_(prelu.weight)


@dataclass(frozen=True)
class LinearFSRCNNConfig(FSRCNNConfig):
    """FSRCNN(d, s, m) whose body's convolutions train as SESR's collapsible linear blocks,
    each ``hidden`` wide; ``plain()`` is the FSRCNN it collapses into. ``hidden`` must be
    at least every layer's ``C_in k k`` (25 C, d, 9 s), so that every plain kernel has an
    exact block form (the fresh network starts as the plain one would)."""

    hidden: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        needed = max(25 * self.channels, self.d, 9 * self.s if self.m else self.s)
        if self.hidden < needed:
            raise ValueError(
                f"hidden must be >= {needed} (every layer's input channels x kernel area) "
                f"for d={self.d}, s={self.s}, got {self.hidden}"
            )

    def plain(self) -> FSRCNNConfig:
        """The configuration of the FSRCNN this network collapses into."""
        return FSRCNNConfig(**{f.name: getattr(self, f.name) for f in fields(FSRCNNConfig)})


class LinearFSRCNN(FSRCNN):
    """FSRCNN trained with every convolution of its body (5x5, shrinking 1x1, mapping 3x3s,
    expanding 1x1) a ``CollapsibleLinearBlock``: a wide ``k x k`` convolution and a 1x1
    projection, plus the identity where a layer keeps its width (the mapping layers). The
    deconvolution and the PReLUs stay as they are.

    The blocks run their merged kernel, so a step costs about a plain FSRCNN's. A fresh
    network starts as the plain FSRCNN of the same seed does (each block set to the plain
    network's He-initialised kernel), so the two forms differ only in how training moves
    the weights. ``collapse()`` gives the equal ``FSRCNN``, which weights files hold.

    Example:
        >>> net = LinearFSRCNN(LinearFSRCNNConfig(scale=2, d=32, s=5, m=1, hidden=64))
        >>> lr = torch.rand(1, 1, 8, 8)
        >>> bool((net.collapse()(lr) - net(lr)).abs().max() < 1e-5)
        True
    """

    architecture = "fsrcnn-linear"

    def __init__(self, config: LinearFSRCNNConfig | None = None) -> None:
        config = config or LinearFSRCNNConfig()
        super().__init__(config)
        for index, layer in enumerate(self.body):
            if isinstance(layer, nn.Conv2d):
                block = CollapsibleLinearBlock(
                    layer.in_channels, layer.out_channels, layer.kernel_size[0], config.hidden
                )
                if not layer.weight.is_meta:  # built for its shapes only: nothing to set
                    assert layer.bias is not None
                    block.set_collapsed(layer.weight, layer.bias)
                self.body[index] = block

    def collapse(self) -> FSRCNN:
        """A new ``FSRCNN`` equal to this network (to float rounding), in the same
        training/eval mode, on the same device and dtype."""
        parameter = next(self.parameters())
        plain = FSRCNN(self.config.plain()).to(parameter.device, parameter.dtype)
        with torch.no_grad():
            for mine, theirs in zip(self.body, plain.body, strict=True):
                if isinstance(mine, CollapsibleLinearBlock):
                    assert isinstance(theirs, nn.Conv2d) and theirs.bias is not None
                    weight, bias = mine.merged_parameters()
                    theirs.weight.copy_(weight)
                    theirs.bias.copy_(bias)
                else:
                    theirs.load_state_dict(mine.state_dict())
            plain.deconv.load_state_dict(self.deconv.state_dict())
        return plain.train(self.training)

    def start_from(self, donor: nn.Module) -> None:
        """A plain FSRCNN of ``config.plain()`` (a shipped file) with every block set to its
        kernel, so it goes on training in this form; a checkpoint's training form as a state
        dict.

        Raises:
            ValueError: a plain FSRCNN of another configuration.
        """
        if not isinstance(donor, FSRCNN) or isinstance(donor, LinearFSRCNN):
            super().start_from(donor)
            return
        if donor.config != self.config.plain():
            raise ValueError(
                f"cannot load {donor.config} into a network that collapses into "
                f"{self.config.plain()}"
            )
        with torch.no_grad():
            for mine, theirs in zip(self.body, donor.body, strict=True):
                if isinstance(mine, CollapsibleLinearBlock):
                    assert isinstance(theirs, nn.Conv2d) and theirs.bias is not None
                    mine.set_collapsed(theirs.weight, theirs.bias)
                else:
                    mine.load_state_dict(theirs.state_dict())
            self.deconv.load_state_dict(donor.deconv.state_dict())
