"""An exponential moving average of a network's weights (Polyak averaging).

``ema <- d * ema + (1 - d) * weights`` after every optimiser step, as one fused
multi-tensor ``lerp`` (``ema + (1 - d) (weights - ema)``, the same value in exact
arithmetic) with no host synchronisation. After step ``n`` (from 1) ``d`` is
``min(decay, (1 + n) / (10 + n))`` (TensorFlow's ``num_updates`` rule): early on the average
follows the weights closely, so the random initial weights are forgotten even in a short run
(a plain 0.999 would still hold 14% of them after 2,000 steps); past about 9,000 steps ``d``
is ``decay``. The average is a full copy of the network, so it validates, saves and
collapses like the network itself.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["WeightAverage"]


class WeightAverage:
    """The moving average of ``network``'s parameters; buffers are copied as they are.

    Args:
        network: The network being trained; the average starts as a copy of it.
        decay: In ``[0, 1)``; 0.999 averages over about the last 1,000 steps.

    Example:
        >>> net = torch.nn.Linear(2, 1)
        >>> average = WeightAverage(net, decay=0.5)
        >>> with torch.no_grad():
        ...     _ = net.weight.add_(2.0)
        >>> average.update(net, step=100)  # d = min(0.5, 101 / 110)
        >>> torch.allclose(average.network.weight, net.weight - 1.0)
        True
    """

    def __init__(self, network: nn.Module, decay: float) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.network = copy.deepcopy(network).eval()
        for parameter in self.network.parameters():
            parameter.requires_grad_(False)

    def decay_at(self, step: int) -> float:
        """``d`` of update ``step`` (counted from 1)."""
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, network: nn.Module, step: int) -> None:
        """Move the average towards ``network``'s weights after step ``step`` (from 1)."""
        averages: list[torch.Tensor] = list(self.network.parameters())
        weights = [p.detach() for p in network.parameters()]
        torch._foreach_lerp_(averages, weights, 1.0 - self.decay_at(step))
        for mine, theirs in zip(self.network.buffers(), network.buffers(), strict=True):
            mine.copy_(theirs)
