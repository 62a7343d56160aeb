"""The models one can name: their costs and bundled scales.

What ``subpixel models`` prints and what the web app (``subpixel serve``) offers: one
listing, measured on the layers (``subpixel.models.measure_complexity``).

Example:
    >>> from subpixel.catalogue import catalogue
    >>> entry = next(e for e in catalogue() if e.name == "espcn")
    >>> entry.weights, entry.usable
    ((2, 3, 4), True)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from subpixel import models
from subpixel.weights import BICUBIC_SCALES, bundled_weights

__all__ = ["COST_SCALES", "ModelEntry", "catalogue"]

#: The scales whose MACs per output pixel are listed.
COST_SCALES = (2, 3, 4)


@dataclass(frozen=True)
class ModelEntry:
    """One network by name.

    ``parameters`` at x3 with one (luminance) channel; ``macs_per_pixel`` per HR output pixel
    at each of ``COST_SCALES``; ``weights`` the scales with bundled weights.
    """

    name: str
    parameters: int
    macs_per_pixel: dict[int, float]
    weights: tuple[int, ...]

    @property
    def scales(self) -> tuple[int, ...]:
        """The network scales a model of this name loads at (none: it needs a weights file)."""
        return tuple(BICUBIC_SCALES) if self.name == "bicubic" else self.weights

    @property
    def usable(self) -> bool:
        """Whether ``subpixel.load_model(name)`` works without a weights file."""
        return bool(self.scales)


@functools.cache
def _entries() -> tuple[ModelEntry, ...]:
    bundled = bundled_weights()
    entries = []
    for name in models.BUILDERS:
        costs = {s: models.measure_complexity(models.build(name, scale=s), 1) for s in COST_SCALES}
        entries.append(
            ModelEntry(
                name=name,
                parameters=costs[3].parameters,
                macs_per_pixel={s: c.macs_per_pixel for s, c in costs.items()},
                weights=tuple(sorted(s for (arch, s) in bundled if arch == name)),
            )
        )
    return tuple(entries)


def catalogue() -> list[ModelEntry]:
    """Every network in ``subpixel.models.BUILDERS``, in its order (measured once)."""
    return list(_entries())
