"""Checkpoint averaging: one network whose weights are the mean of several of the same run.

Late in a run, under a small learning rate, checkpoints differ by little; their mean is a
network of its own, often as good as the best of them, whose other properties (such as
the PSNR it loses in bfloat16) can differ. ``subpixel bundle --average-with`` uses it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from subpixel.errors import ModelError
from subpixel.weights import card_of

__all__ = ["average_networks"]


def _identity(model: nn.Module) -> tuple[object, ...]:
    card = card_of(model)
    return (card.architecture, card.scale, card.channels, card.colour_space, card.config)


def average_networks(networks: Sequence[nn.Module]) -> nn.Module:
    """A copy of ``networks[0]`` (card included) whose every floating-point parameter and
    buffer is the mean of that tensor over ``networks``.

    Raises ``ModelError`` unless all are the same network (architecture, scale, channels,
    colour space and configuration on their cards).
    """
    if not networks:
        raise ModelError("nothing to average")
    first = networks[0]
    states = [n.state_dict() for n in networks]
    for other in networks[1:]:
        if _identity(other) != _identity(first):
            raise ModelError(
                f"cannot average {card_of(other).architecture} x{card_of(other).scale} "
                f"with {card_of(first).architecture} x{card_of(first).scale}: not the same network"
            )
    mean_state = {}
    for key, tensor in states[0].items():
        if tensor.is_floating_point():
            stacked = torch.stack([s[key].to(torch.float64) for s in states])
            mean_state[key] = stacked.mean(dim=0).to(tensor.dtype)
        else:
            mean_state[key] = tensor.clone()
    average = copy.deepcopy(first)
    average.load_state_dict(mean_state)
    return average
