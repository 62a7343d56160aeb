"""The order in which a run visits training items, as a pure function of (seed, sample number).

Global sample j of the run is dataset item ``epoch_order(N, seed, j // N)[j % N]``; iteration i
takes samples ``i*B .. i*B + B - 1``, and with several processes rank k takes its contiguous
share of them. A resumed or re-sharded run therefore sees exactly the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler

from subpixel.data import epoch_order


class RunSampler(Sampler[int]):
    """Dataset indices for iterations ``start .. iterations - 1`` of one process."""

    def __init__(
        self,
        length: int,
        seed: int,
        start: int,
        iterations: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} does not split over {world_size} processes")
        self.length, self.seed = length, seed
        self.start, self.iterations, self.batch_size = start, iterations, batch_size
        self.share = batch_size // world_size
        self.offset = rank * self.share
        self._orders: dict[int, np.ndarray] = {}

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            self._orders = {epoch: epoch_order(self.length, self.seed, epoch)}
        return self._orders[epoch]

    def __iter__(self) -> Iterator[int]:
        for iteration in range(self.start, self.iterations):
            for b in range(self.offset, self.offset + self.share):
                epoch, k = divmod(iteration * self.batch_size + b, self.length)
                yield int(self._order(epoch)[k])

    def __len__(self) -> int:
        return (self.iterations - self.start) * self.share
