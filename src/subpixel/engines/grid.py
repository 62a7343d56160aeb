"""Running an engine on a fixed grid of tiles, so that its tiles equal its whole image.

Some engines compute a pixel differently by the input's shape (``subpixel.engines.tile_probe``):
their tiles differ from the whole image at a few values along the seams. Often they are the
fastest: on 2 Intel cores with AMX, OpenVINO's bfloat16 ran ESPCN x3 two to three times
faster than the fastest engine that passed the tile probe, and FSRCNN x3's sub-pixel form six
times faster. A ``GridEngine`` runs such an engine only on the tiles of one grid, fixed by the
image alone: interiors of ``tile`` LR pixels from the top left, each with ``margin`` pixels of
context, as ``subpixel.pipeline.tiling.run_tiled`` cuts them. A whole image is cut so here
(``subpixel.pipeline.tiling.run_in_grid``), and the image pipeline, asked for tiles, cuts the
grid's own tiles whatever size was asked for (``run_tile`` runs one as it is). Every output
pixel then comes from the same input of the same shape through the same kernels, whoever
tiles the image and however: the result is the same bit for bit, and it does not depend on
the tile size asked for.

The grid costs the margins' extra work (6-13% more pixels at 256 for receptive radii of 4-8)
and a call per tile (measured: 9-10% at 1080p, nothing at 4K); ``subpixel.engines.auto``
takes it only where the engine is faster than the fastest tile-exact one by more than that.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from subpixel.engines.base import Engine
from subpixel.pipeline.tiling import receptive_radius, run_in_grid, tile_margin

__all__ = ["GRID_SUFFIX", "GRID_TILE", "GridEngine"]

#: Interior side of a grid tile, in LR pixels: large enough that the margins cost little
#: (a 640x360 frame is 3 x 2 tiles), small enough that a tile's work stays a few tens of MB.
GRID_TILE = 256
#: What an engine choice's name ends with when the engine runs in the grid.
GRID_SUFFIX = "+grid"


class GridEngine:
    """``engine`` run on the fixed grid of ``tile``-pixel tiles (see the module docstring).

    ``name``, ``precision`` and ``form`` are the wrapped engine's; ``tile`` and ``margin``
    define the grid (``margin``: the network's receptive radius, or MATLAB bicubic's reach
    if wider, as the image pipeline's tiles have).
    """

    def __init__(self, engine: Engine, network: nn.Module, tile: int = GRID_TILE) -> None:
        self.engine = engine
        self.name = engine.name
        self.precision = engine.precision
        self.form = engine.form
        self.tile = tile
        self.margin = tile_margin(receptive_radius(network))

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        """(B, C, H, W) float32 -> (B, C, rH, rW), each frame run tile by tile on the grid."""
        return run_in_grid(self.engine, lr, tile=self.tile, margin=self.margin)

    def run_tile(self, lr: np.ndarray) -> np.ndarray:
        """One tile of the grid, cut by the caller (the image pipeline), run as it is."""
        return self.engine(lr)

    def __repr__(self) -> str:
        return f"GridEngine({self.engine!r}, tile={self.tile}, margin={self.margin})"
