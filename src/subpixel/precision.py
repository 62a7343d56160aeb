"""Which arithmetic a network runs in: bfloat16 only where it is both fast and harmless.

bfloat16 halves the work of a convolution on CPUs with native bfloat16 (AVX-512 BF16 or
AMX), but keeps 8 bits of mantissa, and what that costs depends on the weights. So the loss
is measured once per weights file, on Set5 and Set14 under the papers' protocol, and kept on
its card (``metrics[dataset]["bfloat16_psnr_loss"]``, float32 PSNR minus bfloat16 PSNR, the
worst over the bfloat16 engines installed).

Most of that loss is made at the two ends of the network, not in its bulk, and most at the
entry: rounding the image itself (bfloat16 steps are 1/256 between 0.5 and 1, as coarse as
8-bit pixels) and the first layer's weights. With OpenVINO, ESPCN x2 and FSRCNN x2 lost 0.086
and 0.122 dB on Set5 in bfloat16 everywhere, 0.028 and 0.038 with the first convolution in
float32, 0.049 and 0.078 with the last one in float32; ESPCN's middle layer alone in
bfloat16 (emulated) cost 0.001. So there is a third arithmetic, ``"mixed"``: the first
convolution (and anything before it, ``float32_layers``) in float32, everything after it in
bfloat16 (ESPCN x2's network on a 1080p frame, OpenVINO on Zen 5: 40.0 ms against 33.7 in
bfloat16 and 60.1 in float32). Its loss is kept beside the other (``"mixed_psnr_loss"``).

``resolve_precision(model, "auto")`` then picks, on a device with native bfloat16, the
first of bfloat16 and mixed whose recorded loss is below ``BFLOAT16_LOSS_LIMIT_DB`` on every
set; float32 otherwise, and for any network without recorded losses.

This module is the policy; measuring the losses (which runs the engines) is
``subpixel.precision_loss``: ``subpixel bundle`` records both losses in the files it writes,
``precision_loss.record_bfloat16_loss`` adds them to an existing file.

Example:
    >>> from subpixel import models
    >>> resolve_precision(models.build("espcn", scale=3), "auto")  # no recorded loss
    'float32'
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from subpixel.weights import ModelCard

__all__ = [
    "BFLOAT16_LOSS_LIMIT_DB",
    "LOSS_DATASETS",
    "LOSS_KEY",
    "LOSS_KEYS",
    "MIXED_LOSS_KEY",
    "first_layer",
    "first_layer_in_float32",
    "float32_layers",
    "native_bfloat16",
    "precision_for_card",
    "precision_for_metrics",
    "recorded_bfloat16_loss",
    "recorded_losses",
    "resolve_precision",
]

#: bfloat16 is chosen automatically only when it costs less than this on every set.
BFLOAT16_LOSS_LIMIT_DB = 0.05
#: The sets the loss is measured on (the issue's and the papers' small benchmarks).
LOSS_DATASETS = ("Set5", "Set14")
#: Key of the loss inside each dataset's entry of a card's ``metrics``.
LOSS_KEY = "bfloat16_psnr_loss"
#: Key of the loss of ``"mixed"`` (first layer float32, the rest bfloat16).
MIXED_LOSS_KEY = "mixed_psnr_loss"
#: The key of each reduced arithmetic's loss.
LOSS_KEYS = {"bfloat16": LOSS_KEY, "mixed": MIXED_LOSS_KEY}
_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: flags unknown
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def native_bfloat16(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` computes in bfloat16 natively (not by emulation).

    CPU: the AVX-512 BF16 or AMX-BF16 flag in ``/proc/cpuinfo`` (False where it cannot be
    read). CUDA: ``torch.cuda.is_bf16_supported()``.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    return any(flag in _cpu_flags() for flag in _CPU_FLAGS)


def recorded_bfloat16_loss(
    model: nn.Module, precision: str = "bfloat16"
) -> dict[str, float] | None:
    """The loss of ``precision`` (``"bfloat16"`` or ``"mixed"``) on each of
    ``LOSS_DATASETS`` recorded on the model's card, or None if any is missing (or the model
    has no card)."""
    from subpixel.weights import attached_card

    card = attached_card(model)
    return None if card is None else recorded_losses(card.metrics, precision)


def recorded_losses(
    metrics: Mapping[str, Any], precision: str = "bfloat16"
) -> dict[str, float] | None:
    """The loss of ``precision`` (``"bfloat16"`` or ``"mixed"``) on each of
    ``LOSS_DATASETS`` in a card's ``metrics``, or None if any is missing."""
    key = LOSS_KEYS[precision]
    losses = {}
    for dataset in LOSS_DATASETS:
        entry = metrics.get(dataset)
        value = entry.get(key) if isinstance(entry, dict) else None
        if not isinstance(value, int | float):
            return None
        losses[dataset] = float(value)
    return losses


def resolve_precision(model: nn.Module, precision: str) -> str:
    """``precision`` itself, or for ``"auto"``: ``precision_for_metrics`` of the model's
    card (float32 for a model without one) on the model's device."""
    if precision != "auto":
        return precision
    from subpixel.weights import attached_card

    card = attached_card(model)
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    return precision_for_metrics({} if card is None else card.metrics, device)


def precision_for_card(card: ModelCard, device: str | torch.device = "cpu") -> str:
    """The precision ``"auto"`` means for 8-bit images with ``card``'s network on ``device``
    (``precision_for_metrics``)."""
    return precision_for_metrics(card.metrics, device)


def precision_for_metrics(metrics: Mapping[str, Any], device: str | torch.device = "cpu") -> str:
    """On a device with native bfloat16, the first of ``"bfloat16"`` and ``"mixed"`` whose
    loss recorded in ``metrics`` is below ``BFLOAT16_LOSS_LIMIT_DB`` on every set; else
    ``"float32"``."""
    if not native_bfloat16(device):
        return "float32"
    for reduced in LOSS_KEYS:
        losses = recorded_losses(metrics, reduced)
        if losses is not None and max(losses.values()) < BFLOAT16_LOSS_LIMIT_DB:
            return reduced
    return "float32"


def first_layer(model: nn.Module) -> nn.Module | None:
    """The first convolution (or transposed convolution) among the model's modules, in the
    order they are registered, which is the order they run in every ``subpixel`` network.
    None for a network without one (bicubic)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
            return module
    return None


def float32_layers(model: nn.Module) -> list[nn.Module]:
    """The layers ``"mixed"`` keeps in float32, those that see the image: the first
    convolution and any layer registered before it (SRCNN's bicubic upscaling). Empty for a
    network without a convolution."""
    first = first_layer(model)
    if first is None:
        return []
    layers = []
    for module in model.modules():
        if not any(True for _ in module.children()):  # a layer, not a container
            layers.append(module)
        if module is first:
            return layers
    return layers


class _Float32(nn.Module):
    """A layer run in float32 even inside ``torch.autocast``."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.layer(x.float())


def first_layer_in_float32(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose ``float32_layers`` run in float32 under ``torch.autocast``:
    the torch form of ``"mixed"`` (autocast runs the rest in bfloat16)."""
    copied = copy.deepcopy(model)
    kept = float32_layers(copied)
    for module in list(copied.modules()):
        for name, child in list(module.named_children()):
            if any(child is layer for layer in kept):
                setattr(module, name, _Float32(child))
    return copied
