"""Structural re-parameterisation: training-time blocks that collapse exactly into one conv.

A block of parallel *linear* branches (convolutions with no non-linearity between them, fixed
filters, the identity) is a linear map of its input, and every such branch is a convolution:
their sum is one convolution whose kernel is the sum of the branches' kernels, each branch's
sequence of convolutions composed into one. A network trains with the many branches (more
parameters, a different optimisation landscape) and runs as the single convolution, at the
cost of a plain network. Two blocks of this kind are here:

* :class:`EdgeOrientedBlock`, the ECB of ECBSR (Zhang et al., ACM MM 2021, "Edge-oriented
  Convolution Block for Real-time Super Resolution on Mobile Devices").
* :class:`CollapsibleLinearBlock`, the linear block of SESR (Bhardwaj et al., MLSys 2022,
  "Collapsible Linear Blocks for Super-Efficient Super Resolution").

Composing ``1x1`` then ``k x k``: with ``y0 = K0 x + b0`` (1x1) and ``y = K1 * y0 + b1``
(``k x k``), ``y = (K1 K0) * x + (b1 + K1 * b0)`` holds only where ``y0`` is not padded: zero
padding ``y0`` would drop the term ``K1 * b0`` at the border, where the collapsed convolution,
whose input padding is zero, has it. So the ``1x1``'s output is padded with its own bias
``b0`` (what ``K0 x + b0`` gives for a zero-padded ``x``), as ECBSR does, and the collapse is
exact everywhere. ``k x k`` then ``1x1`` (SESR's order) needs no such care: the ``1x1`` sees
no padding.

Each block's ``forward`` runs, by default, the merged kernel: ``merged_parameters`` computes
the single weight and bias from the branch parameters on every call (differentiably, so the
gradients reach every branch) and one convolution is applied. It is the same function as the
branch form (:meth:`forward_branches`) to float rounding, and a training step costs about
what the plain network's does. On one CPU thread, a forward and backward pass of a batch of
16x1x32x32 through ECBSR-M4C16 x3 took about 155 ms in branch form, 28 ms merged and 23 ms
as the plain ESPCN; through SESR's 256-wide blocks in the same shape, 580, 25 and 21 ms
(``benchmarks/reparam_step.py``).

Example:
    >>> block = EdgeOrientedBlock(4, 8)
    >>> x = torch.randn(2, 4, 9, 7)
    >>> conv = block.collapse()
    >>> conv.kernel_size, bool((conv(x) - block.forward_branches(x)).abs().max() < 1e-5)
    ((3, 3), True)
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_CHANNELS_LAST = torch.channels_last

__all__ = [
    "Collapsible",
    "CollapsibleLinearBlock",
    "EdgeOrientedBlock",
    "collapsed_conv",
    "compose_1x1_kxk",
    "compose_kxk_1x1",
    "pad_with_bias",
]


@runtime_checkable
class Collapsible(Protocol):
    """A module trained in a re-parameterised form that has an exact plain form.

    ``collapse()`` returns a new module, built from the current parameters, that computes the
    same function (to float rounding) with ordinary layers: one ``nn.Conv2d`` for a block, an
    ordinary network (``models.ESPCN``) for a network. Weights files hold the collapsed form.
    """

    def collapse(self) -> nn.Module: ...


# --------------------------------------------------------------------------- #
# Kernel algebra
# --------------------------------------------------------------------------- #


def compose_1x1_kxk(
    weight0: Tensor, bias0: Tensor, weight1: Tensor, bias1: Tensor
) -> tuple[Tensor, Tensor]:
    """The one convolution equal to a 1x1 convolution followed by a ``k x k`` one.

    Exact when the 1x1's output is padded with its bias (:func:`pad_with_bias`).

    Args:
        weight0: (M, C_in, 1, 1) and ``bias0`` (M,): the 1x1 convolution.
        weight1: (C_out, M, kh, kw) and ``bias1`` (C_out,): the ``k x k`` convolution.

    Returns:
        (C_out, C_in, kh, kw) weight and (C_out,) bias.
    """
    weight = torch.einsum("omhw,mi->oihw", weight1, weight0[:, :, 0, 0])
    bias = bias1 + torch.einsum("omhw,m->o", weight1, bias0)
    return weight, bias


def compose_kxk_1x1(
    weight0: Tensor, bias0: Tensor, weight1: Tensor, bias1: Tensor
) -> tuple[Tensor, Tensor]:
    """The one convolution equal to a ``k x k`` convolution followed by a 1x1 one.

    Args:
        weight0: (M, C_in, kh, kw) and ``bias0`` (M,): the ``k x k`` convolution.
        weight1: (C_out, M, 1, 1) and ``bias1`` (C_out,): the 1x1 convolution.

    Returns:
        (C_out, C_in, kh, kw) weight and (C_out,) bias.
    """
    projection = weight1[:, :, 0, 0]  # (C_out, M)
    return torch.einsum("om,mihw->oihw", projection, weight0), bias1 + projection @ bias0


def pad_with_bias(x: Tensor, bias: Tensor, padding: int) -> Tensor:
    """``x`` (B, C, H, W) padded by ``padding`` on each side with ``bias[c]`` in channel c.

    The interior keeps ``x``'s values bit for bit (it adds exact zeros), so the branch form's
    only rounding differences from the collapsed form come from the convolutions themselves.
    """
    if padding == 0:
        return x
    h, w = x.shape[-2:]
    border = torch.ones(h + 2 * padding, w + 2 * padding, dtype=x.dtype, device=x.device)
    border[padding:-padding, padding:-padding] = 0
    pads = (padding, padding, padding, padding)
    return F.pad(x, pads) + border * bias.view(1, -1, 1, 1)  # (B, C, H + 2p, W + 2p)


def collapsed_conv(weight: Tensor, bias: Tensor) -> nn.Conv2d:
    """An ``nn.Conv2d`` with "same" zero padding holding copies of ``weight`` and ``bias``."""
    c_out, c_in, kh, kw = weight.shape
    conv = nn.Conv2d(
        c_in, c_out, (kh, kw), padding=(kh // 2, kw // 2), device=weight.device, dtype=weight.dtype
    )
    with torch.no_grad():
        conv.weight.copy_(weight)
        assert conv.bias is not None  # built with a bias above
        conv.bias.copy_(bias)
    return conv


def _identity_kernel(channels: int, kernel_size: int, like: Tensor) -> Tensor:
    """(C, C, k, k) kernel of the identity map: 1 at the centre tap of channel c -> c."""
    kernel = torch.zeros(channels, channels, kernel_size, kernel_size, dtype=like.dtype)
    centre = kernel_size // 2
    kernel[range(channels), range(channels), centre, centre] = 1
    return kernel.to(like.device)


def _stored_channels_last(tensor: Tensor) -> bool:
    """Whether a 4-D tensor is laid out channels-last, as ``.to(memory_format=
    torch.channels_last)`` lays it out (also where its sizes make both layouts contiguous,
    as a 1-channel or 1x1 kernel's do: the strides tell)."""
    if tensor.dim() != 4:
        return False
    _, c, h, w = tensor.shape
    return tensor.stride() == (c * h * w, 1, w * c, c)


def _check_kernel(kernel_size: int, smallest: int) -> None:
    if kernel_size < smallest or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and >= {smallest}, got {kernel_size}")


class _LinearBranches(nn.Module):
    """What every block here shares: parallel linear branches from ``in_channels`` to
    ``out_channels`` (``branch_parameters``, ``forward_branches``) whose kernels sum to one
    ``k x k`` convolution. ``forward`` runs that merged kernel while ``merged`` is set (the
    default: the same outputs and gradients, at about a plain convolution's cost)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, identity: bool):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = kernel_size
        self.identity = identity and in_channels == out_channels
        self.merged = True

    def branch_parameters(self) -> dict[str, tuple[Tensor, Tensor]]:
        """Each branch as one (C_out, C_in, k, k) weight and (C_out,) bias, by name."""
        raise NotImplementedError

    def forward_branches(self, x: Tensor) -> Tensor:
        """The training form: the branches run as they are, then summed."""
        raise NotImplementedError

    def merged_parameters(self) -> tuple[Tensor, Tensor]:
        """The single (C_out, C_in, k, k) weight and (C_out,) bias (the sum of the
        branches'), differentiable."""
        branches = list(self.branch_parameters().values())
        weight = torch.stack([w for w, _ in branches]).sum(0)
        bias = torch.stack([b for _, b in branches]).sum(0)
        return weight, bias

    def forward(self, x: Tensor) -> Tensor:
        if not self.merged:
            return self.forward_branches(x)
        weight, bias = self.merged_parameters()
        kernels = [p for p in self.parameters() if p.dim() == 4]
        if kernels and all(_stored_channels_last(p) for p in kernels):
            # The network was moved to channels-last (``.to(memory_format=...)``), so its
            # kernel is too, as a plain convolution's would be: the layout of the output
            # and of the input's gradient follows it, and a chain that mixes layouts runs
            # its PReLUs several times slower on CPU.
            weight = weight.to(memory_format=_CHANNELS_LAST)
        return F.conv2d(x, weight, bias, padding=self.kernel_size // 2)  # (B, C_out, H, W)

    def collapse(self) -> nn.Conv2d:
        """A new ``nn.Conv2d`` equal to this block (to float rounding)."""
        with torch.no_grad():
            return collapsed_conv(*self.merged_parameters())

    def set_collapsed(self, weight: Tensor, bias: Tensor) -> None:
        """Set the branches so that the block equals the convolution ``weight`` (C_out, C_in,
        k, k) and ``bias`` (C_out,) (to float rounding): the inverse of ``collapse``, so a
        plain network's weights can go on training in this form. Every trainable branch
        keeps parameters of its own (none is zeroed, which would leave a product of two
        zero factors without gradient).

        Raises:
            ValueError: a kernel of another shape.
        """
        expected = (self.out_channels, self.in_channels, self.kernel_size, self.kernel_size)
        if tuple(weight.shape) != expected or tuple(bias.shape) != expected[:1]:
            raise ValueError(
                f"cannot set a {tuple(weight.shape)} kernel into a block of shape {expected}"
            )
        with torch.no_grad():
            self._set_collapsed(weight.detach(), bias.detach())

    def _set_collapsed(self, weight: Tensor, bias: Tensor) -> None:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"identity={self.identity}, merged={self.merged}"


# --------------------------------------------------------------------------- #
# ECB
# --------------------------------------------------------------------------- #

# ECBSR's fixed edge filters (its masks, with row = first index): Sobel-x, Sobel-y, Laplacian.
_EDGE_FILTERS = (
    ((1.0, 0.0, -1.0), (2.0, 0.0, -2.0), (1.0, 0.0, -1.0)),
    ((1.0, 2.0, 1.0), (0.0, 0.0, 0.0), (-1.0, -2.0, -1.0)),
    ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0)),
)
EDGE_NAMES = ("sobel-x", "sobel-y", "laplacian")


class EdgeOrientedBlock(_LinearBranches):
    """ECBSR's edge-oriented convolution block (ECB): five or six linear branches, summed.

    Branches, each from ``in_channels`` to ``out_channels``: a ``k x k`` convolution; a 1x1
    convolution expanding to ``hidden`` channels, then a ``k x k`` convolution; three times a
    1x1 convolution, then a fixed edge filter (Sobel-x, Sobel-y, Laplacian) on each channel
    with a learned per-channel scale and bias; and the identity when ``identity`` is set and
    ``in_channels == out_channels``. ``collapse()`` gives the one ``k x k`` convolution equal
    to the sum. Input (B, C_in, H, W), output (B, C_out, H, W) ("same" zero padding).

    Deviations from ECBSR: any odd ``k >= 3`` (the 3x3 edge filters sit at the centre of a
    ``k x k`` kernel); ``hidden`` is a channel count, not a multiple of ``out_channels``.

    Args:
        in_channels, out_channels: channels in and out.
        kernel_size: k, odd, at least 3 (ECBSR: 3).
        hidden: channels of the 1x1-then-k x k branch (ECBSR: 2 x out_channels).
        identity: add the input when ``in_channels == out_channels`` (ECBSR's ``with_idt``).

    Attributes:
        merged: ``forward`` runs the merged kernel (default) rather than the branches.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        hidden: int | None = None,
        identity: bool = True,
    ) -> None:
        _check_kernel(kernel_size, 3)
        super().__init__(in_channels, out_channels, kernel_size, identity)
        hidden = hidden or 2 * out_channels
        k = kernel_size
        self.conv = nn.Conv2d(in_channels, out_channels, k, padding=k // 2)
        self.expand = nn.Conv2d(in_channels, hidden, 1)
        self.expanded_conv = nn.Conv2d(hidden, out_channels, k)  # its input is bias-padded
        # The three edge branches' 1x1 convolutions as one: output e * C_out + o feeds filter e.
        self.edge_inputs = nn.Conv2d(in_channels, 3 * out_channels, 1)
        # ECBSR starts the edge branches almost silent: scale and bias ~ N(0, 1e-3^2).
        self.edge_scale = nn.Parameter(torch.randn(3 * out_channels) * 1e-3)
        self.edge_bias = nn.Parameter(torch.randn(3 * out_channels) * 1e-3)
        self.edge_filters: Tensor
        filters = F.pad(torch.tensor(_EDGE_FILTERS), ((k - 3) // 2,) * 4)  # (3, k, k)
        self.register_buffer("edge_filters", filters, persistent=False)

    def _edge_kernels(self) -> Tensor:
        """(3 C_out, 1, k, k): edge filter e scaled for channel e * C_out + o (depthwise)."""
        filters = self.edge_filters.repeat_interleave(self.out_channels, 0)  # (3 C_out, k, k)
        return (self.edge_scale[:, None, None] * filters).unsqueeze(1)

    def branch_parameters(self) -> dict[str, tuple[Tensor, Tensor]]:
        """Each branch as one (C_out, C_in, k, k) weight and (C_out,) bias, by name."""
        assert self.conv.bias is not None and self.expanded_conv.bias is not None
        assert self.expand.bias is not None
        branches = {
            f"{self.kernel_size}x{self.kernel_size}": (self.conv.weight, self.conv.bias),
            f"1x1 -> {self.kernel_size}x{self.kernel_size}": compose_1x1_kxk(
                self.expand.weight,
                self.expand.bias,
                self.expanded_conv.weight,
                self.expanded_conv.bias,
            ),
        }
        # A depthwise filter after a 1x1: channel j mixes only the 1x1's row j.
        edges, inputs = self._edge_kernels(), self.edge_inputs
        assert inputs.bias is not None
        weights = edges * inputs.weight  # (3 C_out, 1, k, k) * (3 C_out, C_in, 1, 1)
        biases = self.edge_bias + edges.sum((1, 2, 3)) * inputs.bias  # (3 C_out,)
        for name, w, b in zip(
            EDGE_NAMES, weights.unflatten(0, (3, -1)), biases.unflatten(0, (3, -1)), strict=True
        ):
            branches[f"1x1 -> {name}"] = (w, b)
        if self.identity:
            identity = _identity_kernel(self.out_channels, self.kernel_size, self.conv.weight)
            branches["identity"] = (identity, torch.zeros_like(self.conv.bias))
        return branches

    def _set_collapsed(self, weight: Tensor, bias: Tensor) -> None:
        # The plain k x k branch takes what the other branches leave: exact by construction.
        plain = f"{self.kernel_size}x{self.kernel_size}"
        others = [b for name, b in self.branch_parameters().items() if name != plain]
        rest_weight = torch.stack([w for w, _ in others]).sum(0)
        rest_bias = torch.stack([b for _, b in others]).sum(0)
        assert self.conv.bias is not None
        self.conv.weight.copy_(weight.to(rest_weight) - rest_weight)
        self.conv.bias.copy_(bias.to(rest_bias) - rest_bias)

    def forward_branches(self, x: Tensor) -> Tensor:
        """The training form: every branch run separately and summed."""
        p = self.kernel_size // 2
        y = self.conv(x)  # (B, C_out, H, W)
        assert self.expand.bias is not None
        y = y + self.expanded_conv(pad_with_bias(self.expand(x), self.expand.bias, p))
        inputs = self.edge_inputs
        assert inputs.bias is not None
        z = pad_with_bias(inputs(x), inputs.bias, p)  # (B, 3 C_out, H + 2p, W + 2p)
        edges = F.conv2d(z, self._edge_kernels(), self.edge_bias, groups=3 * self.out_channels)
        y = y + edges.unflatten(1, (3, -1)).sum(1)  # (B, 3, C_out, H, W) -> (B, C_out, H, W)
        return y + x if self.identity else y


# --------------------------------------------------------------------------- #
# SESR's collapsible linear block
# --------------------------------------------------------------------------- #


class CollapsibleLinearBlock(_LinearBranches):
    """SESR's linear block: a wide ``k x k`` convolution, a 1x1 projection, and a short
    residual (the identity) when ``identity`` is set and the block maps C channels to C.

    ``collapse()`` gives the one ``k x k`` convolution equal to the block. Input
    (B, C_in, H, W), output (B, C_out, H, W) ("same" zero padding).

    Args:
        in_channels, out_channels: channels in and out.
        kernel_size: k, odd (SESR: 5 for the first and last block, 3 between).
        hidden: channels between the two convolutions (SESR: 256).
        identity: add the input when ``in_channels == out_channels``.

    Attributes:
        merged: ``forward`` runs the merged kernel (default) rather than the two convolutions.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        hidden: int = 256,
        identity: bool = True,
    ) -> None:
        _check_kernel(kernel_size, 1)
        super().__init__(in_channels, out_channels, kernel_size, identity)
        self.expand = nn.Conv2d(in_channels, hidden, kernel_size, padding=kernel_size // 2)
        self.project = nn.Conv2d(hidden, out_channels, 1)

    def branch_parameters(self) -> dict[str, tuple[Tensor, Tensor]]:
        """Each branch as one (C_out, C_in, k, k) weight and (C_out,) bias, by name."""
        assert self.expand.bias is not None and self.project.bias is not None
        k = self.kernel_size
        branches = {
            f"{k}x{k} -> 1x1": compose_kxk_1x1(
                self.expand.weight, self.expand.bias, self.project.weight, self.project.bias
            )
        }
        if self.identity:
            identity = _identity_kernel(self.out_channels, k, self.expand.weight)
            branches["identity"] = (identity, torch.zeros_like(self.project.bias))
        return branches

    def _set_collapsed(self, weight: Tensor, bias: Tensor) -> None:
        # Keep the wide convolution, solve the projection P: P W0 = weight - identity, which
        # has an exact solution when W0's (hidden) rows span every (C_in k k) kernel.
        assert self.expand.bias is not None and self.project.bias is not None
        k, hidden = self.kernel_size, self.expand.out_channels
        if hidden < self.in_channels * k * k:
            raise ValueError(
                f"a block {hidden} wide cannot hold every {self.in_channels}x{k}x{k} kernel: "
                f"it needs hidden >= {self.in_channels * k * k}"
            )
        target = weight.double()
        if self.identity:
            target = target - _identity_kernel(self.out_channels, k, target)
        wide = self.expand.weight.double().flatten(1)  # (hidden, C_in k k)
        projection = target.flatten(1) @ torch.linalg.pinv(wide)  # (C_out, hidden)
        self.project.weight.copy_(projection[:, :, None, None])
        self.project.bias.copy_(bias.double() - projection @ self.expand.bias.double())

    def forward_branches(self, x: Tensor) -> Tensor:
        """The training form: the wide convolution, the projection, the residual."""
        y = self.project(self.expand(x))  # (B, C_out, H, W)
        return y + x if self.identity else y
