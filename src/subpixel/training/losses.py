"""Training losses beside torch's MSE and L1."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["charbonnier_loss"]


def charbonnier_loss(output: Tensor, target: Tensor, eps: float = 1e-3) -> Tensor:
    """``mean(sqrt((output - target)^2 + eps^2))``: L1 with a smooth minimum (LapSRN).

    Its gradient is ``d / sqrt(d^2 + eps^2)``: L1's sign away from zero, linear within
    about ``eps`` of it, so small residuals are not pushed as hard as by L1.

    Example:
        >>> charbonnier_loss(torch.tensor([3.0]), torch.tensor([0.0]), eps=4.0)
        tensor(5.)
    """
    difference = output - target
    return torch.sqrt(difference * difference + eps * eps).mean()
