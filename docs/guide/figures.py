"""The sub-pixel ideas as figures, computed by the library on real tensors (docs/theory.md).

    python docs/guide/figures.py                 # full sizes, into docs/ (about 2 minutes)
    python docs/guide/figures.py --small -o /tmp/guide
    python docs/guide/figures.py --espcn run/best.safetensors --fsrcnn fsrcnn_x3.safetensors

This generator belongs to the documentation, not to the installed package: it needs a checkout
of the repository and ``subpixel`` importable (``pip install -e .``, or ``PYTHONPATH=src``).
Weights, for each network (x3): the file given with --espcn / --fsrcnn; else the bundled
weights; else a fallback (FSRCNN: the yjn870/FSRCNN-pytorch peer weights under
$SUBPIXEL_DATA/peers; ESPCN: a training run in progress, for development only); else, with
--small, a freshly built network. theory.md names the weights it was made from. Exits with
status 1, leaving the output folder as it was, if any equivalence a figure illustrates does not
hold numerically.

Each ``compute`` function below builds one illustration from ``subpixel.layers`` and torch's
own convolutions, and checks numerically the equivalence the illustration claims: a failed
check raises :class:`EquivalenceError` rather than producing a misleading figure. Each
``draw_*`` function turns a result into a PNG (matplotlib, imported only when drawing).
:func:`build_guide` runs them all and writes ``theory.md`` beside a ``figures/`` folder, with
every number in the text taken from the results.

Example:
    >>> result = conv_matrices_1d()              # stride-2 conv, length 8, taps [1 2 3 4]
    >>> tuple(result.conv.shape), tuple(result.transposed.shape)
    ((5, 8), (8, 5))
    >>> [c.name for c in result.checks][:1]
    ['1D: conv matrix from the definition = F.conv1d']
"""

from __future__ import annotations

import argparse
import io
import math
import os
import shutil
import string
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from subpixel import layers, models
from subpixel.colour import rgb_to_ycbcr
from subpixel.errors import ModelError, SubpixelError
from subpixel.resize import degrade

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "Check",
    "CostRow",
    "EquivalenceError",
    "Guide",
    "IcnrComparison",
    "LastLayer",
    "MappingCost",
    "Matrices1d",
    "Reparam",
    "ShuffleLayout",
    "TwoRoutes2d",
    "build_default_guide",
    "build_guide",
    "check_close",
    "conv_matrices_1d",
    "draw_costs",
    "draw_first_layers",
    "draw_icnr",
    "draw_last_layer",
    "draw_matrices_1d",
    "draw_reparam",
    "draw_shuffle",
    "draw_two_routes",
    "espcn_last_layer",
    "first_layer_filters",
    "fsrcnn_last_layer",
    "fsrcnn_mapping_cost",
    "icnr_comparison",
    "load_figure_model",
    "main",
    "measure_costs",
    "reparam_collapse",
    "shuffle_layout",
    "synthetic_image",
    "two_routes_2d",
    "weights_description",
]


# --------------------------------------------------------------------------- #
# Checks
# --------------------------------------------------------------------------- #


class EquivalenceError(SubpixelError):
    """An equivalence a figure illustrates does not hold numerically."""


@dataclass(frozen=True)
class Check:
    """One verified equivalence: the largest absolute difference and the tolerance it met."""

    name: str
    error: float
    tolerance: float


def check_close(name: str, actual: Tensor, expected: Tensor, tolerance: float) -> Check:
    """Compare two tensors; raise :class:`EquivalenceError` unless they agree to ``tolerance``.

    Example:
        >>> check_close("x = x", torch.ones(2), torch.ones(2), 0.0).error
        0.0
    """
    if actual.shape != expected.shape:
        raise EquivalenceError(
            f"{name}: shapes differ, {tuple(actual.shape)} vs {tuple(expected.shape)}"
        )
    error = float((actual.double() - expected.double()).abs().max()) if actual.numel() else 0.0
    if not error <= tolerance:  # also catches NaN
        raise EquivalenceError(f"{name}: max |difference| {error:.3g} > tolerance {tolerance:.3g}")
    return Check(name, error, tolerance)


# Float64 illustrations are exact up to a few ulps; float32 networks to about 1e-6 relative.
_EXACT = 1e-12
_FLOAT32 = 2e-5


def _matrix_of(op: Callable[[Tensor], Tensor], length: int) -> Tensor:
    """The matrix of a linear 1-D operator, column j = op(unit vector j)."""
    basis = torch.eye(length, dtype=torch.float64).unsqueeze(1)  # (n, 1, n): n signals
    return op(basis)[:, 0, :].T.contiguous()  # (out, n)


def _zero_insert(x: Tensor, scale: int, dims: int) -> Tensor:
    """Put ``scale - 1`` zeros between neighbouring samples along the last ``dims`` dims."""
    size = [scale * (n - 1) + 1 for n in x.shape[-dims:]]
    out = x.new_zeros((*x.shape[:-dims], *size))
    index: tuple[Any, ...] = (Ellipsis, *(slice(None, None, scale) for _ in range(dims)))
    out[index] = x
    return out


# --------------------------------------------------------------------------- #
# 1-D: convolution, transposed convolution and sub-pixel convolution as matrices
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Matrices1d:
    """The matrices of a strided 1-D convolution and of the upsamplings related to it.

    Attributes:
        taps: The filter, shape (K,).
        stride, padding: Of the convolution.
        conv: (n_out, n) matrix of ``F.conv1d(x, taps, stride, padding)``.
        conv_padded: (n_out, n + 2p) matrix of the same convolution on the zero-padded signal.
        transposed_full: (n + 2p, n_out) matrix of ``F.conv_transpose1d`` without padding.
        transposed: (n, n_out) matrix of ``F.conv_transpose1d(y, taps, stride, padding)``:
            ``conv.T``, and ``transposed_full`` with ``padding`` rows cropped at each end.
        subpixel: (n, s (n_out - 1) + 1) matrix of the fractional-stride ("stride 1/s")
            convolution: a stride-1 convolution with the reversed taps applied to the signal
            with ``s - 1`` zeros inserted between samples.
        phase_taps: For each output phase ``o mod s``, the taps of the reversed filter that
            meet real samples (the others meet inserted zeros).
    """

    taps: Tensor
    stride: int
    padding: int
    conv: Tensor
    conv_padded: Tensor
    transposed_full: Tensor
    transposed: Tensor
    subpixel: Tensor
    phase_taps: tuple[tuple[float, ...], ...]
    checks: tuple[Check, ...]


def conv_matrices_1d(
    taps: Sequence[float] = (1.0, 2.0, 3.0, 4.0), length: int = 8, stride: int = 2, padding: int = 2
) -> Matrices1d:
    """Build and check the 1-D matrices (defaults: the issue's length-8 signal, output 5).

    Checks: the conv matrix built from the definition equals ``F.conv1d``'s; the transposed
    convolution's matrix (from ``F.conv_transpose1d``) is its transpose; cropping ``padding``
    rows off the unpadded transposed convolution gives the padded one; the stride-1/s
    convolution with reversed taps on the zero-inserted signal equals the transposed
    convolution, and deleting its zero columns leaves the transposed matrix.

    Raises:
        EquivalenceError: If any of these fails.
        ValueError: If the geometry has no transposed convolution of the same length.
    """
    w = torch.tensor(list(taps), dtype=torch.float64)
    k, s, p, n = w.numel(), stride, padding, length
    if p > k - 1:
        raise ValueError(f"padding {p} must be at most K - 1 = {k - 1}")
    n_out = (n + 2 * p - k) // s + 1
    # Some input lengths map onto the same n_out; output_padding picks ours back.
    output_padding = n - ((n_out - 1) * s - 2 * p + k)
    if not 0 <= output_padding < s:
        raise ValueError(f"no transposed convolution returns length {n}")
    kernel = w.view(1, 1, k)

    by_definition = torch.zeros(n_out, n, dtype=torch.float64)
    for o in range(n_out):
        for t in range(k):
            column = s * o - p + t
            if 0 <= column < n:
                by_definition[o, column] = w[t]
    conv = _matrix_of(lambda x: F.conv1d(x, kernel, stride=s, padding=p), n)
    conv_padded = _matrix_of(lambda x: F.conv1d(x, kernel, stride=s), n + 2 * p)
    transposed = _matrix_of(
        lambda y: F.conv_transpose1d(y, kernel, stride=s, padding=p, output_padding=output_padding),
        n_out,
    )
    transposed_full = _matrix_of(lambda y: F.conv_transpose1d(y, kernel, stride=s), n_out)

    reversed_kernel = w.flip(0).view(1, 1, k)

    def fractional(z: Tensor) -> Tensor:
        # y[o] = sum_t w[K-1-t] z[o - (K-1-p) + t]: the transposed convolution, read as a
        # stride-1 convolution over a grid s times finer than the input.
        z = F.pad(z, (k - 1 - p, k - 1 - p + output_padding))
        return F.conv1d(z, reversed_kernel)

    subpixel = _matrix_of(fractional, s * (n_out - 1) + 1)

    y = torch.randn(1, 1, n_out, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    deconv_y = F.conv_transpose1d(y, kernel, stride=s, padding=p, output_padding=output_padding)
    checks = (
        check_close("1D: conv matrix from the definition = F.conv1d", conv, by_definition, 0.0),
        check_close(
            "1D: F.conv_transpose1d matrix = conv matrix transposed", transposed, conv.T, 0.0
        ),
        check_close(
            "1D: cropping the padding off the full transposed conv = padded transposed conv",
            transposed_full[p : p + n],
            transposed,
            0.0,
        ),
        check_close(
            "1D: stride-1/s conv with reversed taps on zero-inserted input = F.conv_transpose1d",
            fractional(_zero_insert(y, s, 1)),
            deconv_y,
            _EXACT,
        ),
        check_close(
            "1D: sub-pixel matrix without its zero columns = transposed matrix",
            subpixel[:, ::s],
            transposed,
            0.0,
        ),
    )
    # Output o of the fractional convolution meets real samples at taps t with
    # (o - (K-1-p) + t) divisible by s: the same taps for every o of one phase.
    phase_taps = tuple(
        tuple(float(w.flip(0)[t]) for t in range(k) if (phase - (k - 1 - p) + t) % s == 0)
        for phase in range(s)
    )
    return Matrices1d(
        w, s, p, conv, conv_padded, transposed_full, transposed, subpixel, phase_taps, checks
    )


# --------------------------------------------------------------------------- #
# 2-D: two routes to the same output
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class TwoRoutes2d:
    """One kernel applied in sub-pixel space and, split into phases, in LR space.

    Attributes:
        lr: (1, 1, H, W) input.
        kernel: (1, 1, K, K) transposed-convolution kernel.
        zero_inserted: (1, 1, s(H-1)+1, s(W-1)+1) input in sub-pixel space.
        subpixel_space: Route 1 output: reversed kernel convolved over ``zero_inserted``.
        phase_kernels: (s^2, 1, L, L) the kernel's phases, from ``layers.deconv_to_subpixel``.
        phases: (1, s^2, H', W') route 2 before shuffling: LR-space convolutions.
        lr_space: Route 2 output: ``layers.periodic_shuffle(phases)`` cropped.
        difference: ``lr_space - subpixel_space``.
    """

    scale: int
    padding: int
    lr: Tensor
    kernel: Tensor
    zero_inserted: Tensor
    subpixel_space: Tensor
    phase_kernels: Tensor
    phases: Tensor
    lr_space: Tensor
    difference: Tensor
    checks: tuple[Check, ...]


def bilinear_kernel(scale: int) -> Tensor:
    """The (1, 1, 2s, 2s) transposed-convolution kernel of bilinear upsampling by ``scale``."""
    taps = torch.tensor(
        [1 - abs(i + 0.5 - scale) / scale for i in range(2 * scale)], dtype=torch.float64
    )
    return torch.outer(taps, taps).view(1, 1, 2 * scale, 2 * scale)


def two_routes_2d(
    lr: Tensor, kernel: Tensor | None = None, scale: int = 2, padding: int | None = None
) -> TwoRoutes2d:
    """Apply ``kernel`` (default: bilinear, 4x4 at x2) by both routes and check they agree.

    Route 1 inserts zeros between LR pixels and convolves with the reversed kernel at HR
    resolution. Route 2 splits the kernel into ``scale^2`` small LR kernels with
    ``layers.deconv_to_subpixel``, convolves the LR image with them and interleaves the
    results with ``layers.periodic_shuffle``. Both are compared with ``F.conv_transpose2d``,
    and route 2 with the ``SubpixelConv2d`` module itself.

    Args:
        lr: (1, 1, H, W) image.
        kernel: (1, 1, K, K); ``padding`` defaults to ``(K - scale) // 2`` (output s H).
        scale: The stride ``s``.

    Raises:
        EquivalenceError: If the routes disagree.
    """
    lr = lr.double()
    kernel = bilinear_kernel(scale) if kernel is None else kernel.double()
    size = kernel.shape[-1]
    p = (size - scale) // 2 if padding is None else padding
    output_padding = (size - scale - 2 * p) % scale
    reference = F.conv_transpose2d(
        lr, kernel, stride=scale, padding=p, output_padding=output_padding
    )

    zero_inserted = _zero_insert(lr, scale, 2)
    q = size - 1 - p
    padded = F.pad(zero_inserted, (q, q + output_padding, q, q + output_padding))
    subpixel_space = F.conv2d(padded, kernel.flip(-2, -1))

    deconv = nn.ConvTranspose2d(
        1, 1, size, stride=scale, padding=p, output_padding=output_padding, bias=False
    ).double()
    with torch.no_grad():
        deconv.weight.copy_(kernel)
        split = layers.deconv_to_subpixel(deconv)
        phase_kernels = split.conv.weight.detach().clone()  # (s^2, 1, L, L)
        phases = F.conv2d(F.pad(lr, split.padding), phase_kernels)  # (1, s^2, H', W')
        shuffled = layers.periodic_shuffle(phases, scale)
        top, left = split.crop
        height, width = reference.shape[-2:]
        lr_space = shuffled[..., top : top + height, left : left + width]
        module_output = split(lr)
    checks = (
        check_close(
            "2D: zeros inserted + reversed kernel = F.conv_transpose2d",
            subpixel_space,
            reference,
            _EXACT,
        ),
        check_close(
            "2D: phase kernels in LR space + periodic_shuffle = F.conv_transpose2d",
            lr_space,
            reference,
            _EXACT,
        ),
        check_close(
            "2D: periodic_shuffle route = SubpixelConv2d (pixel_shuffle)",
            lr_space,
            module_output,
            _EXACT,
        ),
    )
    return TwoRoutes2d(
        scale,
        p,
        lr,
        kernel,
        zero_inserted,
        subpixel_space,
        phase_kernels,
        phases,
        lr_space,
        lr_space - subpixel_space,
        checks,
    )


# --------------------------------------------------------------------------- #
# Periodic shuffling
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class ShuffleLayout:
    """Where each LR value lands in the HR grid.

    Attributes:
        lr: (1, C s^2, H, W) holding 0, 1, 2, ... in channel-major order.
        hr: ``layers.periodic_shuffle(lr, s)``, (1, C, sH, sW).
        source_channel: (C, sH, sW) the LR channel each HR value came from.
    """

    scale: int
    channels: int
    lr: Tensor
    hr: Tensor
    source_channel: Tensor
    checks: tuple[Check, ...]


def shuffle_layout(
    scale: int = 3, channels: int = 1, height: int = 2, width: int = 2
) -> ShuffleLayout:
    """Shuffle a labelled tensor and check it against the paper's formula, written as a loop.

    The paper: ``PS(T)[y, x, c] = T[y // r, x // r, C r (y mod r) + C (x mod r) + c]``. Also
    checks ``periodic_shuffle == F.pixel_shuffle`` after ``paper_to_torch_channel_order``.

    Raises:
        EquivalenceError: If the shuffle disagrees with the formula.
    """
    r, c = scale, channels
    count = c * r * r * height * width
    lr = torch.arange(count, dtype=torch.float64).view(1, c * r * r, height, width)
    hr = layers.periodic_shuffle(lr, r)
    by_formula = torch.zeros(1, c, r * height, r * width, dtype=torch.float64)
    source = torch.zeros(c, r * height, r * width, dtype=torch.long)
    for colour in range(c):
        for y in range(r * height):
            for x in range(r * width):
                channel = c * r * (y % r) + c * (x % r) + colour
                by_formula[0, colour, y, x] = lr[0, channel, y // r, x // r]
                source[colour, y, x] = channel
    order = layers.paper_to_torch_channel_order(c, r)
    checks = (
        check_close("shuffle: periodic_shuffle = the paper's formula", hr, by_formula, 0.0),
        check_close(
            "shuffle: periodic_shuffle = F.pixel_shuffle after the channel permutation",
            hr,
            F.pixel_shuffle(lr[:, order], r),
            0.0,
        ),
        check_close(
            "shuffle: periodic_unshuffle inverts it", layers.periodic_unshuffle(hr, r), lr, 0.0
        ),
    )
    return ShuffleLayout(r, c, lr, hr, source, checks)


# --------------------------------------------------------------------------- #
# A trained network's last layer, both ways
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class LastLayer:
    """A last layer as a transposed convolution and as sub-pixel phases.

    Attributes:
        name: "ESPCN" or "FSRCNN".
        deconv_kernels: (C_in, C_out, K, K) the transposed-convolution kernels.
        phase_kernels: (C_out s^2, C_in, L, L) the LR-space convolution (torch channel order).
        sublattices: (C_in, C_out, s, s, L, L) ``deconv_kernels[..., i::s, j::s]``, i.e. the
            phase kernels rotated by 180 degrees, indexed by (i, j).
        bias: (C_out s^2,) the per-phase bias of the LR convolution.
    """

    name: str
    scale: int
    deconv_kernels: Tensor
    phase_kernels: Tensor
    sublattices: Tensor
    bias: Tensor
    checks: tuple[Check, ...]

    @property
    def bias_spread(self) -> float:
        """Largest difference between the biases of one output channel's phases."""
        per_channel = self.bias.view(-1, self.scale * self.scale)
        return float((per_channel.max(1).values - per_channel.min(1).values).max())


def _interleave(phase_kernels: Tensor, scale: int) -> Tensor:
    """Assemble LR conv weights (C_out s^2, C_in, L, L) into (C_in, C_out, sL, sL) by slicing.

    Written independently of ``layers``: phase (i, j) of output c (torch channel
    c s^2 + i s + j), rotated by 180 degrees, fills taps [i::s, j::s].
    """
    n, c_in, lh, lw = phase_kernels.shape
    r = scale
    c_out = n // (r * r)
    full = phase_kernels.new_zeros(c_in, c_out, r * lh, r * lw)
    for c in range(c_out):
        for i in range(r):
            for j in range(r):
                full[:, c, i::r, j::r] = phase_kernels[c * r * r + i * r + j].flip(-2, -1)
    return full


def _sublattices(kernels: Tensor, scale: int) -> Tensor:
    c_in, c_out, kh, kw = kernels.shape
    r = scale
    padded = F.pad(kernels, (0, (-kw) % r, 0, (-kh) % r))
    lh, lw = padded.shape[-2] // r, padded.shape[-1] // r
    out = kernels.new_zeros(c_in, c_out, r, r, lh, lw)
    for i in range(r):
        for j in range(r):
            out[:, :, i, j] = padded[..., i::r, j::r]
    return out


def espcn_last_layer(model: nn.Module, lr: Tensor) -> LastLayer:
    """ESPCN's sub-pixel convolution re-assembled into one transposed convolution.

    The (C r^2, F, k, k) conv weight goes into a ``layers.SubpixelConv2d`` and through
    ``layers.subpixel_to_deconv``, giving (F, C, k r, k r) kernels (x3: (32, 1, 9, 9)). A
    transposed convolution has one bias per output channel while ESPCN learns one per phase,
    so the bias is added separately as an r x r periodic pattern.

    Checks, on the features of ``lr`` (1, C, H, W): the deconvolution plus the bias pattern
    reproduces the network's output; the kernels equal the phases interleaved by slicing.

    Raises:
        TypeError: If ``model`` is not an ESPCN.
        EquivalenceError: If a check fails.
    """
    if not isinstance(model, models.ESPCN):
        raise TypeError(f"expected an ESPCN, got {type(model).__name__}")
    conv = model.subpixel
    r = model.config.scale
    k = conv.kernel_size[0]
    with torch.no_grad():
        layer = layers.SubpixelConv2d(
            conv.in_channels, model.config.channels, k, r, padding=k // 2, bias=False
        )
        layer.conv.weight.copy_(conv.weight)
        deconv = layers.subpixel_to_deconv(layer)
        bias = (
            conv.bias.detach().clone() if conv.bias is not None else torch.zeros(conv.out_channels)
        )
        features = model.features(lr)
        height, width = features.shape[-2:]
        # The per-phase bias, shuffled like the phases: one r x r tile repeated.
        bias_map = F.pixel_shuffle(bias.view(1, -1, 1, 1).expand(1, -1, height, width), r)
        expected = model(lr)
        via_deconv = model.output_activation(deconv(features) + bias_map)
        via_layer = model.output_activation(layer(features) + bias_map)
        assembled = _interleave(conv.weight.detach(), r)
    checks = (
        check_close(
            "ESPCN: SubpixelConv2d + bias pattern = the network", via_layer, expected, _FLOAT32
        ),
        check_close(
            "ESPCN: subpixel_to_deconv kernel + bias pattern = the network",
            via_deconv,
            expected,
            _FLOAT32,
        ),
        check_close(
            "ESPCN: deconvolution kernel = phases interleaved",
            deconv.weight.detach(),
            assembled,
            0.0,
        ),
    )
    kernels = deconv.weight.detach().clone()
    return LastLayer(
        "ESPCN",
        r,
        kernels,
        conv.weight.detach().clone(),
        _sublattices(kernels, r),
        bias,
        checks,
    )


def fsrcnn_last_layer(model: nn.Module, lr: Tensor) -> LastLayer:
    """FSRCNN's 9x9 transposed convolution split into r^2 LR-space phase kernels.

    ``layers.deconv_to_subpixel`` gives (C r^2, d, L, L) with L = ceil(9 / r). Checks, on
    the features of ``lr``: the sub-pixel layer reproduces the deconvolution, the converted
    network (``models.fsrcnn_to_subpixel``) reproduces the network, and the phases
    interleaved by slicing give back the 9x9 kernels (zero-padded to r L).

    Raises:
        TypeError: If ``model`` is not an FSRCNN with a ConvTranspose2d last layer.
        EquivalenceError: If a check fails.
    """
    if not isinstance(model, models.FSRCNN) or not isinstance(model.deconv, nn.ConvTranspose2d):
        raise TypeError(f"expected an FSRCNN with a deconvolution, got {type(model).__name__}")
    deconv = model.deconv
    r = model.config.scale
    with torch.no_grad():
        split = layers.deconv_to_subpixel(deconv)
        features = model.body(lr)
        checks_outputs = (
            check_close(
                "FSRCNN: deconv_to_subpixel layer = the 9x9 deconvolution",
                split(features),
                deconv(features),
                _FLOAT32,
            ),
            check_close(
                "FSRCNN: fsrcnn_to_subpixel network = the network",
                models.fsrcnn_to_subpixel(model)(lr),
                model(lr),
                _FLOAT32,
            ),
        )
        phases = split.conv.weight.detach().clone()
        assembled = _interleave(phases, r)
        kernels = deconv.weight.detach().clone()
        kh, kw = kernels.shape[-2:]
        padded = F.pad(kernels, (0, assembled.shape[-1] - kw, 0, assembled.shape[-2] - kh))
    checks = (
        *checks_outputs,
        check_close("FSRCNN: phases interleaved = the 9x9 kernel", assembled, padded, 0.0),
    )
    bias = split.conv.bias.detach().clone() if split.conv.bias is not None else torch.zeros(0)
    return LastLayer("FSRCNN", r, kernels, phases, _sublattices(kernels, r), bias, checks)


# --------------------------------------------------------------------------- #
# Cost
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class CostRow:
    """Parameters, MACs per HR pixel and median single-thread CPU time of one forward."""

    model: str
    scale: int
    parameters: int
    macs_per_pixel: float
    milliseconds: float
    input_size: tuple[int, int]  # (height, width) of the LR input that was timed


def measure_costs(
    names: Sequence[str] = ("srcnn", "espcn", "fsrcnn"),
    scales: Sequence[int] = (2, 3, 4),
    input_size: tuple[int, int] = (90, 160),
    repeats: int = 5,
) -> list[CostRow]:
    """MACs per output pixel (``models.measure_complexity``) and median time per forward.

    Networks are freshly built (time does not depend on the weights' values), in eval mode,
    under ``torch.no_grad``, with one warm-up run. Time is the CPU time of the calling thread
    with torch limited to one thread: unlike wall time, it does not count waiting for cores
    that other processes hold, so it compares the networks even on a busy machine.
    """
    rows = []
    generator = torch.Generator().manual_seed(0)
    lr = torch.rand(1, 1, *input_size, generator=generator)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name in names:
            for scale in scales:
                torch.manual_seed(0)
                net = models.build(name, scale=scale, channels=1).eval()
                complexity = models.measure_complexity(net, channels=1)
                times = []
                with torch.no_grad():
                    net(lr)
                    for _ in range(repeats):
                        start = time.thread_time()
                        net(lr)
                        times.append(time.thread_time() - start)
                rows.append(
                    CostRow(
                        name,
                        scale,
                        complexity.parameters,
                        complexity.macs_per_pixel,
                        1000 * float(np.median(times)),
                        input_size,
                    )
                )
    finally:
        torch.set_num_threads(threads)
    return rows


@dataclass(frozen=True)
class MappingCost:
    """FSRCNN's shrink + mapping + expand against one wide mapping layer (per LR pixel).

    ``wide`` is the layer it replaces: a ``wide_kernel`` x ``wide_kernel`` convolution from
    d to d channels. MACs equal parameters (without biases) for these stride-1 layers.
    """

    d: int
    s: int
    m: int
    wide_kernel: int
    wide_macs: int
    shrink_macs: int
    mapping_macs: int
    expand_macs: int
    wide_receptive_field: int
    narrow_receptive_field: int
    checks: tuple[Check, ...]

    @property
    def narrow_macs(self) -> int:
        return self.shrink_macs + self.mapping_macs + self.expand_macs

    @property
    def ratio(self) -> float:
        return self.wide_macs / self.narrow_macs


def _conv_macs(conv: nn.Conv2d) -> int:
    kh, kw = conv.kernel_size
    return conv.in_channels // conv.groups * conv.out_channels * kh * kw


def fsrcnn_mapping_cost(model: nn.Module, wide_kernel: int = 5) -> MappingCost:
    """The FSRCNN paper's shrinking/expanding argument, computed from ``model``'s layers.

    The layers after the 5x5 feature extraction are 1x1 shrink, m 3x3 mapping layers and a
    1x1 expand. Their MACs per LR pixel are read off the modules and checked against
    ``models.measure_complexity`` run on them (and on the wide layer).

    Raises:
        TypeError: If ``model`` is not an FSRCNN.
        EquivalenceError: If the two counts disagree.
    """
    if not isinstance(model, models.FSRCNN):
        raise TypeError(f"expected an FSRCNN, got {type(model).__name__}")
    convs = [m for m in model.body if isinstance(m, nn.Conv2d)]
    shrink, mapping, expand = convs[1], convs[2:-1], convs[-1]
    d, s = shrink.in_channels, shrink.out_channels
    wide = nn.Conv2d(d, d, wide_kernel, padding=wide_kernel // 2, bias=False)
    narrow = nn.Sequential(shrink, *mapping, expand)
    shrink_macs = _conv_macs(shrink)
    mapping_macs = sum(_conv_macs(c) for c in mapping)
    expand_macs = _conv_macs(expand)
    measured_narrow = models.measure_complexity(narrow, channels=d).macs_per_pixel
    measured_wide = models.measure_complexity(wide, channels=d).macs_per_pixel
    checks = (
        check_close(
            "cost: shrink + mapping + expand MACs = measure_complexity",
            torch.tensor(float(shrink_macs + mapping_macs + expand_macs)),
            torch.tensor(measured_narrow),
            0.0,
        ),
        check_close(
            "cost: wide mapping MACs = measure_complexity",
            torch.tensor(float(_conv_macs(wide))),
            torch.tensor(measured_wide),
            0.0,
        ),
    )
    receptive = 1 + sum(c.kernel_size[0] - 1 for c in narrow if isinstance(c, nn.Conv2d))
    return MappingCost(
        d,
        s,
        len(mapping),
        wide_kernel,
        _conv_macs(wide),
        shrink_macs,
        mapping_macs,
        expand_macs,
        wide_kernel,
        receptive,
        checks,
    )


# --------------------------------------------------------------------------- #
# Learned filters and ICNR
# --------------------------------------------------------------------------- #


def first_layer_filters(model: nn.Module) -> Tensor:
    """The first convolution's weight, (N, C, k, k) (ESPCN: 64 5x5, FSRCNN: 56 5x5)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.weight.detach().clone()
    raise TypeError(f"{type(model).__name__} has no convolution")


@dataclass(frozen=True)
class IcnrComparison:
    """Two ESPCN trainings from the same trunk, data and seed: default init against ICNR.

    Attributes:
        losses: Training loss per iteration, ``{"default": [...], "icnr": [...]}``.
        outputs: Outputs on ``lr`` at init and after training, keys like ``"default/init"``.
        pattern: Amplitude of the mean r x r periodic pattern in each output (max |value|
            of the output minus its block means, averaged over all blocks).
        psnr: PSNR (dB) of each trained output against ``hr``, a clipped to [0, 1].
    """

    scale: int
    iterations: int
    batch_size: int
    patch_size: int
    images: int
    lr: Tensor
    hr: Tensor
    losses: dict[str, list[float]]
    outputs: dict[str, Tensor]
    pattern: dict[str, float]
    psnr: dict[str, float]
    checks: tuple[Check, ...]


def _periodic_pattern(hr: Tensor, scale: int) -> Tensor:
    """The mean r x r pattern of ``hr`` (1, 1, rH, rW) minus its block means, as (r, r)."""
    blocks = F.pixel_unshuffle(hr, scale)[0]  # (r^2, H, W): one plane per phase
    deviation = blocks - blocks.mean(0, keepdim=True)
    return deviation.mean((1, 2)).view(scale, scale)


def _block_spread(hr: Tensor, scale: int) -> float:
    blocks = F.pixel_unshuffle(hr, scale)[0]
    return float((blocks.max(0).values - blocks.min(0).values).max())


def icnr_comparison(
    folders: Sequence[str | Path],
    lr: Tensor,
    hr: Tensor,
    *,
    scale: int = 3,
    iterations: int = 300,
    batch_size: int = 16,
    patch_size: int = 17,
    seed: int = 0,
    cache_dir: str | Path | None = None,
) -> IcnrComparison:
    """Train ESPCN twice, with PyTorch's default init and with ICNR, on identical batches.

    Both networks come from ``training.build_network`` with the same seed, so their trunks
    are identical. The ICNR one then gets ``layers.icnr_init`` on its sub-pixel conv with the
    default initialiser's distribution (Kaiming uniform, a = sqrt(5)), so the two differ only
    in the phases being tied (and ICNR's zero bias). Each trains with
    ``training.make_optimizer`` and ``training.compute_loss`` (Adam, lr 1e-3, last layer 0.1x)
    on ``data.training_batches`` from ``folders`` with the same seed.

    Checks: with ICNR the output at init is constant in every r x r block.

    Raises:
        EquivalenceError: If the ICNR output at init is not blockwise constant.
    """
    from subpixel.data import list_images, training_batches
    from subpixel.training import (
        TrainConfig,
        TrainingView,
        build_network,
        compute_loss,
        make_optimizer,
    )

    config = TrainConfig(
        model="espcn",
        scale=scale,
        data=tuple(str(f) for f in folders),
        val=None,
        iterations=iterations,
        batch_size=batch_size,
        patch_size=patch_size,
        seed=seed,
        workers=0,
    )
    losses: dict[str, list[float]] = {}
    outputs: dict[str, Tensor] = {}
    with _maybe_temporary(cache_dir) as cache:
        for variant in ("default", "icnr"):
            net = build_network(config)
            if not isinstance(net, models.ESPCN):
                raise TypeError("expected an ESPCN")
            if variant == "icnr":
                torch.manual_seed(seed)
                layers.icnr_init(
                    net.subpixel, scale, init=lambda t: nn.init.kaiming_uniform_(t, a=math.sqrt(5))
                )
            net.eval()
            with torch.no_grad():
                outputs[f"{variant}/init"] = net(lr).detach()
            net.train()
            optimizer = make_optimizer(net, config)
            view = TrainingView(net)
            batches = training_batches(folders, config.data_config(), batch_size, cache, seed=seed)
            history = []
            for _, (lr_batch, hr_batch) in zip(range(iterations), batches, strict=False):
                optimizer.zero_grad(set_to_none=True)
                loss = compute_loss(view, lr_batch, hr_batch, config)
                loss.backward()
                optimizer.step()
                history.append(float(loss.detach()))
            losses[variant] = history
            net.eval()
            with torch.no_grad():
                outputs[f"{variant}/trained"] = net(lr).detach()
    spread = _block_spread(outputs["icnr/init"], scale)
    checks = (
        check_close(
            "ICNR: output at init is constant in every r x r block",
            torch.tensor(spread),
            torch.tensor(0.0),
            1e-6,
        ),
    )
    pattern = {
        key: float(_periodic_pattern(value, scale).abs().max()) for key, value in outputs.items()
    }
    psnr = {}
    for variant in ("default", "icnr"):
        mse = float(F.mse_loss(outputs[f"{variant}/trained"].clamp(0, 1), hr))
        psnr[variant] = 10 * math.log10(1 / mse) if mse > 0 else math.inf
    return IcnrComparison(
        scale,
        iterations,
        batch_size,
        patch_size,
        len(list_images(folders)),
        lr,
        hr,
        losses,
        outputs,
        pattern,
        psnr,
        checks,
    )


@dataclass(frozen=True)
class Reparam:
    """An edge-oriented block (ECBSR's ECB, 1 channel in and out, 3x3) with random weights:
    each branch as one kernel, their sum, and the block run both ways on an image.

    Attributes:
        branches: branch name -> ((k, k) kernel, bias), float64.
        merged: the collapsed convolution's (k, k) kernel and bias.
        lr: (1, 1, H, W) input; ``branch_output`` and ``collapsed_output`` the block's output
            computed branch by branch and by the one collapsed convolution.
        network: the network checked, e.g. "ECBSR-M4C16 x3", and ``network_error`` the largest
            difference between its training form and its collapsed ESPCN (float32).
        checks: the equivalences verified.
    """

    branches: dict[str, tuple[Tensor, float]]
    merged: tuple[Tensor, float]
    lr: Tensor
    branch_output: Tensor
    collapsed_output: Tensor
    network: str
    network_error: float
    network_parameters: tuple[int, int]
    checks: list[Check]


def _randomised(module: nn.Module, seed: int) -> nn.Module:
    """Every parameter drawn at unit scale over its fan-in (fresh edge scales are ~1e-3)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            fan_in = parameter[0].numel() if parameter.dim() > 1 else 4
            parameter.copy_(torch.randn(parameter.shape, generator=generator) / math.sqrt(fan_in))
    return module


def reparam_collapse(lr: Tensor, scale: int = 3, seed: int = 0) -> Reparam:
    """Collapse an ECB, a SESR block and an ECBSR network, and check each against its
    training form.

    Args:
        lr: (1, 1, H, W) luminance image the block and the network run on.
        scale: the network's scale.
        seed: for the random weights.

    Raises:
        EquivalenceError: If a collapsed form differs from its training form.
    """
    from subpixel.reparam import CollapsibleLinearBlock, EdgeOrientedBlock

    x = lr.double()
    block = _randomised(EdgeOrientedBlock(1, 1, 3, hidden=4).double(), seed)
    assert isinstance(block, EdgeOrientedBlock)
    with torch.no_grad():  # the Laplacian's centre tap is -4: keep it at the others' scale
        block.edge_scale.mul_(0.25)
    with torch.no_grad():
        branches = {
            name: (w[0, 0].clone(), float(b[0]))
            for name, (w, b) in block.branch_parameters().items()
        }
        conv = block.collapse()
        assert conv.bias is not None
        merged = (conv.weight[0, 0].clone(), float(conv.bias[0]))
        branch_output, collapsed_output = block.forward_branches(x), conv(x)
    checks = [
        check_close(
            "ECB 1 -> 1: branches = collapsed 3x3 conv", collapsed_output, branch_output, _EXACT
        ),
    ]
    # Wider blocks, as networks use them, at their initialisation, in float32.
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    features = torch.rand(2, 16, 20, 20, generator=generator)
    for name, wide in (
        ("ECB 16 -> 16", EdgeOrientedBlock(16, 16)),
        ("SESR block 16 -> 256 -> 16", CollapsibleLinearBlock(16, 16, 3, 256)),
    ):
        with torch.no_grad():
            checks.append(
                check_close(
                    f"{name}: branches = collapsed 3x3 conv (float32)",
                    wide.collapse()(features),
                    wide.forward_branches(features),
                    _FLOAT32,
                )
            )
    # The merged kernel in the forward pass: the same gradients as the branches.
    gradients = []
    for merged_form in (False, True):
        block.merged = merged_form
        block.zero_grad()
        (block(x) * x).sum().backward()
        gradients.append(
            torch.cat([torch.flatten(p.grad) for p in block.parameters() if p.grad is not None])
        )
    block.merged = True
    checks.append(
        check_close(
            "ECB: merged-kernel forward, gradients = branch gradients",
            gradients[1],
            gradients[0],
            1e-10,  # sums over every pixel: values in the hundreds, rounding to ~1e-13
        )
    )
    torch.manual_seed(seed)
    network = models.build("ecbsr", scale=scale)
    plain = network.collapse()  # type: ignore[operator]
    for block_ in network.modules():
        if isinstance(block_, EdgeOrientedBlock):
            block_.merged = False
    with torch.no_grad():
        expected = network(lr.float())
        network_check = check_close(
            f"ECBSR-M4C16 x{scale}: training form = collapsed ESPCN",
            plain(lr.float()),
            expected,
            _FLOAT32,
        )
    checks.append(network_check)
    return Reparam(
        branches,
        merged,
        x,
        branch_output,
        collapsed_output,
        f"ECBSR-M4C16 x{scale}",
        network_check.error,
        (sum(p.numel() for p in network.parameters()), sum(p.numel() for p in plain.parameters())),
        checks,
    )


@contextmanager
def _maybe_temporary(folder: str | Path | None) -> Iterator[Path]:
    if folder is not None:
        yield Path(folder)
        return
    with tempfile.TemporaryDirectory(prefix="subpixel-figures-") as temporary:
        yield Path(temporary)


# --------------------------------------------------------------------------- #
# Images and weights for the guide
# --------------------------------------------------------------------------- #


def synthetic_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic (H, W, 3) uint8 test picture: a zone plate, discs, bars and smooth colour.

    Used when no photograph is given, and to train on when no training set is found.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    cy, cx = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width
    radius2 = (y - cy) ** 2 + (x - cx) ** 2
    zone = 0.5 + 0.5 * np.cos(math.pi * radius2 / (2.5 * max(height, width)))
    image = np.stack([zone * 0.6 + 0.2 * rng.random()] * 3, axis=-1)
    for _ in range(6):
        r0 = rng.uniform(0.05, 0.2) * min(height, width)
        py, px = rng.uniform(0, height), rng.uniform(0, width)
        disc = ((y - py) ** 2 + (x - px) ** 2) < r0**2
        image[disc] = rng.random(3)
    angle = rng.uniform(0, math.pi)
    bars = np.cos((x * math.cos(angle) + y * math.sin(angle)) / 3.0) > 0.6
    band = (y > 0.75 * height) & (y < 0.9 * height)
    image[bars & band] = 0.05
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def _luma_pair(rgb: np.ndarray, scale: int) -> tuple[Tensor, Tensor]:
    """(1, 1, H, W) LR and (1, 1, sH, sW) HR luminance in [0, 1] by the MATLAB degradation."""
    y = rgb_to_ycbcr(rgb.astype(np.float64) / 255.0)[..., 0]
    h, w = y.shape
    hr = y[: h - h % scale, : w - w % scale]
    lr = degrade(hr, scale)
    return (
        torch.from_numpy(lr).float()[None, None],
        torch.from_numpy(np.ascontiguousarray(hr)).float()[None, None],
    )


def weights_description(model: nn.Module, source: str) -> str:
    """One line naming the weights a figure was made from, with facts from the model card."""
    from subpixel.weights import card_of

    try:
        card = card_of(model)
    except ModelError:
        return f"{source} (no model card)"
    parts = [f"{card.architecture} x{card.scale}", source]
    training = card.training
    for key in ("source", "note", "iterations", "batch_size", "patch_size"):
        if key in training and training[key] is not None:
            parts.append(f"{key.replace('_', ' ')} {training[key]}")
    data = training.get("data")
    if data:
        names = [Path(str(d)).name for d in (data if isinstance(data, list) else [data])]
        parts.append("data " + " + ".join(names))
    for dataset, values in card.metrics.items():
        if isinstance(values, dict) and "psnr" in values:
            parts.append(f"{dataset} PSNR {values['psnr']:.2f} dB (card)")
    return "; ".join(parts)


def load_figure_model(
    architecture: str,
    scale: int = 3,
    path: str | Path | None = None,
    fallbacks: Sequence[str | Path] = (),
    untrained: bool = False,
) -> tuple[nn.Module, str]:
    """The network a figure uses, and where it came from.

    Order: ``path`` if given; else the bundled weights (``subpixel.load_model``); else the
    first existing file of ``fallbacks`` (``.safetensors`` files, or yjn870 FSRCNN ``.pth``
    files via ``subpixel.peers``); else, with ``untrained``, a freshly built seeded network.

    Raises:
        ModelError: If nothing is found (and ``untrained`` is false) or a file is bad.
    """
    from subpixel import peers
    from subpixel.weights import bundled_weights, load_network

    def load(file: Path) -> nn.Module:
        if file.suffix == ".pth":
            if architecture != "fsrcnn":
                raise ModelError(f"only FSRCNN peer .pth files are supported, got {file}")
            return peers.load_yjn870_fsrcnn(file, scale)
        return load_network(file, scale=scale)

    if path is not None:
        return load(Path(path)), str(path)
    if (architecture, scale) in bundled_weights():
        return load_network(
            architecture, scale=scale
        ), f"bundled {architecture}_x{scale}.safetensors"
    for candidate in fallbacks:
        if Path(candidate).is_file():
            return load(Path(candidate)), str(candidate)
    if untrained:
        torch.manual_seed(0)
        return models.build(architecture, scale=scale, channels=1).eval(), "untrained (seed 0)"
    raise ModelError(
        f"no {architecture} x{scale} weights: none bundled, none given, no fallback found"
    )


# --------------------------------------------------------------------------- #
# Drawing
# --------------------------------------------------------------------------- #


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as error:  # an optional dependency (the "train" extra)
        raise SubpixelError("drawing figures needs matplotlib (pip install matplotlib)") from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Figure, path: Path, dpi: int = 90) -> Path:
    """Save as a palette PNG: these figures have few colours, and it keeps them small."""
    from PIL import Image

    plt = _pyplot()
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=dpi, format="png", facecolor="white")
    plt.close(figure)
    buffer.seek(0)
    with Image.open(buffer) as image:
        rgb = image.convert("RGB")
    palette = rgb.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    path.parent.mkdir(parents=True, exist_ok=True)
    palette.save(path, optimize=True)
    return path


_ZERO = "#e9e9e9"
_MARK = "#f4a259"
_TAP_COLOURS = ("#9ecae1", "#a1d99b", "#fdd0a2", "#dadaeb", "#fcbba1", "#c7e9c0")


def _draw_matrix(
    axis: Axes,
    matrix: Tensor,
    taps: Tensor,
    title: str,
    marked_columns: Sequence[int] = (),
    marked_rows: Sequence[int] = (),
    labels: tuple[str, str] = ("", ""),
) -> None:
    from matplotlib.patches import Rectangle

    rows, columns = matrix.shape
    values = [float(t) for t in taps]
    for i in range(rows):
        for j in range(columns):
            value = float(matrix[i, j])
            if value == 0:
                colour = _ZERO
            elif value in values:
                colour = _TAP_COLOURS[values.index(value) % len(_TAP_COLOURS)]
            else:
                colour = "#cccccc"
            axis.add_patch(Rectangle((j, i), 1, 1, facecolor=colour, edgecolor="white", lw=1))
            if value != 0:
                axis.text(j + 0.5, i + 0.5, f"{value:g}", ha="center", va="center", fontsize=8)
    for j in marked_columns:
        axis.add_patch(
            Rectangle((j, 0), 1, rows, facecolor="none", edgecolor=_MARK, hatch="///", lw=0)
        )
    for i in marked_rows:
        axis.add_patch(
            Rectangle((0, i), columns, 1, facecolor="none", edgecolor=_MARK, hatch="///", lw=0)
        )
    axis.set_xlim(0, columns)
    axis.set_ylim(rows, 0)
    axis.set_aspect("equal")
    axis.set_xticks([j + 0.5 for j in range(columns)], [str(j) for j in range(columns)])
    axis.set_yticks([i + 0.5 for i in range(rows)], [str(i) for i in range(rows)])
    axis.tick_params(length=0, labelsize=6, pad=1)
    for spine in axis.spines.values():
        spine.set_visible(False)
    axis.set_title(title, fontsize=9)
    axis.set_xlabel(labels[0], fontsize=7, labelpad=2)
    axis.set_ylabel(labels[1], fontsize=7, labelpad=2)


def draw_matrices_1d(result: Matrices1d, path: Path) -> Path:
    """Four matrices: conv, conv on the padded signal, its transpose cropped, and the
    stride-1/s sub-pixel convolution; zero entries grey, padding/crop/inserted zeros hatched."""
    plt = _pyplot()
    p, s = result.padding, result.stride
    n = result.conv.shape[1]
    padding_band = [*range(p), *range(n + p, n + 2 * p)]
    low, high = ("LR input y", "HR output")
    panels = [
        (result.conv, f"(a) stride-{s} conv, padding {p}\ny = C x", (), (), ("x", "y")),
        (
            result.conv_padded,
            "(b) the same conv on the\nzero-padded signal (hatched)",
            padding_band,
            (),
            ("padded x", "y"),
        ),
        (
            result.transposed_full,
            "(c) its transpose: transposed conv;\nhatched rows are cropped",
            (),
            padding_band,
            (low, high),
        ),
        (result.transposed, "(d) after cropping:\nCᵀ = conv_transpose1d", (), (), (low, high)),
        (
            result.subpixel,
            f"(e) stride-1/{s} conv, reversed taps;\nhatched columns meet inserted zeros",
            [j for j in range(result.subpixel.shape[1]) if j % s],
            (),
            ("y with zeros inserted", high),
        ),
    ]
    widths = [m.shape[1] for m, *_ in panels]
    figure, axes = plt.subplots(
        1, len(panels), figsize=(0.32 * sum(widths) + 2.5, 5.0), width_ratios=widths
    )
    for axis, (matrix, title, columns, rows, labels) in zip(axes, panels, strict=True):
        _draw_matrix(axis, matrix, result.taps, title, columns, rows, labels)
    figure.tight_layout(w_pad=1.2)
    return _save(figure, path)


def _show(axis: Axes, image: Tensor, title: str, *, bad: str = "white", **options: Any) -> Any:
    """``imshow`` without ticks; NaN pixels (mosaic gaps) are drawn in ``bad``."""
    import matplotlib

    cmap = matplotlib.colormaps[options.pop("cmap", "gray")].with_extremes(bad=bad)
    shown = axis.imshow(image.detach().cpu().numpy(), interpolation="nearest", cmap=cmap, **options)
    axis.set_title(title, fontsize=8)
    axis.set_xticks([])
    axis.set_yticks([])
    return shown


def _mosaic(tiles: Tensor, columns: int, gap: int = 1) -> np.ndarray:
    """(N, h, w) tiles laid out on a grid with NaN gaps (drawn as background)."""
    n, h, w = tiles.shape
    rows = -(-n // columns)
    out = np.full((rows * (h + gap) - gap, columns * (w + gap) - gap), np.nan)
    for index in range(n):
        i, j = divmod(index, columns)
        out[i * (h + gap) : i * (h + gap) + h, j * (w + gap) : j * (w + gap) + w] = (
            tiles[index].detach().cpu().numpy()
        )
    return out


def draw_two_routes(result: TwoRoutes2d, path: Path) -> Path:
    """Route 1 on the top row, route 2 on the bottom, and their difference."""
    plt = _pyplot()
    s = result.scale
    figure, axes = plt.subplots(2, 4, figsize=(10, 6.0))
    grey: dict[str, Any] = {"vmin": 0.0, "vmax": float(result.lr.max())}
    hr_range: dict[str, Any] = {"vmin": 0.0, "vmax": float(result.subpixel_space.max())}
    _show(axes[0, 0], result.lr[0, 0], f"LR input {tuple(result.lr.shape[-2:])}", **grey)
    _show(
        axes[0, 1],
        result.zero_inserted[0, 0],
        f"sub-pixel space: {s - 1} zero(s)\nbetween LR pixels",
        **grey,
    )
    kernel = result.kernel[0, 0]
    _show(axes[0, 2], kernel, f"kernel {tuple(kernel.shape)}\n(applied reversed)", cmap="viridis")
    for (i, j), value in np.ndenumerate(kernel.numpy()):
        axes[0, 2].text(j, i, f"{value:.3g}", ha="center", va="center", fontsize=7, color="w")
    _show(
        axes[0, 3],
        result.subpixel_space[0, 0],
        f"route 1: HR output {tuple(result.subpixel_space.shape[-2:])}",
        **hr_range,
    )
    phases = result.phase_kernels[:, 0]
    levels = float(phases.abs().max())
    _show(
        axes[1, 0],
        torch.from_numpy(_mosaic(phases, s)),
        f"kernel split: {tuple(result.phase_kernels.shape)}\n(one LR kernel per phase)",
        cmap="viridis",
        vmin=0.0 if float(phases.min()) >= 0 else -levels,
        vmax=levels,
    )
    _show(
        axes[1, 1],
        torch.from_numpy(_mosaic(result.phases[0], s, gap=2)),
        f"LR-space outputs {tuple(result.phases.shape[1:])}",
        **hr_range,
    )
    _show(
        axes[1, 2],
        result.lr_space[0, 0],
        "route 2: periodic_shuffle\nof the LR-space outputs",
        **hr_range,
    )
    error = float(result.difference.abs().max())
    limit = max(error, 1e-15)
    _show(
        axes[1, 3],
        result.difference[0, 0],
        f"route 2 - route 1 (range ±{limit:.0e})\nmax |difference| = {error:.1e}",
        cmap="RdBu_r",
        vmin=-limit,
        vmax=limit,
    )
    figure.tight_layout()
    return _save(figure, path)


def draw_shuffle(result: ShuffleLayout, path: Path) -> Path:
    """The r^2 LR channels as coloured tiles, and the HR grid coloured by source channel."""
    from matplotlib.patches import Rectangle

    plt = _pyplot()
    cmap = plt.get_cmap("tab10" if result.lr.shape[1] <= 10 else "tab20")
    r, c = result.scale, result.channels
    lr = result.lr[0]
    n, h, w = lr.shape
    figure, (left, right) = plt.subplots(
        1, 2, figsize=(9, 4.4), width_ratios=[r * (w + 1), r * w * c + (c - 1)]
    )
    # LR channels, stacked as the r x r phase they feed (colour-major for C > 1).
    for channel in range(n):
        phase, colour = divmod(channel, c)
        i, j = divmod(phase, r)
        x0, y0 = (j + colour * r) * (w + 1), i * (h + 1.4)
        for y in range(h):
            for x in range(w):
                left.add_patch(
                    Rectangle(
                        (x0 + x, y0 + y), 1, 1, facecolor=cmap(channel % cmap.N), ec="w", alpha=0.8
                    )
                )
                left.text(
                    x0 + x + 0.5,
                    y0 + y + 0.5,
                    f"{int(lr[channel, y, x])}",
                    ha="center",
                    va="center",
                    fontsize=7,
                )
        left.text(x0 + w / 2, y0 + h + 0.35, f"channel {channel}", ha="center", fontsize=7)
    left.set_xlim(-0.2, r * c * (w + 1))
    left.set_ylim(r * (h + 1.4), -0.3)
    left.set_aspect("equal")
    left.axis("off")
    left.set_title(f"LR tensor (1, {n}, {h}, {w}): one tile per channel", fontsize=9)
    hr = result.hr[0]
    for colour in range(c):
        x0 = colour * (r * w + 1)
        for y in range(r * h):
            for x in range(r * w):
                source = int(result.source_channel[colour, y, x])
                right.add_patch(
                    Rectangle((x0 + x, y), 1, 1, facecolor=cmap(source % cmap.N), ec="w", alpha=0.8)
                )
                right.text(
                    x0 + x + 0.5,
                    y + 0.5,
                    f"{int(hr[colour, y, x])}",
                    ha="center",
                    va="center",
                    fontsize=7,
                )
        for k in range(1, h):
            right.axhline(k * r, color="k", lw=1.2)
        for k in range(1, w):
            right.plot([x0 + k * r] * 2, [0, r * h], color="k", lw=1.2)
    right.set_xlim(-0.2, c * (r * w + 1) - 0.8)
    right.set_ylim(r * h + 0.2, -0.2)
    right.set_aspect("equal")
    right.axis("off")
    right.set_title(
        f"periodic_shuffle → HR (1, {c}, {r * h}, {r * w}); black lines: LR pixels", fontsize=9
    )
    figure.tight_layout()
    return _save(figure, path)


def draw_last_layer(result: LastLayer, path: Path, example: int | None = None) -> Path:
    """One channel's kernel next to its r^2 sub-lattices, then every channel's kernel."""
    plt = _pyplot()
    r = result.scale
    kernels = result.deconv_kernels[:, 0]  # (C_in, K, K), output colour 0
    if example is None:
        example = int(kernels.flatten(1).norm(dim=1).argmax())
    limit = float(kernels.abs().max())
    colours: dict[str, Any] = {"cmap": "RdBu_r", "vmin": -limit, "vmax": limit, "bad": "#5a5a5a"}
    figure = plt.figure(figsize=(10, 6.4))
    grid = figure.add_gridspec(2, 3, height_ratios=[1, 1.25], width_ratios=[1, 1, 1.4])
    kernel_axis = figure.add_subplot(grid[0, 0])
    size = kernels.shape[-1]
    _show(kernel_axis, kernels[example], f"channel {example}: {size}x{size} kernel", **colours)
    for k in range(1, -(-size // r)):
        kernel_axis.axhline(k * r - 0.5, color="k", lw=0.6, alpha=0.5)
        kernel_axis.axvline(k * r - 0.5, color="k", lw=0.6, alpha=0.5)
    subs = result.sublattices[example, 0].reshape(r * r, *result.sublattices.shape[-2:])
    phase_axis = figure.add_subplot(grid[0, 1])
    _show(
        phase_axis,
        torch.from_numpy(_mosaic(subs, r)),
        f"its {r * r} phases, taps [i::{r}, j::{r}]\n(as LR kernels: rotated 180°)",
        **colours,
    )
    text_axis = figure.add_subplot(grid[0, 2])
    text_axis.axis("off")
    c_out_r2, c_in, lh, lw = result.phase_kernels.shape
    lines = [
        f"{result.name} x{r}, last layer:",
        f"LR conv weight {(c_out_r2, c_in, lh, lw)}",
        f"= transposed conv {tuple(result.deconv_kernels.shape)}",
        "",
        "Each HR phase (i, j) is an LR",
        f"{lh}x{lw} convolution with the taps",
        f"[i::{r}, j::{r}] of the {size}x{size} kernel.",
    ]
    if result.name == "ESPCN":
        lines += [
            "",
            f"Bias: one per phase (spread {result.bias_spread:.3g}),",
            f"added as a {r}x{r} tile.",
        ]
    text_axis.text(0, 0.95, "\n".join(lines), va="top", fontsize=9, family="monospace")
    all_axis = figure.add_subplot(grid[1, :])
    columns = 16 if kernels.shape[0] > 32 else 8 if kernels.shape[0] <= 32 else 14
    if kernels.shape[0] == 56:
        columns = 14
    _show(
        all_axis,
        torch.from_numpy(_mosaic(kernels, columns)),
        f"all {kernels.shape[0]} transposed-convolution kernels (one per input channel)",
        **colours,
    )
    figure.tight_layout()
    return _save(figure, path)


def _normalised(filters: Tensor) -> Tensor:
    flat = filters.flatten(1)
    scale = flat.abs().max(1).values.clamp_min(1e-12)
    return filters / scale.view(-1, 1, 1)


def draw_first_layers(named: Sequence[tuple[str, Tensor]], path: Path) -> Path:
    """First-layer filters of each network, each filter scaled to its own range."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(named), figsize=(5 * len(named), 4.2), squeeze=False)
    for axis, (title, filters) in zip(axes[0], named, strict=True):
        tiles = _normalised(filters[:, 0])
        columns = 8
        _show(
            axis,
            torch.from_numpy(_mosaic(tiles, columns)),
            f"{title}: {filters.shape[0]} filters {filters.shape[-2]}x{filters.shape[-1]}",
            cmap="gray",
            vmin=-1,
            vmax=1,
        )
    figure.tight_layout()
    return _save(figure, path)


_STYLE = {"srcnn": "#7f7f7f", "espcn": "#1f77b4", "fsrcnn": "#d62728"}


def draw_costs(rows: Sequence[CostRow], path: Path) -> Path:
    """Grouped bars: MACs per HR pixel and measured time, per network and scale."""
    plt = _pyplot()
    names = list(dict.fromkeys(r.model for r in rows))
    scales = sorted({r.scale for r in rows})
    figure, (macs_axis, time_axis) = plt.subplots(1, 2, figsize=(10, 3.8))
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        chosen = {r.scale: r for r in rows if r.model == name}
        xs = [i + (k - (len(names) - 1) / 2) * width for i in range(len(scales))]
        macs = [chosen[s].macs_per_pixel for s in scales]
        ms = [chosen[s].milliseconds for s in scales]
        colour = _STYLE.get(name)
        macs_axis.bar(xs, macs, width, label=name.upper(), color=colour)
        time_axis.bar(xs, ms, width, label=name.upper(), color=colour)
        for x, m, t in zip(xs, macs, ms, strict=True):
            macs_axis.text(x, m * 1.08, f"{m:,.0f}", ha="center", fontsize=6, rotation=90)
            time_axis.text(x, t * 1.08, f"{t:.1f}", ha="center", fontsize=6, rotation=90)
    from matplotlib.ticker import FuncFormatter, NullFormatter

    h, w = rows[0].input_size
    for axis, label, values in (
        (macs_axis, "MACs per HR pixel", [r.macs_per_pixel for r in rows]),
        (time_axis, f"ms per {w}x{h} LR input (1 CPU thread)", [r.milliseconds for r in rows]),
    ):
        axis.set_yscale("log")
        # Log-scale bars need an explicit floor; a third of the smallest keeps them comparable.
        axis.set_ylim(min(values) / 3, max(values) * 8)
        axis.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.6g}"))
        axis.yaxis.set_minor_formatter(NullFormatter())
        axis.set_xticks(range(len(scales)), [f"x{s}" for s in scales])
        axis.set_ylabel(label)
        axis.grid(axis="y", alpha=0.3)
    macs_axis.legend(fontsize=8, ncols=len(names), loc="upper right")
    figure.tight_layout()
    return _save(figure, path)


def _smooth(values: Sequence[float], window: int) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    window = max(1, min(window, len(array)))
    kernel = np.ones(window) / window
    return np.convolve(array, kernel, mode="valid")


def draw_icnr(result: IcnrComparison, path: Path, crop: int = 20) -> Path:
    """Loss curves with and without ICNR, and the outputs at init and after training."""
    plt = _pyplot()
    figure = plt.figure(figsize=(11, 5.0))
    grid = figure.add_gridspec(2, 5, width_ratios=[2.3, 1, 1, 1, 0.05])
    curve = figure.add_subplot(grid[:, 0])
    window = max(1, result.iterations // 20)
    labels = {"default": "default init", "icnr": "ICNR"}
    for variant, colour in (("default", "#d62728"), ("icnr", "#1f77b4")):
        smoothed = _smooth(result.losses[variant], window)
        xs = np.arange(len(smoothed)) + window
        curve.plot(xs, smoothed, color=colour, lw=1.4, label=labels[variant])
    curve.set(
        xlabel="iteration",
        ylabel=f"training MSE (mean of {window})",
        yscale="log",
        title=f"ESPCN x{result.scale}, same data and seed",
    )
    curve.title.set_fontsize(9)
    curve.grid(alpha=0.3)
    curve.legend(fontsize=8)
    r = result.scale
    size = min(crop, result.lr.shape[-1], result.lr.shape[-2])
    view = (Ellipsis, slice(0, r * size), slice(0, r * size))
    for row, variant in enumerate(("default", "icnr")):
        for column, stage in enumerate(("init", "trained")):
            image = result.outputs[f"{variant}/{stage}"][view][0, 0]
            when = "at init" if stage == "init" else f"after {result.iterations} it."
            _show(
                figure.add_subplot(grid[row, 1 + column]),
                image,
                f"{labels[variant]}, {when}\n(own grey range)",
            )
    hr_axis = figure.add_subplot(grid[0, 3])
    _show(hr_axis, result.hr[view][0, 0], "HR reference", vmin=0, vmax=1)
    pattern_axis = figure.add_subplot(grid[1, 3])
    pattern = _periodic_pattern(result.outputs["default/init"], r)
    limit = float(pattern.abs().max()) or 1.0
    shown = _show(
        pattern_axis,
        pattern,
        f"default init: mean {r}x{r}\nperiodic pattern",
        cmap="RdBu_r",
        vmin=-limit,
        vmax=limit,
    )
    colourbar = figure.colorbar(shown, cax=figure.add_subplot(grid[1, 4]))
    colourbar.ax.tick_params(labelsize=6)
    figure.tight_layout()
    return _save(figure, path)


def draw_reparam(result: Reparam, path: Path) -> Path:
    """The branches' kernels summed into the merged kernel (top); the block run both ways on
    an image, and the difference (bottom)."""
    plt = _pyplot()
    names = list(result.branches)
    columns = len(names) + 1
    figure = plt.figure(figsize=(1.55 * columns, 4.6))
    grid = figure.add_gridspec(2, 4 * columns, height_ratios=(1.0, 1.5))
    limit = max(float(k.abs().max()) for k, _ in [*result.branches.values(), result.merged])
    kernel_range: dict[str, Any] = {"cmap": "RdBu_r", "vmin": -limit, "vmax": limit}
    for index, name in enumerate([*names, "merged"]):
        kernel, bias = result.merged if name == "merged" else result.branches[name]
        axis = figure.add_subplot(grid[0, 4 * index : 4 * index + 4])
        sign = "=" if name == "merged" else ("" if index == 0 else "+")
        title = "collapsed 3x3" if name == "merged" else name
        _show(axis, kernel, f"{sign} {title}\nbias {bias:+.2f}", **kernel_range)
        for (i, j), value in np.ndenumerate(kernel.numpy()):
            axis.text(j, i, f"{value + 0.0:.2f}", ha="center", va="center", fontsize=6)
    width = columns  # four panels across the 4 x columns grid
    image = result.lr[0, 0]
    outputs = [result.branch_output[0, 0], result.collapsed_output[0, 0]]
    low = min(float(o.min()) for o in outputs)
    high = max(float(o.max()) for o in outputs)
    difference = (outputs[1] - outputs[0]).abs()
    error = float(difference.max())
    panels: list[tuple[Tensor, str, dict[str, Any]]] = [
        (image, f"input {tuple(image.shape)}", {}),
        (outputs[0], "six branches, summed", {"vmin": low, "vmax": high}),
        (outputs[1], "one collapsed 3x3 conv", {"vmin": low, "vmax": high}),
        (
            difference,
            f"|difference| (float64)\nmax {error:.1e}",
            {"cmap": "magma", "vmin": 0.0, "vmax": max(error, 1e-15)},
        ),
    ]
    for index, (shown, title, options) in enumerate(panels):
        axis = figure.add_subplot(grid[1, width * index : width * index + width])
        _show(axis, shown, title, **options)
    figure.tight_layout()
    return _save(figure, path)


# --------------------------------------------------------------------------- #
# The guide
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Guide:
    """What :func:`build_guide` wrote."""

    markdown: Path
    figures: list[Path]
    checks: list[Check]
    numbers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Sizes:
    crop_2d: int
    icnr_crop: int
    cost_input: tuple[int, int]
    cost_repeats: int
    iterations: int
    batch_size: int
    patch_size: int
    training_images: int


_FULL = _Sizes(12, 40, (90, 160), 5, 300, 16, 17, 8)
_SMALL = _Sizes(6, 10, (12, 16), 1, 6, 4, 8, 2)


def _crop_center(image: np.ndarray, height: int, width: int) -> np.ndarray:
    h, w = image.shape[:2]
    top, left = max(0, (h - height) // 2), max(0, (w - width) // 2)
    return image[top : top + height, left : left + width]


def _training_folder(
    folders: Sequence[Path] | None, sizes: _Sizes, workspace: Path
) -> tuple[list[Path], str]:
    """Folders to train the ICNR comparison on, and a description for the text."""
    from PIL import Image

    if folders:
        return list(folders), " + ".join(f.name for f in folders)
    generated = workspace / "generated"
    generated.mkdir(parents=True, exist_ok=True)
    side = 3 * sizes.patch_size * 3
    for index in range(sizes.training_images):
        Image.fromarray(synthetic_image(side, side, seed=100 + index)).save(
            generated / f"g{index}.png"
        )
    return [generated], "generated test pictures"


def build_guide(
    out: str | Path,
    *,
    espcn: tuple[nn.Module, str],
    fsrcnn: tuple[nn.Module, str],
    image: np.ndarray | None = None,
    training_folders: Sequence[str | Path] | None = None,
    small: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Guide:
    """Compute every figure, check every equivalence, write ``out/theory.md`` + ``out/figures/``.

    Args:
        out: Folder for ``theory.md``; figures go to ``out/figures``.
        espcn, fsrcnn: x3 (or any scale) networks and a description of their weights, e.g.
            from :func:`load_figure_model` and :func:`weights_description`.
        image: (H, W, 3) uint8 photograph for the 2D and ICNR examples; default synthetic.
        training_folders: HR image folders for the ICNR training (default: generated).
        small: Tiny sizes and few iterations (for tests).
        progress: Called with a short message before each step.

    Raises:
        EquivalenceError: If any illustrated equivalence fails to hold; nothing in ``out``
            is changed then (the figures are drawn in a staging folder and moved at the end).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".figures-", dir=out))
    try:
        drawn, checks, numbers = _build(
            staging, espcn, fsrcnn, image, training_folders, small, progress or (lambda _: None)
        )
        text = string.Template(_TEMPLATE).substitute(numbers)
        final = out / "figures"
        final.mkdir(exist_ok=True)
        written = []
        for path in drawn:
            os.replace(path, final / path.name)
            written.append(final / path.name)
        markdown = out / "theory.md"
        markdown.write_text(text)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Guide(markdown, written, checks, numbers)


def build_default_guide(
    out: str | Path,
    *,
    small: bool = False,
    espcn: str | Path | None = None,
    fsrcnn: str | Path | None = None,
    image: str | Path | None = None,
    espcn_fallbacks: Sequence[str | Path] = (),
    progress: Callable[[str], None] | None = None,
) -> Guide:
    """:func:`build_guide` with the standard inputs (what :func:`main` runs).

    Weights, for each network (x3): the file given; else the bundled weights; else a
    fallback (ESPCN: ``espcn_fallbacks``; FSRCNN: the yjn870/FSRCNN-pytorch peer weights in
    ``$SUBPIXEL_DATA/peers``); else, in ``small`` mode only, a freshly built network. The
    photograph is ``image`` when that file exists (else a synthetic picture); the ICNR runs
    train on ``$SUBPIXEL_DATA/train/T91`` when present and not ``small`` (else on generated
    pictures).

    Raises:
        ModelError: No weights found for a network (full mode) or a bad weights file.
        ImageError: An unreadable image.
        EquivalenceError: See :func:`build_guide`.
    """
    from subpixel.data import read_rgb
    from subpixel.paths import data_root

    espcn_model, espcn_source = load_figure_model(
        "espcn", 3, espcn, espcn_fallbacks, untrained=small
    )
    peer = data_root() / "peers" / "yjn870_FSRCNN-pytorch" / "fsrcnn_x3.pth"
    fsrcnn_model, fsrcnn_source = load_figure_model("fsrcnn", 3, fsrcnn, [peer], untrained=small)
    t91 = data_root() / "train" / "T91"
    photo = Path(image) if image is not None else None
    return build_guide(
        out,
        espcn=(espcn_model, weights_description(espcn_model, espcn_source)),
        fsrcnn=(fsrcnn_model, weights_description(fsrcnn_model, fsrcnn_source)),
        image=read_rgb(photo) if photo is not None and photo.is_file() else None,
        training_folders=[t91] if t91.is_dir() and not small else None,
        small=small,
        progress=progress,
    )


def _build(
    figures_dir: Path,
    espcn: tuple[nn.Module, str],
    fsrcnn: tuple[nn.Module, str],
    image: np.ndarray | None,
    training_folders: Sequence[str | Path] | None,
    small: bool,
    say: Callable[[str], None],
) -> tuple[list[Path], list[Check], dict[str, str]]:
    sizes = _SMALL if small else _FULL
    espcn_model, espcn_source = espcn
    fsrcnn_model, fsrcnn_source = fsrcnn
    photo = synthetic_image(150, 225) if image is None else image
    checks: list[Check] = []
    written: list[Path] = []
    numbers: dict[str, str] = {}

    say("1D matrices")
    matrices = conv_matrices_1d()
    checks += matrices.checks
    written.append(draw_matrices_1d(matrices, figures_dir / "matrices_1d.png"))
    numbers.update(
        taps=" ".join(f"{t:g}" for t in matrices.taps.tolist()),
        reversed_taps=" ".join(f"{t:g}" for t in matrices.taps.flip(0).tolist()),
        conv_shape="x".join(map(str, matrices.conv.shape)),
        conv_zeros=f"{int((matrices.conv == 0).sum())} of {matrices.conv.numel()}",
        padded_shape="x".join(map(str, matrices.conv_padded.shape)),
        full_shape="x".join(map(str, matrices.transposed_full.shape)),
        transposed_shape="x".join(map(str, matrices.transposed.shape)),
        subpixel_shape="x".join(map(str, matrices.subpixel.shape)),
        phase0_taps=" ".join(f"{t:g}" for t in matrices.phase_taps[0]),
        phase1_taps=" ".join(f"{t:g}" for t in matrices.phase_taps[1]),
        subpixel_wasted=f"{int((matrices.subpixel[:, 1::2] != 0).sum())}",
        subpixel_products=f"{int((matrices.subpixel != 0).sum())}",
    )

    say("2D routes")
    lr_photo, _ = _luma_pair(photo, 2)
    crop = sizes.crop_2d
    h0, w0 = (lr_photo.shape[-2] - crop) // 2, (lr_photo.shape[-1] - crop) // 2
    lr_crop = lr_photo[..., h0 : h0 + crop, w0 : w0 + crop]
    routes = two_routes_2d(lr_crop)
    random_kernel = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    random_routes = two_routes_2d(lr_crop, random_kernel.double())
    checks += routes.checks
    checks += [
        Check(c.name.replace("2D:", "2D (random kernel):"), c.error, c.tolerance)
        for c in random_routes.checks
    ]
    written.append(draw_two_routes(routes, figures_dir / "two_routes_2d.png"))
    numbers.update(
        lr_2d="x".join(map(str, routes.lr.shape[-2:])),
        hr_2d="x".join(map(str, routes.lr_space.shape[-2:])),
        zero_2d="x".join(map(str, routes.zero_inserted.shape[-2:])),
        phases_2d=str(tuple(routes.phases.shape)),
        phase_kernels_2d=str(tuple(routes.phase_kernels.shape)),
        error_2d=_difference_text(float(routes.difference.abs().max())),
        error_2d_random=_difference_text(float(random_routes.difference.abs().max())),
    )

    say("periodic shuffling")
    shuffle = shuffle_layout()
    checks += shuffle.checks
    written.append(draw_shuffle(shuffle, figures_dir / "periodic_shuffle.png"))

    say("last layers")
    espcn_scale, fsrcnn_scale = _scale_of(espcn_model), _scale_of(fsrcnn_model)
    lr_e, _ = _luma_pair(_crop_center(photo, 24 * espcn_scale, 24 * espcn_scale), espcn_scale)
    lr_f, _ = _luma_pair(_crop_center(photo, 24 * fsrcnn_scale, 24 * fsrcnn_scale), fsrcnn_scale)
    espcn_last = espcn_last_layer(espcn_model, lr_e)
    fsrcnn_last = fsrcnn_last_layer(fsrcnn_model, lr_f)
    checks += espcn_last.checks
    checks += fsrcnn_last.checks
    written.append(draw_last_layer(espcn_last, figures_dir / "espcn_last_layer.png"))
    written.append(draw_last_layer(fsrcnn_last, figures_dir / "fsrcnn_last_layer.png"))
    numbers.update(
        espcn_weights=espcn_source,
        fsrcnn_weights=fsrcnn_source,
        espcn_scale=str(espcn_scale),
        fsrcnn_scale=str(fsrcnn_scale),
        espcn_phase_shape=str(tuple(espcn_last.phase_kernels.shape)),
        espcn_deconv_shape=str(tuple(espcn_last.deconv_kernels.shape)),
        espcn_bias_spread=f"{espcn_last.bias_spread:.3g}",
        espcn_error=f"{max(c.error for c in espcn_last.checks):.1e}",
        espcn_in=str(espcn_last.deconv_kernels.shape[0]),
        espcn_k=str(espcn_last.deconv_kernels.shape[-1]),
        espcn_r2=str(espcn_scale**2),
        espcn_l=str(espcn_last.phase_kernels.shape[-1]),
        fsrcnn_k=str(fsrcnn_last.deconv_kernels.shape[-1]),
        fsrcnn_r2=str(fsrcnn_scale**2),
        fsrcnn_l=str(fsrcnn_last.phase_kernels.shape[-1]),
        fsrcnn_deconv_shape=str(tuple(fsrcnn_last.deconv_kernels.shape)),
        fsrcnn_phase_shape=str(tuple(fsrcnn_last.phase_kernels.shape)),
        fsrcnn_error=f"{max(c.error for c in fsrcnn_last.checks):.1e}",
    )

    say("cost")
    costs = measure_costs(input_size=sizes.cost_input, repeats=sizes.cost_repeats)
    written.append(draw_costs(costs, figures_dir / "cost.png"))
    by = {(r.model, r.scale): r for r in costs}
    mapping = fsrcnn_mapping_cost(fsrcnn_model)
    checks += mapping.checks
    numbers.update(
        cost_input=f"{sizes.cost_input[1]}x{sizes.cost_input[0]}",
        cost_repeats=str(sizes.cost_repeats),
        cost_table=_cost_table(costs),
        srcnn_espcn_ratio=f"{by['srcnn', 3].macs_per_pixel / by['espcn', 3].macs_per_pixel:.0f}",
        srcnn_fsrcnn_ratio=f"{by['srcnn', 3].macs_per_pixel / by['fsrcnn', 3].macs_per_pixel:.0f}",
        srcnn_espcn_time=f"{by['srcnn', 3].milliseconds / by['espcn', 3].milliseconds:.0f}",
        srcnn_fsrcnn_time=f"{by['srcnn', 3].milliseconds / by['fsrcnn', 3].milliseconds:.0f}",
        espcn_x2_x4=f"{by['espcn', 2].macs_per_pixel / by['espcn', 4].macs_per_pixel:.1f}",
        map_d=str(mapping.d),
        map_s=str(mapping.s),
        map_m=str(mapping.m),
        map_k=str(mapping.wide_kernel),
        map_wide=f"{mapping.wide_macs:,}",
        map_shrink=f"{mapping.shrink_macs:,}",
        map_mapping=f"{mapping.mapping_macs:,}",
        map_expand=f"{mapping.expand_macs:,}",
        map_narrow=f"{mapping.narrow_macs:,}",
        map_ratio=f"{mapping.ratio:.1f}",
        map_rf_wide=str(mapping.wide_receptive_field),
        map_rf_narrow=str(mapping.narrow_receptive_field),
    )

    say("first-layer filters")
    espcn_filters = first_layer_filters(espcn_model)
    fsrcnn_filters = first_layer_filters(fsrcnn_model)
    written.append(
        draw_first_layers(
            [("ESPCN", espcn_filters), ("FSRCNN", fsrcnn_filters)],
            figures_dir / "first_layer_filters.png",
        )
    )
    numbers.update(
        espcn_filters=_filters_text(espcn_filters),
        fsrcnn_filters=_filters_text(fsrcnn_filters),
    )

    say("ICNR training (two short runs)")
    with tempfile.TemporaryDirectory(prefix="subpixel-figures-") as temporary:
        workspace = Path(temporary)
        folders, data_name = _training_folder(
            [Path(f) for f in training_folders] if training_folders else None, sizes, workspace
        )
        side = 3 * sizes.icnr_crop
        lr_i, hr_i = _luma_pair(_crop_center(photo, side, side), 3)
        icnr = icnr_comparison(
            folders,
            lr_i,
            hr_i,
            iterations=sizes.iterations,
            batch_size=sizes.batch_size,
            patch_size=sizes.patch_size,
            cache_dir=workspace / "cache",
        )
        shutil.rmtree(workspace / "cache", ignore_errors=True)
    checks += icnr.checks
    written.append(draw_icnr(icnr, figures_dir / "icnr.png", crop=min(20, sizes.icnr_crop)))
    tail = max(1, icnr.iterations // 10)
    numbers.update(
        icnr_iterations=str(icnr.iterations),
        icnr_batch=str(icnr.batch_size),
        icnr_patch=str(icnr.patch_size),
        icnr_data=f"{data_name} ({icnr.images} images)",
        icnr_tail=str(tail),
        icnr_loss_default=f"{np.mean(icnr.losses['default'][-tail:]):.4g}",
        icnr_loss_icnr=f"{np.mean(icnr.losses['icnr'][-tail:]):.4g}",
        icnr_first_default=f"{icnr.losses['default'][0]:.4g}",
        icnr_first_icnr=f"{icnr.losses['icnr'][0]:.4g}",
        icnr_pattern_default=f"{icnr.pattern['default/init']:.3g}",
        icnr_pattern_icnr=f"{icnr.pattern['icnr/init']:.1g}",
        icnr_pattern_default_trained=f"{icnr.pattern['default/trained']:.3g}",
        icnr_pattern_icnr_trained=f"{icnr.pattern['icnr/trained']:.3g}",
        icnr_psnr_default=f"{icnr.psnr['default']:.2f}",
        icnr_psnr_icnr=f"{icnr.psnr['icnr']:.2f}",
        icnr_spread=f"{icnr.checks[0].error:.1e}",
    )

    say("re-parameterisation")
    lr_r, _ = _luma_pair(_crop_center(photo, 3 * sizes.crop_2d, 3 * sizes.crop_2d), 3)
    reparam = reparam_collapse(lr_r, scale=3)
    checks += reparam.checks
    written.append(draw_reparam(reparam, figures_dir / "reparam.png"))
    numbers.update(
        reparam_lr=f"{lr_r.shape[-2]}x{lr_r.shape[-1]}",
        reparam_error=_difference_text(reparam.checks[0].error),
        reparam_bias=f"{reparam.merged[1]:+.2f}",
        reparam_network=reparam.network,
        reparam_network_error=_difference_text(reparam.network_error),
        reparam_training_parameters=f"{reparam.network_parameters[0]:,}",
        reparam_parameters=f"{reparam.network_parameters[1]:,}",
    )

    numbers.update(
        mode="small (test sizes)" if small else "full",
        torch_version=torch.__version__.split("+")[0],
        check_count=str(len(checks)),
        check_table=_check_table(checks),
    )
    return written, checks, numbers


def _difference_text(error: float) -> str:
    return "0" if error == 0 else f"{error:.1e}"


def _filters_text(filters: Tensor) -> str:
    return f"{filters.shape[0]} filters of {filters.shape[-2]}x{filters.shape[-1]}"


def _scale_of(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    scale = getattr(config, "scale", None)
    if not isinstance(scale, int):
        raise TypeError(f"{type(model).__name__} has no config.scale")
    return scale


def _cost_table(rows: Sequence[CostRow]) -> str:
    scales = sorted({r.scale for r in rows})
    names = list(dict.fromkeys(r.model for r in rows))
    by = {(r.model, r.scale): r for r in rows}
    header = "| network | parameters (x3) | " + " | ".join(
        f"MACs/px x{s} | ms x{s}" for s in scales
    )
    lines = [header + " |", "|---" * (2 + 2 * len(scales)) + "|"]
    for name in names:
        cells = [name.upper(), f"{by[name, scales[0]].parameters:,}"]
        if (name, 3) in by:
            cells[1] = f"{by[name, 3].parameters:,}"
        for s in scales:
            cells += [f"{by[name, s].macs_per_pixel:,.0f}", f"{by[name, s].milliseconds:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _check_table(checks: Sequence[Check]) -> str:
    lines = ["| equivalence | max abs difference | tolerance |", "|---|---|---|"]
    for check in checks:
        error = "0 (exact)" if check.error == 0 else f"{check.error:.1e}"
        lines.append(f"| {check.name} | {error} | {check.tolerance:.0e} |")
    return "\n".join(lines)


_TEMPLATE = """\
# Theory you can see

Everything on this page, figures and numbers alike, is computed by `subpixel` itself on real
tensors by `python docs/guide/figures.py` (mode: ${mode}; torch ${torch_version}). The script
stops with an error if any equivalence a figure illustrates fails to hold numerically; the
${check_count} checks it ran are listed at the end.

Weights used:

- ESPCN: ${espcn_weights}
- FSRCNN: ${fsrcnn_weights}

## 1. Convolution, transposed convolution and sub-pixel convolution as matrices

![1D matrices](figures/matrices_1d.png)

Any convolution is a matrix. (a) is a stride-2 convolution of a length-8 signal with the filter
[${taps}] and padding 2: a ${conv_shape} matrix, computed by feeding `F.conv1d` unit vectors
(and checked against one written from the definition). Most of it is zero (${conv_zeros}
entries, grey), and each row is the filter shifted by the stride. (b) is the same convolution
written on the zero-padded signal (${padded_shape}); the hatched columns only ever multiply the
padding.

The transposed convolution is, literally, the transpose. (c) is the transpose of (b), which is
exactly what `F.conv_transpose1d` computes without padding (${full_shape}); its `padding`
argument crops the hatched rows (d), leaving ${transposed_shape} = Cᵀ, the matrix of
`F.conv_transpose1d(..., stride=2, padding=2)`. Read down a column of Cᵀ and the filter appears
in its original order, [${taps}]: each input sample stamps the filter into the output.

(e) reads the same operation as a convolution with stride 1/2: insert a zero between
neighbouring samples and slide the filter one step at a time. The matrix is ${subpixel_shape};
deleting its hatched columns (those that meet the inserted zeros) gives Cᵀ exactly, and each
row now reads [${reversed_taps}], the filter reversed. So the two upsamplings are the same
operation up to the order of the filter taps. Computed this way, ${subpixel_wasted} of the
${subpixel_products} products in (e) multiply an inserted zero (the nonzero entries in hatched
columns), and the work that is not wasted splits in two: even outputs use only taps
[${phase0_taps}], odd outputs only [${phase1_taps}]. Each of these is an ordinary convolution
of the LR signal, which is where the sub-pixel convolution of the next section comes from.

## 2. Two routes to the same 2D output

![two routes](figures/two_routes_2d.png)

Top row: a ${lr_2d} LR crop is placed in sub-pixel space (${zero_2d}, zeros between LR
pixels) and convolved with a 4x4 kernel (here bilinear interpolation's, so the result is
easy to read) at HR resolution, giving ${hr_2d}. Bottom row: the same kernel split by
`layers.deconv_to_subpixel` into ${phase_kernels_2d}, one 2x2 LR kernel per HR phase,
applied in LR space (${phases_2d}), then interleaved by `layers.periodic_shuffle`. The largest
difference between the two outputs is ${error_2d} in float64 (${error_2d_random} with a random
4x4 kernel), and both equal `F.conv_transpose2d`. The second route never multiplies by an
inserted zero and runs entirely at LR resolution: that is the efficiency argument of ESPCN.

## 3. Periodic shuffling

![periodic shuffle](figures/periodic_shuffle.png)

The shuffle only moves values. With r = 3, an LR tensor of 9 channels holding 0, 1, 2, ...
becomes one HR channel three times larger in each direction: channel 3i + j fills position
(i, j) of every 3x3 block (black lines). `layers.periodic_shuffle` is checked against the
paper's formula written as a loop, against `F.pixel_shuffle` after
`layers.paper_to_torch_channel_order`, and against its inverse.

## 4. A trained network's last layer, both ways

![ESPCN last layer](figures/espcn_last_layer.png)

ESPCN x${espcn_scale}'s last layer is an LR convolution with weight ${espcn_phase_shape}.
Put into a `layers.SubpixelConv2d` and converted with `layers.subpixel_to_deconv`, it becomes
one transposed convolution with kernels ${espcn_deconv_shape}: ${espcn_in} kernels of
${espcn_k}x${espcn_k}, one per input feature map, each made of ${espcn_r2} learned
${espcn_l}x${espcn_l} phase kernels interleaved (top: the kernel with the largest norm, its
phases, and the grid lines between them). Read this way, a kernel is the patch that one
feature map paints into the HR image around each LR pixel. Training never ties neighbouring
phases together, so whatever continuity a kernel shows across the grid lines was learned. One
thing does not carry over: ESPCN learns a bias per phase (they differ by up to
${espcn_bias_spread}) while a transposed convolution has one per output channel, so the bias is
added back as a ${espcn_scale}x${espcn_scale} tile. With it, the converted layer reproduces the
network to ${espcn_error}.

![FSRCNN last layer](figures/fsrcnn_last_layer.png)

FSRCNN goes the other way: its last layer is a ${fsrcnn_deconv_shape} transposed convolution
(${fsrcnn_k}x${fsrcnn_k} kernels, stride ${fsrcnn_scale}). `layers.deconv_to_subpixel`
splits it into ${fsrcnn_phase_shape}: ${fsrcnn_r2} LR kernels of ${fsrcnn_l}x${fsrcnn_l} per
input channel, the taps [i::${fsrcnn_scale}, j::${fsrcnn_scale}] of each kernel rotated by 180
degrees. The split network (`models.fsrcnn_to_subpixel`) matches the original to
${fsrcnn_error}.

## 5. What it costs

![cost](figures/cost.png)

Multiply-accumulates per HR output pixel come from `models.measure_complexity`, which runs
each network on a probe and counts every convolution. Times are the median of ${cost_repeats}
runs on a ${cost_input} LR input, measured as the CPU time of one thread (so other work on the
machine does not inflate them), on whatever machine built this page: compare them with each
other rather than with other machines.

${cost_table}

SRCNN convolves at HR resolution, so its cost per HR pixel hardly depends on the scale. ESPCN
and FSRCNN convolve at LR resolution, so their cost per HR pixel falls roughly as 1/r² (only
the last layer grows with r): at x3, ${srcnn_espcn_ratio}x (ESPCN) and
${srcnn_fsrcnn_ratio}x (FSRCNN) fewer MACs than SRCNN, and ${srcnn_espcn_time}x /
${srcnn_fsrcnn_time}x less time here; ESPCN x2 costs ${espcn_x2_x4}x its x4 per HR pixel.

FSRCNN's own trick is the narrow middle. Counted from its layers, per LR pixel: a single
${map_k}x${map_k} mapping layer at d = ${map_d} channels would cost ${map_wide} MACs. FSRCNN
instead shrinks to s = ${map_s} channels with a 1x1 convolution (${map_shrink}), maps with
m = ${map_m} 3x3 layers at ${map_s} channels (${map_mapping}) and expands back with a 1x1
(${map_expand}): ${map_narrow} MACs in all, ${map_ratio}x fewer, while its receptive field
grows from ${map_rf_wide}x${map_rf_wide} to ${map_rf_narrow}x${map_rf_narrow}.

## 6. Learned filters and ICNR

![first-layer filters](figures/first_layer_filters.png)

The first layers of the two networks (ESPCN: ${espcn_filters}; FSRCNN: ${fsrcnn_filters}),
each filter scaled to its own range, drawn as the papers draw them. They are what each network
looks for in the LR image; unlike the last layer, they have no sub-pixel structure, since they
run at LR resolution before anything is upsampled.

![ICNR](figures/icnr.png)

A sub-pixel layer initialised at random gives every one of the r² phases its own random
kernel, so the untrained network's output carries a periodic r x r pattern: the checkerboard
at the top left (its mean pattern, bottom right, has amplitude
${icnr_pattern_default}). ICNR (`layers.icnr_init`) draws one kernel and copies it to every
phase: the output at init is then constant in each 3x3 block (checked: largest spread within
a block ${icnr_spread}; pattern amplitude ${icnr_pattern_icnr}): a nearest-neighbour
upsampling of an LR image that the network computes, blocky but free of the checkerboard.

Both runs train ESPCN x3 from the same trunk weights, on the same batches (${icnr_data},
${icnr_iterations} iterations of ${icnr_batch} patches of ${icnr_patch}x${icnr_patch} LR pixels,
Adam at 1e-3 with the last layer at 0.1x, seed 0); they differ only in the last layer's
initialisation (same distribution, phases tied or not). First-iteration loss: ${icnr_first_default}
(default) against ${icnr_first_icnr} (ICNR); mean loss over the last ${icnr_tail} iterations:
${icnr_loss_default} against ${icnr_loss_icnr}. After training, the pattern amplitudes are
${icnr_pattern_default_trained} and ${icnr_pattern_icnr_trained}, and the PSNR on the crop
shown is ${icnr_psnr_default} dB and ${icnr_psnr_icnr} dB. These are short runs: they show
where training starts, not where a full run ends.

## 7. Re-parameterisation: train with branches, run one convolution

![re-parameterisation](figures/reparam.png)

A sum of convolutions is a convolution, and so is a convolution of a convolution: any block of
linear branches, with no activation inside it, is one convolution in disguise. ECBSR's
edge-oriented block (`reparam.EdgeOrientedBlock`) trains six branches side by side: a 3x3
convolution; a 1x1 convolution to more channels, then a 3x3; three 1x1 convolutions, each
followed by a fixed edge filter (Sobel-x, Sobel-y, Laplacian) with a learned scale and bias per
channel; and the identity. Top: for a block with one channel in and out and random weights,
each branch written as the one 3x3 kernel and bias it equals (`branch_parameters`); their sum
is the collapsed kernel (bias ${reparam_bias}). Bottom: the block run branch by branch and as
that one convolution on a ${reparam_lr} LR crop: they differ by at most ${reparam_error} in
float64. One detail makes this exact at the borders: the 1x1 convolution's output is padded
with its own bias, not with zeros, since that is what the 1x1 gives on the zero-padded input
the collapsed convolution sees.

SESR's linear block (`reparam.CollapsibleLinearBlock`: a 3x3 convolution to 256 channels, a
1x1 back, the identity) collapses the same way. A network of such blocks with activations
between them (`models.ReparamSR`, builders `ecbsr` and `sesr`) collapses block by block into an
ordinary `models.ESPCN`: ${reparam_network} has ${reparam_training_parameters} parameters while
training and ${reparam_parameters} collapsed, and the two forms differ by ${reparam_network_error}
in float32. While training, each block computes its collapsed kernel from its branches at every
step and runs that one convolution: the same function and gradients as the branches (checked
below), at about the cost of the plain network's step. Any plain network's convolutions can
train so: `models.LinearFSRCNN` (builders `fsrcnn-linear` and `fsrcnn-s-linear`) puts SESR's
block in place of each convolution of FSRCNN's body and collapses into an ordinary
`models.FSRCNN`; it starts as the plain network of the same seed would (each block set to
that network's kernel), so the two differ only in how training moves the weights.

## Checks run while building this page

${check_table}
"""


# --------------------------------------------------------------------------- #
# The command line
# --------------------------------------------------------------------------- #

ROOT = Path(__file__).resolve().parent.parent.parent
# Used only when no ESPCN weights are bundled or given: a run being trained on this machine.
DEVELOPMENT_ESPCN = Path("/work/runs/espcn_x3/best.safetensors")


def main(argv: Sequence[str] | None = None) -> int:
    """Build docs/theory.md and docs/figures/*.png; 1 if an equivalence fails."""
    parser = argparse.ArgumentParser(
        description="Build docs/theory.md and docs/figures/*.png with subpixel's own functions."
    )
    parser.add_argument("-o", "--out", type=Path, default=ROOT / "docs", help="output folder")
    parser.add_argument("--small", action="store_true", help="tiny sizes, a few seconds")
    parser.add_argument("--espcn", type=Path, help="ESPCN x3 weights (.safetensors)")
    parser.add_argument("--fsrcnn", type=Path, help="FSRCNN x3 weights (.safetensors or .pth)")
    parser.add_argument("--image", type=Path, default=ROOT / "examples" / "cat.png")
    args = parser.parse_args(argv)
    try:
        guide = build_default_guide(
            args.out,
            small=args.small,
            espcn=args.espcn,
            fsrcnn=args.fsrcnn,
            image=args.image,
            espcn_fallbacks=[DEVELOPMENT_ESPCN],
            progress=lambda message: print(f"... {message}", flush=True),
        )
    except SubpixelError as error:
        print(f"figures: error: {error}", file=sys.stderr)
        return 1
    for check in guide.checks:
        print(f"ok  {check.error:9.1e} <= {check.tolerance:.0e}  {check.name}")
    for path in guide.figures:
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")
    print(f"wrote {guide.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
