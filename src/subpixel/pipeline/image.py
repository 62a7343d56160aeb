"""Upscaling images with a network: colour, alpha, 8/16-bit, any scale, tiles, PIL or numpy.

Colour. Y-channel networks (``card.colour_space == "y"``) upscale the BT.601 studio-swing
luminance and bicubic upscales Cb/Cr, as the papers do; RGB networks take RGB. Grayscale
images are taken to studio-swing Y (as an RGB image with R = G = B would be), so a gray
picture and its RGB copy give the same result. See ``subpixel.images`` for how each Pillow
mode is handled.

Alpha. ``alpha="bicubic"`` (the default) upscales the alpha plane by MATLAB bicubic;
``alpha="network"`` runs it through the network as a grayscale image (a Y network sees it as
studio-swing luminance, an RGB network as R = G = B), which keeps cut-out edges sharper.

Scale. A network has a native integer scale r. ``scale`` may be any number from 1 to
``MAX_SCALE`` (16), integer or not. The output is ``round(H * scale) x round(W * scale)``
pixels, rounded half up. When that is not ``r`` times the input, the network upscales by r and
MATLAB bicubic resizes its float output to the requested size (``imresize(sr, output_shape=
...)``: cubic a = -0.5, edge pixels replicated, antialiased when shrinking): a x2 network asked
for x2.5 enlarges by 2 and then by 1.25; asked for x1.5, it enlarges by 2 and shrinks by 0.75.
Every plane (Y, chroma, alpha) takes the same two steps. Anything else -- not a real number,
NaN or infinite, below 1 (this is an upscaler), above ``MAX_SCALE``, or an output with no
pixels -- raises ``ScaleError``.

Tiles. With ``tile=N`` the image is processed in N x N tiles of input pixels, each with a
margin of the network's receptive radius (``subpixel.pipeline.tiling``), so memory is bounded by the
tile and the result equals the untiled one to float rounding (at most 1e-6 before
quantisation). ``max_memory`` is a ceiling on the whole process: the largest tile whose
estimated work (``subpixel.pipeline.tiling.tile_for_memory``) fits beside what the process
holds and the output; by default the ceiling is what it holds plus half the memory
available. An engine that runs on a fixed grid of tiles (``Network.tile_grid``,
``subpixel.engines.grid``) gets the grid's tiles whatever size is asked for, and an untiled
image is cut into the same tiles for the network alone: the result is then the same bit for
bit. ``progress(done, total)`` is called after each tile. Clipping to [0, 1] and
quantising to 8/16 bits happen per tile, straight into the output, so no full-size float copy
of the output exists.

Speed. Around the network the arithmetic is ``subpixel.pipeline.fastpath``'s: Y and the chroma terms
of RGB in one matrix product at input size, MATLAB bicubic phase by phase, and each output
colour rounded into the output type in the pass that makes it (OpenCV's kernels when it is
installed). Which engine and arithmetic run the network is the model's business
(``subpixel.Upscaler``): the pipeline only says how many bits the samples have.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Callable
from typing import Protocol

import numpy as np
from PIL import Image
from torch import nn

from subpixel.errors import ImageError, ScaleError
from subpixel.limits import (
    DEFAULT_TILE_WORK,
    MAX_SCALE,
    MEMORY_SHARE,
    memory_budget,
    resident_memory,
)
from subpixel.pipeline import fastpath
from subpixel.pipeline.tiling import TilingError, run_tiled, tile_for_memory, tile_margin

__all__ = [
    "ALPHA_MODES",
    "MAX_SCALE",
    "Network",
    "output_size",
    "upscale",
    "upscale_float",
]

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]

#: How the alpha plane is upscaled.
ALPHA_MODES = ("bicubic", "network")

# More than any network here holds per LR value while it runs (ESPCN-7's 64 float32 channels
# at a few layers): below this, an image cannot exceed the budget and is not measured.
_MOST_BYTES_PER_LR_VALUE = 16_384

_CONVERTED_TO_RGB = ("CMYK", "YCbCr", "LAB", "HSV")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class Network(Protocol):
    """What the pipeline needs of a model (``subpixel.Upscaler`` is one)."""

    @property
    def scale(self) -> int: ...  # the network's own scale r

    @property
    def colour_space(self) -> str: ...  # "y" or "rgb"

    @property
    def receptive_radius(self) -> int: ...  # LR pixels of context a tile needs

    @property
    def network(self) -> nn.Module: ...  # its layers size the tiles for a memory budget

    def run(self, lr: np.ndarray, *, bits: int = 8, grid_tile: bool = False) -> np.ndarray:
        """(B, C, H, W) float32 in [0, 1] -> (B, C, rH, rW), in the arithmetic chosen for
        inputs of ``bits`` bits per sample; ``grid_tile``: ``lr`` is one tile of the
        engine's grid (``tile_grid``), to run as it is."""
        ...

    def tile_grid(self, bits: int = 8) -> int | None:
        """The tile side of the fixed grid the engine runs on, or None for any tiles."""
        ...


def output_size(height: int, width: int, scale: float | None, native: int) -> tuple[int, int]:
    """Output (height, width) for an input of ``height x width`` at ``scale``.

    ``None`` means the network's ``native`` scale. Otherwise each side is ``input * scale``
    rounded half up.

    Raises:
        ScaleError: ``scale`` is not a finite number in [1, ``MAX_SCALE``], or the output
            would have no pixels.

    Example:
        >>> output_size(150, 225, 2.5, native=2)
        (375, 563)
    """
    if scale is None:
        return native * height, native * width
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise ScaleError(f"scale must be a number, got {scale!r}")
    value = float(scale)
    if not math.isfinite(value) or value <= 0:
        raise ScaleError(f"scale must be a positive finite number, got {scale!r}")
    if value < 1:
        raise ScaleError(f"scale must be at least 1 (this is an upscaler), got {scale!r}")
    if value > MAX_SCALE:
        raise ScaleError(f"scale must be at most {MAX_SCALE:g}, got {scale!r}")
    out = (math.floor(height * value + 0.5), math.floor(width * value + 0.5))
    if min(out) < 1:
        raise ScaleError(f"x{value:g} of a {width}x{height} image has no pixels")
    return out


def _run(net: Network, planes: np.ndarray, bits: int, grid_tile: bool) -> np.ndarray:
    """(C, H, W) float32 planes -> network -> (C, rH, rW) float32 planes; ``grid_tile``:
    the planes are one tile of the engine's grid."""
    lr = np.ascontiguousarray(planes, dtype=np.float32)[None]
    return np.asarray(net.run(lr, bits=bits, grid_tile=grid_tile)[0], dtype=np.float32)


def _network_planes(
    planes: np.ndarray, net: Network, bits: int, grid_tile: bool
) -> tuple[np.ndarray, float, float]:
    """(C, H, W) colour planes in [0, 1] (C = 1 gray, 3 RGB) through the network.

    Returns (C, rH, rW) planes and the (gain, offset) that bring them back to [0, 1]: a Y
    network sees gray as studio-swing Y (as R = G = B would be), so its output is mapped
    back from it; an RGB network sees gray as R = G = B and gives the mean of its colours.
    """
    if net.colour_space == "rgb":
        if planes.shape[0] == 1:
            grey = _run(net, np.repeat(planes, 3, axis=0), bits, grid_tile)
            return grey.mean(axis=0, keepdims=True), 1.0, 0.0
        return _run(net, planes, bits, grid_tile), 1.0, 0.0
    y = (16.0 + 219.0 * planes) / 255.0
    return _run(net, y, bits, grid_tile), 255.0 / 219.0, -16.0 / 219.0


def _upscale_tile(
    crop: np.ndarray,
    peak: float,
    net: Network,
    bits: int,
    *,
    has_alpha: bool,
    alpha: str,
    out_dtype: type[np.generic],
    out_peak: float,
    grid_tile: bool,
) -> np.ndarray:
    """(h, w, C) values in [0, peak] -> (r h, r w, C) of ``out_dtype`` on the 0..out_peak scale;
    ``grid_tile``: the crop is one tile of the engine's grid (``Network.tile_grid``).

    An integer ``out_dtype`` is rounded and clipped (half to even, as ``np.rint``); float32
    is not clipped (a non-native scale resamples it first). The arithmetic around the
    network is ``subpixel.pipeline.fastpath``'s: RGB with a Y network is one matrix product at LR
    size, the network, then ``fastpath.rgb_from_luma`` (bicubic chroma and the output colours).
    """
    colours = crop.shape[-1] - int(has_alpha)
    planes: list[np.ndarray] = []  # (rh, rw) float32 each
    gains: list[float] = []
    addends: list[np.ndarray | float] = []
    if colours == 3 and net.colour_space == "y":
        y, chroma = fastpath.split_luma(crop[..., :3], peak, out_peak)
        y_sr = _run(net, y[None], bits, grid_tile)[0]
        if not has_alpha:
            return fastpath.rgb_from_luma(y_sr, chroma, net.scale, out_peak, out_dtype)
        planes += [y_sr] * 3
        gains += fastpath.luma_gains(out_peak)
        addends += fastpath.bicubic_planes(chroma, net.scale)
    else:
        colour = _planes(crop[..., :colours], peak)
        sr, gain, offset = _network_planes(colour, net, bits, grid_tile)
        planes += list(sr)
        gains += [gain * out_peak] * colours
        addends += [offset * out_peak] * colours
    if has_alpha:
        plane = _planes(crop[..., colours:], peak)  # (1, h, w)
        if alpha == "network":
            sr, gain, offset = _network_planes(plane, net, bits, grid_tile)
            planes.append(sr[0])
        else:
            planes += fastpath.bicubic_planes([plane[0]], net.scale)
            gain, offset = 1.0, 0.0
        gains.append(gain * out_peak)
        addends.append(offset * out_peak)
    return fastpath.finish(planes, gains, addends, out_dtype)


def _planes(values: np.ndarray, peak: float) -> np.ndarray:
    """(h, w, C) values in [0, peak] -> (C, h, w) float32 in [0, 1]."""
    planes = np.ascontiguousarray(values.transpose(2, 0, 1), dtype=np.float32)
    if peak != 1.0:
        planes *= np.float32(1.0 / peak)
    return planes


def _check_tile(tile: int | None, max_memory: int | None) -> None:
    if tile is not None and max_memory is not None:
        raise TilingError("give a tile size or a memory ceiling, not both")
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 1):
        raise TilingError(f"tile must be a positive integer number of pixels, got {tile!r}")


def _tile_under_ceiling(
    net: Network,
    source: np.ndarray,
    out_size: tuple[int, int],
    out_dtype: type[np.generic],
    *,
    bits: int,
    scale: float | None,
    max_memory: int | None,
    reserve: int,
) -> int | None:
    """The tile that keeps the whole process under its memory ceiling; None for no tiles.

    The ceiling is ``max_memory`` or, by default, what the process holds now plus
    ``limits.memory_budget`` (a share of the memory available). What the process holds is
    measured once the network's engine is built (libraries, weights, the decoded input);
    the finished output and ``reserve`` (bytes the caller needs after, such as a Pillow copy
    of the output) come on top, and the tiles' work (``tile_for_memory``) gets the rest --
    by default at most ``limits.DEFAULT_TILE_WORK``.

    Raises:
        ImageError: not even the smallest tile fits beside the output.
    """
    height, width, channels = source.shape
    budget = memory_budget() if max_memory is None else None
    most_work = height * width * channels * _MOST_BYTES_PER_LR_VALUE
    if max_memory is None and (budget is None or most_work < min(budget, DEFAULT_TILE_WORK)):
        return None  # far below the default budget: no need to measure
    net.run(np.zeros((1, 1 if net.colour_space == "y" else 3, 4, 4), np.float32), bits=bits)
    used = resident_memory() or 0
    ceiling = max_memory if max_memory is not None else used + (budget or 0)
    output = out_size[0] * out_size[1] * channels * np.dtype(out_dtype).itemsize + reserve
    room = ceiling - used - output
    if max_memory is None:
        room = min(room, DEFAULT_TILE_WORK)
    try:
        tile = tile_for_memory(net.network, channels, room, scale=scale)
    except TilingError:
        mib = 2**20
        what = (
            f"a memory ceiling of {ceiling / mib:,.0f} MiB"
            if max_memory is not None
            else f"the {ceiling / mib:,.0f} MiB this process may use by default "
            f"({MEMORY_SHARE:.0%} of the memory available)"
        )
        raise ImageError(
            f"a {width}x{height} image upscaled to {out_size[1]}x{out_size[0]} does not fit "
            f"{what}: the process holds {used / mib:,.0f} MiB (libraries, network, input) and "
            f"the output needs {output / mib:,.0f} MiB, before any tile"
        ) from None
    return None if tile >= max(height, width) else tile


def _upscale(
    source: np.ndarray,
    peak: float,
    net: Network,
    out_dtype: type[np.generic],
    *,
    bits: int,
    has_alpha: bool,
    scale: float | None,
    tile: int | None,
    max_memory: int | None,
    progress: Progress | None,
    alpha: str,
    reserve: int = 0,
) -> np.ndarray:
    """(H, W, C) planes with values in [0, peak] -> (H', W', C) of ``out_dtype``, tile by tile.

    A float ``out_dtype`` keeps the clipped [0, 1] values; an integer one is quantised to
    ``0..peak``.
    """
    if alpha not in ALPHA_MODES:
        raise ValueError(f"alpha must be one of {ALPHA_MODES}, got {alpha!r}")
    colours = source.shape[-1] - int(has_alpha)
    if colours not in (1, 3):
        raise ImageError(f"expected 1 or 3 colour channels, got {colours}")
    height, width = source.shape[:2]
    if min(height, width) < 1:
        raise ImageError(f"image is empty: {width}x{height} pixels")
    out_h, out_w = output_size(height, width, scale, net.scale)
    _check_tile(tile, max_memory)
    asked = tile
    if tile is None:
        tile = _tile_under_ceiling(
            net,
            source,
            (out_h, out_w),
            out_dtype,
            bits=bits,
            scale=scale,
            max_memory=max_memory,
            reserve=reserve,
        )
    native = (out_h, out_w) == (net.scale * height, net.scale * width)
    grid = net.tile_grid(bits)
    if grid is not None and (tile is not None or not native):
        # An engine run on a fixed grid: tiles are the grid's, whatever size was asked for,
        # so that they are the very crops it runs an untiled image in (one, if it is small).
        if asked is not None or tile is None or tile >= grid:
            tile = grid if max(height, width) > grid else None
        else:
            logger.info(
                "the memory ceiling needs tiles of %d pixels, under the engine's grid of %d: "
                "values along their seams may differ from an untiled run by float rounding",
                tile,
                grid,
            )
    grid_tile = grid is not None and tile == grid
    quantise = np.issubdtype(out_dtype, np.integer)
    # At the native scale nothing follows the network, so a tile's output is final: it is
    # rounded into the output type in the pass that makes it. Otherwise it stays float
    # (on the [0, 1] scale) until MATLAB bicubic has resized it.
    tile_dtype: type[np.generic] = out_dtype if native else np.float32
    tile_peak = peak if native and quantise else 1.0

    def upscale(crop: np.ndarray) -> np.ndarray:
        return _upscale_tile(
            crop,
            peak,
            net,
            bits,
            has_alpha=has_alpha,
            alpha=alpha,
            out_dtype=tile_dtype,
            out_peak=tile_peak,
            grid_tile=grid_tile,
        )

    if native and (tile is None or tile >= max(height, width)):
        out = upscale(source)  # one tile: no copy into a separate output
        if not quantise:
            np.clip(out, 0.0, 1.0, out=out)
        if progress is not None:
            progress(1, 1)
        return out

    radius = 0
    if tile is not None and tile < max(height, width):
        # Chroma and bicubic alpha go by bicubic in the same tiles: cover its taps too.
        radius = tile_margin(net.receptive_radius)
    out = np.empty((out_h, out_w, source.shape[-1]), dtype=out_dtype)

    def write(rows: slice, cols: slice, block: np.ndarray) -> None:
        if native and quantise:  # already rounded: run_tiled hands it over as float32
            out[rows, cols] = block
            return
        np.clip(block, 0.0, 1.0, out=block)
        out[rows, cols] = np.rint(block * peak) if quantise else block

    run_tiled(
        upscale,
        source,
        net.scale,
        write,
        out_shape=(out_h, out_w),
        tile=tile,
        radius=radius,
        progress=progress,
    )
    return out


def upscale_float(
    planes: np.ndarray,
    net: Network,
    *,
    has_alpha: bool = False,
    scale: float | None = None,
    tile: int | None = None,
    max_memory: int | None = None,
    progress: Progress | None = None,
    alpha: str = "bicubic",
) -> np.ndarray:
    """Upscale a float (H, W, C) array in [0, 1], C in {1, 3} plus an optional last alpha plane.

    Returns float32 (H', W', C) clipped to [0, 1], where (H', W') is ``output_size``. The
    keywords are those of ``upscale``; this is its float form, without quantisation, and
    runs the network as for inputs of more than 16 bits.
    """
    planes = np.asarray(planes)
    if planes.ndim != 3:
        raise ImageError(f"planes must be (H, W, C), got shape {planes.shape}")
    return _upscale(
        planes,
        1.0,
        net,
        np.float32,
        bits=32,
        has_alpha=has_alpha,
        scale=scale,
        tile=tile,
        max_memory=max_memory,
        progress=progress,
        alpha=alpha,
    )


def _check_array(array: np.ndarray) -> tuple[np.ndarray, bool, float]:
    """uint8/uint16 (H, W[, C]) -> (H, W, C) view, whether the last plane is alpha, peak."""
    if array.dtype == np.uint8:
        peak = 255.0
    elif array.dtype == np.uint16:
        peak = 65535.0
    else:
        raise ImageError(f"arrays must be uint8 or uint16, got {array.dtype}")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 2, 3, 4):
        raise ImageError(f"arrays must be (H, W) or (H, W, C) with C in 1..4, got {array.shape}")
    return array, array.shape[-1] in (2, 4), peak


def _pillow_copy_bytes(array: np.ndarray, net: Network, scale: float | None) -> int:
    out_h, out_w = output_size(array.shape[0], array.shape[1], scale, net.scale)
    return out_h * out_w * 4 * array.dtype.itemsize


def pil_to_array(image: Image.Image) -> tuple[np.ndarray, str]:
    """A Pillow image as a uint8/uint16 array, and the mode the result is returned in."""
    mode = image.mode
    if mode == "P":
        mode = "RGBA" if "transparency" in image.info else "RGB"
        image = image.convert(mode)
    elif mode == "1":
        mode, image = "L", image.convert("L")
    elif mode in _CONVERTED_TO_RGB:
        mode, image = "RGB", image.convert("RGB")
    if mode in ("L", "LA", "RGB", "RGBA"):
        return np.asarray(image), mode
    if mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image)
        if values.min() < 0 or values.max() > 65535:
            raise ImageError(f"{mode} image has values outside 0..65535")
        return values.astype(np.uint16), "I;16"
    raise ImageError(f"unsupported image mode {image.mode!r}")


def upscale(
    image: Image.Image | np.ndarray,
    net: Network,
    *,
    scale: float | None = None,
    tile: int | None = None,
    max_memory: int | None = None,
    progress: Progress | None = None,
    alpha: str = "bicubic",
) -> Image.Image | np.ndarray:
    """Upscale a PIL image or a uint8/uint16 array with ``net``; returns the same kind.

    The keywords are ``subpixel.upscale_image``'s (which documents them). 16-bit inputs
    ask ``net`` for the arithmetic of 16-bit samples (``Network.run``'s ``bits``).
    """
    pil = isinstance(image, Image.Image)
    original = pil_to_array(image)[0] if isinstance(image, Image.Image) else np.asarray(image)
    array, has_alpha, peak = _check_array(original)
    out = _upscale(
        array,
        peak,
        net,
        array.dtype.type,
        bits=8 * array.dtype.itemsize,
        has_alpha=has_alpha,
        scale=scale,
        tile=tile,
        max_memory=max_memory,
        progress=progress,
        alpha=alpha,
        # Pillow copies the output into its own layout: up to 4 bytes a pixel and sample size.
        reserve=_pillow_copy_bytes(array, net, scale) if pil else 0,
    )
    out = out.reshape(out.shape[:2]) if original.ndim == 2 else out
    # Pillow infers the mode from the array: L, LA, RGB, RGBA or I;16.
    return Image.fromarray(out) if pil else out
