"""Whether an engine's tiles match its whole image, bit for bit.

Tiling (``subpixel.pipeline.tiling``) is exact in arithmetic: every output pixel of a tile's
interior sees the same input pixels as in the whole image. It is exact in float only if the engine
computes each pixel the same way whatever the input's shape, and some do not: their kernels
pick another implementation (blocking, vector width, a Winograd or direct convolution) by
shape, and sum in another order. Measured on 2 Zen 4 cores (AVX-512 BF16), tiles of 17, 37
and 97 pixels against the whole 480x321 image after rounding to 8 bits: FSRCNN x3 differed by
1-2 levels at about 100 pixels with OpenVINO (float32 and bfloat16) and eager torch float32,
ESPCN x3 with torch float32 at tiles of 17 only; ONNX Runtime was exact for every network,
and OpenVINO bfloat16 for ECBSR and ESPCN.

``tile_mismatches`` runs an engine on a random square input whole and then tiled as
``subpixel.pipeline.tiling.run_tiled`` tiles it (interiors of 17, 37 and 97 pixels, each with a
margin of the network's receptive radius, clamped at the borders) and counts the output values of
the interiors that differ from the whole's. Compared as floats, before any rounding, it sees
every difference that could move an 8-bit level and many that would not.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from torch import nn

from subpixel.engines.base import Engine
from subpixel.engines.grid import GridEngine
from subpixel.pipeline.tiling import receptive_radius, run_tiled

__all__ = ["PROBE_SIZE", "PROBE_TILES", "grid_mismatches", "tile_mismatches"]

#: Side of the probe's square input: room for several tiles of each size, so that interior
#: tiles, tiles at an edge and the odd-sized last tile of a row all run.
PROBE_SIZE = 192
#: Tile interiors tried, in LR pixels: a small odd tile, the tiles that showed differences
#: in the measurements above, and one large enough for a second code path in the kernels.
PROBE_TILES = (17, 37, 97)


def tile_mismatches(
    engine: Engine,
    network: nn.Module,
    channels: int,
    *,
    size: int = PROBE_SIZE,
    tiles: tuple[int, ...] = PROBE_TILES,
) -> int:
    """Output values of tile interiors that differ from the whole image's (0: tile-exact).

    Args:
        engine: the engine to probe.
        network: the network it runs; its layers give the margin
            (``subpixel.pipeline.tiling.receptive_radius``).
        channels: the network's input channels.
        size: side of the random (1, C, size, size) input.
        tiles: interior sides to tile it with, each run in full.

    Raises:
        subpixel.pipeline.tiling.TilingError: the network's receptive radius is unknown.

    Example:
        >>> from torch import nn
        >>> from subpixel.engines import TorchEngine
        >>> network = nn.Sequential(nn.Conv2d(1, 4, 1), nn.PixelShuffle(2))  # per pixel
        >>> tile_mismatches(TorchEngine(network), network, 1, size=24, tiles=(7,))
        0
    """
    lr = np.random.default_rng(0).random((1, channels, size, size), dtype=np.float32)
    return _mismatches(engine, engine, lr, tiles, receptive_radius(network))


def grid_mismatches(grid: GridEngine, channels: int) -> int:
    """Output values of a grid engine's whole image that differ from its tiles cut by
    ``run_tiled`` at the grid's tile size (0: tile-exact).

    The input is 1.5 grid tiles wide and high, so that full tiles, edge tiles and corner
    tiles all run. The two ways hand the engine the same crops (``run_in_grid`` cuts the
    grid as ``run_tiled`` does), so this finds an engine that does not repeat itself on the
    same input, or a grid cut other than the pipeline's.

    Example:
        >>> from torch import nn
        >>> from subpixel.engines import TorchEngine
        >>> from subpixel.engines.grid import GridEngine
        >>> network = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.PixelShuffle(2))
        >>> grid_mismatches(GridEngine(TorchEngine(network), network, tile=16), 1)
        0
    """
    size = grid.tile + grid.tile // 2
    lr = np.random.default_rng(0).random((1, channels, size, size), dtype=np.float32)
    return _mismatches(grid, grid.run_tile, lr, (grid.tile,), grid.margin)


def _mismatches(
    whole_run: Callable[[np.ndarray], np.ndarray],
    tile_run: Callable[[np.ndarray], np.ndarray],
    lr: np.ndarray,
    tiles: tuple[int, ...],
    radius: int,
) -> int:
    """Values of ``tile_run``'s tile interiors (``run_tiled`` at each of ``tiles``, margin
    ``radius``) that differ from ``whole_run(lr)``, for a (1, C, H, W) input."""
    whole = whole_run(lr)[0].transpose(1, 2, 0)  # (rH, rW, C)
    scale = whole.shape[0] // lr.shape[2]

    def upscale(crop: np.ndarray) -> np.ndarray:  # (h, w, C) -> (rh, rw, C)
        planes = np.ascontiguousarray(crop.transpose(2, 0, 1))[None]
        out: np.ndarray = tile_run(planes)[0].transpose(1, 2, 0)
        return out

    mismatches = 0

    def compare(rows: slice, cols: slice, block: np.ndarray) -> None:
        nonlocal mismatches
        mismatches += int(np.count_nonzero(block != whole[rows, cols]))

    image = lr[0].transpose(1, 2, 0)  # (H, W, C)
    for tile in tiles:
        run_tiled(upscale, image, scale, compare, tile=tile, radius=radius)
    return mismatches
