"""Exact overlapped tiling: upscale a large image tile by tile, with the untiled result.

A tile is ``N x N`` LR (input) pixels, its *interior*. The network runs on the interior plus a
margin of ``receptive_radius(model)`` LR pixels on each side, cut from the image and clipped at
its true border, and only the output pixels that belong to the interior are kept. Why this is
exact, to float rounding:

* Every layer is local: an output pixel depends on a bounded window of the layer's input.
  Composing the windows of all layers gives the LR pixels an output pixel depends on; the
  radius is the largest distance from an output pixel's own LR pixel (``o // r``) to any of
  them. Outputs of the interior therefore see only real pixels of the margin.
* Zero padding happens at every layer, at the edge of whatever the layer is given. At a tile
  edge inside the image that is wrong, but the error only reaches ``radius`` LR pixels
  inwards, into the margin that is thrown away. At the true image border the tile's edge is
  the image's edge, so the tile pads with the same zeros as the whole image does.
* MATLAB bicubic (``models.Bicubic``, SRCNN's first step) replicates edge pixels instead of
  padding with zeros. Its weights depend only on the output pixel's position relative to the
  LR grid, not on the image size (``subpixel.bicubic.contributions``), and it replicates only
  where a tap falls outside what it is given: inside a tile that is within 2 LR pixels of the
  tile's edge (its taps reach 2 pixels), again inside the margin, and at the true border it
  replicates the same pixels as the whole image does.

``receptive_radius`` derives the radius from the layers themselves (kernel sizes, padding,
stride, dilation, the sub-pixel layer's padding and crop, the bicubic taps), not from a table
of networks, by composing each layer's input window exactly. It follows the layers in the order
the model calls them (recorded with hooks on a small probe) and composes them as a chain: for
a model with skip connections that is the sum over all its layers, at least the radius of its
longest path, so still enough.

The output may also be resampled to a size other than ``r`` times the input (a non-native
scale): ``run_tiled`` then assigns each final output pixel to the LR pixel under its centre
and widens the margin by the reach of the MATLAB bicubic taps, so tiles still agree exactly.

Example:
    >>> from subpixel import models
    >>> receptive_radius(models.build("espcn", scale=3))  # 5x5, 3x3, 3x3 convolutions
    4
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from subpixel.bicubic import REACH, apply_taps, contributions, phase_weights
from subpixel.errors import SubpixelError
from subpixel.layers import SubpixelConv2d
from subpixel.models.bicubic import Bicubic
from subpixel.reparam import Collapsible

__all__ = [
    "TilingError",
    "estimate_tile_memory",
    "receptive_radius",
    "run_in_grid",
    "run_tiled",
    "tile_for_memory",
    "tile_margin",
    "work_per_lr_pixel",
]

# Modules that act on each pixel alone (activations, normalisation in eval mode, dropout):
# they neither widen the receptive field nor change the resolution.
_POINTWISE = (
    nn.Identity,
    nn.Tanh,
    nn.ReLU,
    nn.ReLU6,
    nn.PReLU,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Hardtanh,
    nn.Hardsigmoid,
    nn.Hardswish,
    nn.Softplus,
    nn.Dropout,
    nn.Dropout2d,
    nn.BatchNorm2d,
)
# Modules with a known geometry; whatever they contain is not looked into.
_GEOMETRIC = (nn.Conv2d, nn.ConvTranspose2d, SubpixelConv2d, Bicubic, nn.PixelShuffle)
_PROBE = 16  # LR probe side: big enough for every kernel here, small enough to be instant


class TilingError(SubpixelError, ValueError):
    """A tile size or memory budget cannot be used, or a model's receptive field is unknown."""


# --------------------------------------------------------------------------- #
# Tracing the layers a model runs
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class _Step:
    """One layer as the model ran it on the probe."""

    module: nn.Module
    in_shape: tuple[int, ...]  # (B, C, H, W)
    out_shape: tuple[int, ...]


@dataclass(frozen=True)
class _Trace:
    """The layers a model called on a probe, in call order, and the probe's shapes."""

    steps: list[_Step]
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    itemsize: int  # bytes per activation value

    @property
    def native_scale(self) -> int:
        return self.out_shape[-1] // self.in_shape[-1]


def _probe_channels(model: nn.Module) -> int:
    # The first layer that names its input channels; Bicubic takes any number.
    for module in model.modules():
        channels = getattr(module, "in_channels", None)
        if isinstance(channels, int):
            return channels
    return 1


def _trace(model: nn.Module) -> _Trace:
    """Run ``model`` on a small probe and record the layers it calls.

    A module of a known type (``_GEOMETRIC`` or ``_POINTWISE``) or without children is one
    step; containers are looked into, known modules are not (``SubpixelConv2d`` holds a conv).
    A re-parameterised network (``Collapsible``) is traced in its collapsed form: its blocks
    run their merged kernels functionally, where no hook would see them.
    """
    if isinstance(model, Collapsible):
        model = model.collapse()
    steps: list[_Step] = []
    open_steps: list[tuple[nn.Module, tuple[int, ...]]] = []

    def is_step(module: nn.Module) -> bool:
        return isinstance(module, _GEOMETRIC + _POINTWISE) or not any(module.children())

    def before(module: nn.Module, inputs: tuple[object, ...]) -> None:
        if not open_steps and is_step(module):
            first = inputs[0] if inputs else None
            shape = tuple(first.shape) if isinstance(first, Tensor) else ()
            open_steps.append((module, shape))

    def after(module: nn.Module, inputs: tuple[object, ...], output: object) -> None:
        if open_steps and open_steps[-1][0] is module:
            _, in_shape = open_steps.pop()
            out_shape = tuple(output.shape) if isinstance(output, Tensor) else ()
            steps.append(_Step(module, in_shape, out_shape))

    parameter = next(model.parameters(), None)
    dtype = parameter.dtype if parameter is not None else torch.float32
    generator = torch.Generator().manual_seed(0)
    probe = torch.rand(1, _probe_channels(model), _PROBE, _PROBE, generator=generator, dtype=dtype)
    probe = probe.to(parameter.device if parameter is not None else "cpu")
    handles = []
    for module in model.modules():
        handles.append(module.register_forward_pre_hook(before))
        handles.append(module.register_forward_hook(after))
    try:
        with torch.inference_mode():
            output = model(probe)
    finally:
        for handle in handles:
            handle.remove()
    if not isinstance(output, Tensor) or output.dim() != 4:
        raise TilingError(f"{type(model).__name__} does not return a (B, C, H, W) tensor")
    itemsize = torch.empty((), dtype=dtype).element_size()
    return _Trace(steps, tuple(probe.shape), tuple(output.shape), itemsize)


# --------------------------------------------------------------------------- #
# Receptive field
# --------------------------------------------------------------------------- #

# Input pixels [lo, hi] (inclusive) that output pixel o of a layer depends on, along one axis.
_Window = Callable[[int], tuple[int, int]]


def _conv_window(module: nn.Conv2d, axis: int) -> _Window:
    if module.padding_mode == "circular":
        raise TilingError(f"circular padding wraps around the image and cannot be tiled: {module}")
    if module.stride[axis] != 1:
        raise TilingError(f"strided (downsampling) convolutions are not supported: {module}")
    k, d = module.kernel_size[axis], module.dilation[axis]
    padding = module.padding
    before: int
    if isinstance(padding, str):  # "same": torch puts the odd pixel on the far side
        before = (d * (k - 1)) // 2 if padding == "same" else 0
    else:
        before = int(padding[axis])
    return lambda o: (o - before, o - before + d * (k - 1))


def _transposed_window(module: nn.ConvTranspose2d, axis: int) -> _Window:
    # Output o receives input i through tap j when o = s i - p + d j, 0 <= j < k.
    s, k, d = module.stride[axis], module.kernel_size[axis], module.dilation[axis]
    p = int(module.padding[axis])
    return lambda o: (-((d * (k - 1) - o - p) // s), (o + p) // s)


def _subpixel_window(module: SubpixelConv2d, axis: int) -> _Window:
    # Output o is shuffled-map pixel o + crop, made by LR conv output q = (o + crop) // r,
    # which reads padded inputs q .. q + L - 1, i.e. inputs q - pad .. q - pad + L - 1.
    r = module.scale
    length = module.conv.kernel_size[axis]
    pad = module.padding[2] if axis == 0 else module.padding[0]  # (left, right, top, bottom)
    crop = module.crop[axis]
    return lambda o: ((o + crop) // r - pad, (o + crop) // r - pad + length - 1)


def _bicubic_window(module: Bicubic) -> _Window:
    # MATLAB's taps repeat every r outputs, shifted by one LR pixel: phase p of LR pixel q
    # reads q - 2 + k for its nonzero weights k. Zero-weight taps are not counted.
    r = module.scale
    used = [np.flatnonzero(weights) - REACH for weights in phase_weights(r)]
    phase_lo = [int(k.min()) for k in used]
    phase_hi = [int(k.max()) for k in used]
    return lambda o: (o // r + phase_lo[o % r], o // r + phase_hi[o % r])


def _window(step: _Step, axis: int) -> tuple[_Window, int]:
    """The layer's input window along ``axis`` and its upscaling factor."""
    module = step.module
    if isinstance(module, SubpixelConv2d):
        return _subpixel_window(module, axis), module.scale
    if isinstance(module, nn.Conv2d):
        return _conv_window(module, axis), 1
    if isinstance(module, nn.ConvTranspose2d):
        return _transposed_window(module, axis), module.stride[axis]
    if isinstance(module, Bicubic):
        return _bicubic_window(module), module.scale
    if isinstance(module, nn.PixelShuffle):
        r = module.upscale_factor
        return (lambda o: (o // r, o // r)), r
    if isinstance(module, _POINTWISE):
        return (lambda o: (o, o)), 1
    raise TilingError(
        f"cannot tell the receptive field of a {type(module).__name__} layer; tiling knows "
        "Conv2d, ConvTranspose2d, SubpixelConv2d, Bicubic, PixelShuffle and pointwise layers"
    )


def _axis_reach(steps: Sequence[_Step], axis: int) -> tuple[int, int]:
    """(radius, scale) along one axis: compose the windows from the output back to the input."""
    windows = [_window(step, axis) for step in steps]
    scale = math.prod(up for _, up in windows)
    radius = 0
    for phase in range(scale):  # one output pixel of each phase of LR pixel 0
        lo = hi = phase
        for window, _ in reversed(windows):
            lo, hi = window(lo)[0], window(hi)[1]  # every window is monotone in o
        radius = max(radius, -lo, hi)
    return radius, scale


def _radius(trace: _Trace) -> int:
    radii = []
    for axis in (0, 1):
        radius, scale = _axis_reach(trace.steps, axis)
        if trace.out_shape[2 + axis] != scale * trace.in_shape[2 + axis]:
            raise TilingError(
                f"the layers found scale by {scale}, but the model turned {trace.in_shape[2:]} "
                f"into {trace.out_shape[2:]}: some resampling is not done by a module"
            )
        radii.append(radius)
    return max(radii)


def receptive_radius(model: nn.Module) -> int:
    """LR pixels of context needed on each side of a tile for its interior to be exact.

    Derived from the layers the model calls (see the module docstring). For the built-in
    networks at x2/x3/x4: espcn 4, espcn-7 8, fsrcnn 8/8/7 (its sub-pixel form the same),
    fsrcnn-s 5/5/4, srcnn 6/4/4, srcnn-915 5/4/3, bicubic 2.

    Raises:
        TilingError: for a layer whose geometry is unknown or cannot be tiled (circular
            padding, a strided convolution), or when the layers found do not account for
            the model's output size (resampling done in ``forward`` by a function).

    Example:
        >>> from subpixel import models
        >>> receptive_radius(models.build("fsrcnn", scale=3))
        8
    """
    return _radius(_trace(model))


# --------------------------------------------------------------------------- #
# Memory
# --------------------------------------------------------------------------- #

#: Bytes per LR pixel and image channel that the pipeline around the network holds while the
#: network runs (the tile's input as float32, its YCbCr in float64 and float32).
PIPELINE_BYTES_PER_LR_PIXEL = 64
#: Bytes per output pixel and image channel once the network is done (network output, bicubic
#: chroma, the tile in float64 while converting back to RGB, clipping and quantising): the
#: peak of that phase is ``channels * (PIPELINE_BYTES_PER_LR_PIXEL +
#: PIPELINE_BYTES_PER_OUTPUT_PIXEL * scale^2)`` per LR pixel. Both constants were measured on
#: CPU with ``benchmarks/tiling_memory.py --calibrate`` and rounded up.
PIPELINE_BYTES_PER_OUTPUT_PIXEL = 32


def _blocked(channels: int) -> int:
    # oneDNN, torch's CPU convolution backend, keeps channels in blocks of 16.
    return -(-channels // 16) * 16


def _step_elements(step: _Step, lr_pixels: int) -> float:
    """Values per LR pixel alive while this layer runs: input, output and scratch."""
    if len(step.in_shape) != 4 or len(step.out_shape) != 4:
        return 0.0
    (_, c_in, h_in, w_in), (_, c_out, h_out, w_out) = step.in_shape, step.out_shape
    in_px, out_px = h_in * w_in / lr_pixels, h_out * w_out / lr_pixels
    elements = c_in * in_px + c_out * out_px
    if isinstance(step.module, (nn.Conv2d, SubpixelConv2d)):
        # Measured on CPU: a convolution also holds its input and its output in oneDNN's
        # 16-channel-blocked layout while it runs.
        elements += _blocked(c_in) * in_px + _blocked(c_out) * out_px
    elif isinstance(step.module, nn.ConvTranspose2d):
        # Measured: a blocked copy of the input and a second copy of the output.
        elements += _blocked(c_in) * in_px + c_out * out_px
    elif isinstance(step.module, Bicubic):
        # The row and column passes each hold a gathered copy and a product of their output.
        elements += 2 * c_out * h_out * w_in / lr_pixels + 2 * c_out * out_px
    return elements


def _bytes_per_lr_pixel(trace: _Trace, channels: int, scale: float | None) -> float:
    lr_pixels = trace.in_shape[2] * trace.in_shape[3]
    largest = max((_step_elements(step, lr_pixels) for step in trace.steps), default=0.0)
    # The two phases of a tile peak at different times: the network's run, with the tile's
    # input around it, and the output's assembly after the activations are freed.
    network = (trace.in_shape[1] + largest) * trace.itemsize  # + the model's input
    out_scale = max(float(scale or 0), trace.native_scale)
    lr_part = channels * PIPELINE_BYTES_PER_LR_PIXEL
    return max(
        network + lr_part, lr_part + channels * PIPELINE_BYTES_PER_OUTPUT_PIXEL * out_scale**2
    )


def _resample_margin(native: int, scale: float | None) -> int:
    """Extra LR margin for the MATLAB bicubic taps of a resize to a non-native scale."""
    if scale is None or float(scale) == native:
        return 0
    factor = float(scale) / native
    # Half the kernel width (4, widened by 1/factor when shrinking) plus one for the taps.
    hr_reach = 2.0 / min(factor, 1.0) + 1
    return math.ceil(hr_reach / native)


def estimate_tile_memory(
    model: nn.Module, channels: int, tile: int, *, scale: float | None = None
) -> int:
    """Estimated peak working memory, in bytes, of one ``tile x tile`` tile with its margin.

    The network's share comes from its layer widths, read on a probe run: while a layer runs
    its input and output are alive, and a convolution also holds both in oneDNN's 16-channel
    blocks (measured on CPU); the model's input is alive throughout; the peak is the largest
    layer, plus ``PIPELINE_BYTES_PER_LR_PIXEL`` per LR pixel and image channel for the tile's
    input around it. After the network, the tile's output is assembled (chroma, conversion
    back to RGB, clipping, quantising) in ``PIPELINE_BYTES_PER_LR_PIXEL +
    PIPELINE_BYTES_PER_OUTPUT_PIXEL * scale^2`` bytes per LR pixel and image channel. The
    estimate is the larger of the two phases, per LR pixel, times the tile's pixels with its
    margin. The input image and the finished output are not counted: they are as large as
    they are.

    This counts the arrays alive at the peak. glibc's malloc may also keep freed memory
    between tiles: for an ESPCN x3 12-megapixel run with 256- and 512-pixel tiles the resident
    size grew 2.2-2.7 times the estimate with its defaults, and stayed below the estimate with
    ``MALLOC_MMAP_THRESHOLD_=1048576`` in the environment (``benchmarks/tiling_memory.py``).

    Args:
        model: the network.
        channels: image channels going through the pipeline (1 gray, 3 RGB, one more for alpha).
        tile: interior side in LR pixels.
        scale: the total output scale, when it is not the network's.

    Example:
        >>> from subpixel import models
        >>> estimate_tile_memory(models.build("espcn", scale=3), 3, 256) // 2**20
        70
    """
    trace = _trace(model)
    margin = max(_radius(trace), 2) + _resample_margin(trace.native_scale, scale)
    side = tile + 2 * margin
    return math.ceil(side * side * _bytes_per_lr_pixel(trace, channels, scale))


@functools.lru_cache(maxsize=8)
def _memory_plan(model: nn.Module, channels: int, scale: float | None) -> tuple[int, float]:
    """A tile's margin and its bytes per LR pixel: they depend on the layers' shapes only,
    so a network is traced once, not for every image it upscales under a budget."""
    trace = _trace(model)
    margin = max(_radius(trace), 2) + _resample_margin(trace.native_scale, scale)
    return margin, _bytes_per_lr_pixel(trace, channels, scale)


def work_per_lr_pixel(model: nn.Module, channels: int, *, scale: float | None = None) -> float:
    """Estimated bytes of working memory per LR pixel of an untiled image (no margin): the
    per-pixel rate of ``estimate_tile_memory``."""
    return _memory_plan(model, channels, scale)[1]


def tile_for_memory(
    model: nn.Module, channels: int, max_bytes: int, *, scale: float | None = None
) -> int:
    """The largest tile side (LR pixels) whose estimated working memory fits ``max_bytes``.

    See ``estimate_tile_memory`` for what is counted; on CPU the estimate errs on the high
    side. On a GPU the network's activations live in device memory and the rest in host
    memory, each below the estimate.

    Raises:
        TilingError: if not even a 1 x 1 tile fits.

    Example:
        >>> from subpixel import models
        >>> tile_for_memory(models.build("espcn", scale=3), 3, 2 * 2**30)
        1418
    """
    margin, per_pixel = _memory_plan(model, channels, scale)
    tile = math.isqrt(max(0, int(max_bytes / per_pixel))) - 2 * margin
    if tile < 1:
        needed = math.ceil((1 + 2 * margin) ** 2 * per_pixel)
        raise TilingError(
            f"a memory budget of {max_bytes} bytes is too small: the smallest tile (1 pixel "
            f"and a margin of {margin}) needs about {needed} bytes"
        )
    return tile


# --------------------------------------------------------------------------- #
# Planning and running tiles
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class _AxisMap:
    """How the final output along one axis is made from the network's output.

    ``indices``/``weights`` are MATLAB bicubic taps from the network's output (``scale *
    lr_len`` pixels) to ``out_len`` pixels; ``None`` when ``out_len == scale * lr_len``.
    """

    lr_len: int
    scale: int
    out_len: int
    indices: np.ndarray | None
    weights: np.ndarray | None

    @classmethod
    def make(cls, lr_len: int, scale: int, out_len: int) -> _AxisMap:
        hr_len = scale * lr_len
        if out_len == hr_len:
            return cls(lr_len, scale, out_len, None, None)
        # The per-axis factor out/in, as imresize(..., output_shape) uses.
        indices, weights = contributions(hr_len, out_len, out_len / hr_len)
        return cls(lr_len, scale, out_len, indices, weights.astype(np.float32))

    def owners(self) -> np.ndarray:
        """The LR pixel under the centre of each output pixel (nondecreasing)."""
        centre = (2 * np.arange(self.out_len, dtype=np.int64) + 1) * self.lr_len
        return np.minimum(centre // (2 * self.out_len), self.lr_len - 1)


@dataclass(frozen=True)
class _Span:
    """One tile along one axis."""

    out: slice  # final output pixels it writes
    lr: slice  # LR pixels it computes on: interior, margin, clipped to the image
    hr: slice  # network output pixels it needs, relative to the block computed from ``lr``
    taps: tuple[np.ndarray, np.ndarray] | None  # resize taps relative to ``hr.start``


def _plan_axis(axis: _AxisMap, tile: int, radius: int) -> list[_Span]:
    owners = axis.owners()
    spans = []
    for start in range(0, axis.lr_len, tile):
        o0, o1 = np.searchsorted(owners, [start, start + tile], side="left")
        if o0 == o1:
            continue  # a heavy downscale can leave an interior with no output pixel
        if axis.indices is None:
            hr_lo, hr_hi = int(o0), int(o1)
        else:
            used = axis.indices[o0:o1]
            hr_lo, hr_hi = int(used.min()), int(used.max()) + 1
        lr_lo = max(0, hr_lo // axis.scale - radius)
        lr_hi = min(axis.lr_len, (hr_hi - 1) // axis.scale + 1 + radius)
        origin = axis.scale * lr_lo
        taps = None
        if axis.indices is not None and axis.weights is not None:
            taps = (axis.indices[o0:o1] - hr_lo, axis.weights[o0:o1])
        spans.append(
            _Span(
                slice(int(o0), int(o1)),
                slice(lr_lo, lr_hi),
                slice(hr_lo - origin, hr_hi - origin),
                taps,
            )
        )
    return spans


def tile_margin(radius: int) -> int:
    """The margin the image pipeline gives each tile: the network's receptive ``radius``, or
    MATLAB bicubic's reach if wider (chroma and bicubic alpha are tiled with the network)."""
    return max(radius, REACH)


def run_in_grid(
    run: Callable[[np.ndarray], np.ndarray], lr: np.ndarray, *, tile: int, margin: int
) -> np.ndarray:
    """A network on each frame of ``lr`` in the tiles ``run_tiled`` cuts at its own scale.

    The tiles are those of ``run_tiled(..., tile=tile, radius=margin)`` without a resize:
    interiors of ``tile`` LR pixels from the top left, each run with ``margin`` pixels of
    context clipped at the border, one frame at a time. So every output pixel comes from
    the very input ``run`` gets when the image pipeline tiles the frame at ``tile``, and an
    engine whose arithmetic depends on the input's shape gives the same bytes either way.

    Args:
        run: (1, C, h, w) float32 -> (1, C', r h, r w) float32, the network.
        lr: (B, C, H, W) float32.
        tile: interior side in LR pixels; a frame no larger runs whole.
        margin: context on each side, at least the network's receptive radius.

    Returns:
        (B, C', r H, r W) float32.
    """
    batch, _, height, width = lr.shape
    if height <= tile and width <= tile:
        frames = [run(lr[i : i + 1]) for i in range(batch)]
        return frames[0] if batch == 1 else np.concatenate(frames)
    out: np.ndarray | None = None
    scale = 0
    for i in range(batch):
        for row in _grid_spans(height, tile, margin):
            for col in _grid_spans(width, tile, margin):
                block = run(np.ascontiguousarray(lr[i : i + 1, :, row[0], col[0]]))
                if out is None:
                    scale = block.shape[-1] // (col[0].stop - col[0].start)
                    shape = (batch, block.shape[1], scale * height, scale * width)
                    out = np.empty(shape, dtype=np.float32)
                rows = slice(scale * row[1].start, scale * row[1].stop)
                cols = slice(scale * col[1].start, scale * col[1].stop)
                out[i, :, rows, cols] = block[
                    0,
                    :,
                    scale * row[2].start : scale * row[2].stop,
                    scale * col[2].start : scale * col[2].stop,
                ]
    assert out is not None
    return out


def _grid_spans(length: int, tile: int, margin: int) -> list[tuple[slice, slice, slice]]:
    """(LR input, LR interior, interior within the input) of each tile along one axis, as
    ``_plan_axis`` cuts them at the network's own scale."""
    spans = []
    for span in _plan_axis(_AxisMap.make(length, 1, length), tile, margin):
        # At scale 1 the output pixels are the LR pixels; ``hr`` is relative to ``lr``.
        spans.append((span.lr, span.out, span.hr))
    return spans


def run_tiled(
    upscale: Callable[[np.ndarray], np.ndarray],
    lr: np.ndarray,
    scale: int,
    write: Callable[[slice, slice, np.ndarray], None],
    *,
    out_shape: tuple[int, int] | None = None,
    tile: int | None = None,
    radius: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Upscale ``lr`` tile by tile and hand each finished block to ``write``.

    Args:
        upscale: (h, w, C) crop of ``lr`` -> (scale h, scale w, C') float array; the network
            step, run once per tile on the interior plus margin.
        lr: the (H, W, C) input, any dtype (crops are passed as they are).
        scale: the factor ``upscale`` enlarges by.
        write: called as ``write(rows, cols, block)`` with the output rows and columns the
            (h', w', C') float32 block belongs at; blocks tile the output exactly once.
        out_shape: final (height, width) when it is not ``scale`` times the input: the
            network's output is then resized by MATLAB bicubic (float, per-axis factor
            out/in, antialiased when shrinking, the smaller factor first), as
            ``imresize(..., output_shape=out_shape)`` does on the whole image.
        tile: interior side in LR pixels; ``None`` runs the whole image as one tile.
        radius: margin in LR pixels, at least ``receptive_radius`` of the network.
        progress: called as ``progress(done, total)`` after each tile.

    Raises:
        TilingError: for a tile below 1 or a negative radius, or if ``upscale`` does not
            enlarge by ``scale``.
    """
    height, width = lr.shape[:2]
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 1):
        raise TilingError(f"tile must be a positive integer number of pixels, got {tile!r}")
    if radius < 0:
        raise TilingError(f"radius must be >= 0, got {radius}")
    out_h, out_w = out_shape if out_shape is not None else (scale * height, scale * width)
    rows, cols = _AxisMap.make(height, scale, out_h), _AxisMap.make(width, scale, out_w)
    row_spans = _plan_axis(rows, tile or height, radius)
    col_spans = _plan_axis(cols, tile or width, radius)
    # MATLAB resizes along the dimension with the smaller factor first, rows on a tie.
    factors = (out_h / height, out_w / width)
    passes = sorted((0, 1), key=lambda a: factors[a])
    total, done = len(row_spans) * len(col_spans), 0
    for row in row_spans:
        for col in col_spans:
            crop = lr[row.lr, col.lr]
            block = upscale(crop)
            expected = (scale * crop.shape[0], scale * crop.shape[1])
            if tuple(block.shape[:2]) != expected:
                raise TilingError(f"upscaling {crop.shape[:2]} gave {block.shape[:2]}")
            block = np.asarray(block[row.hr, col.hr], dtype=np.float32)
            for axis in passes:
                taps = row.taps if axis == 0 else col.taps
                if taps is not None:
                    block = apply_taps(block, axis, *taps)  # MATLAB's float pass
            write(row.out, col.out, block)
            done += 1
            if progress is not None:
                progress(done, total)
