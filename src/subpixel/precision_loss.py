"""Measuring what bfloat16 and mixed arithmetic cost a network, for ``subpixel.precision``.

The loss is float32 PSNR minus the reduced arithmetic's, on Set5 and Set14 under the papers'
protocol, the worst over the bfloat16 engines installed; ``subpixel bundle`` writes it into
every card and ``record_bfloat16_loss`` adds it to an existing file. On a CPU without native
bfloat16 the loss is measured on ``emulate_bfloat16``'s copy (bfloat16 storage, float32
accumulation, as the native kernels do): PyTorch's own bfloat16 there rounds more often than
native kernels and overstates the loss (0.067 dB against a native 0.030 on FSRCNN x3, Set5),
and OpenVINO runs float32.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from subpixel import precision as policy  # the module, so that tests may stand in for it
from subpixel.precision import LOSS_DATASETS, LOSS_KEYS, float32_layers

__all__ = [
    "EMULATED",
    "add_losses",
    "bfloat16_engines",
    "emulate_bfloat16",
    "measure_bfloat16_loss",
    "measure_losses",
    "record_bfloat16_loss",
]


#: The name ``bfloat16_engines`` gives the emulation, on CPUs without native bfloat16.
EMULATED = "emulated"


def bfloat16_engines() -> list[str]:
    """The bfloat16 arithmetic to measure here: with native bfloat16, eager torch
    (channels-last) and OpenVINO when installed with what it needs to export; without it,
    ``["emulated"]`` (``emulate_bfloat16``)."""
    if not policy.native_bfloat16():
        return [EMULATED]
    names = ["torch-channels-last"]
    if all(importlib.util.find_spec(p) is not None for p in ("openvino", "onnx", "onnxscript")):
        names.append("openvino")
    return names


# Layers that move values without arithmetic: natively their output keeps the type of
# their input (float32 after a residual network's float32 addition), so it is not rounded.
_VALUE_PRESERVING = (nn.Identity, nn.PixelShuffle, nn.PixelUnshuffle)


def _round_to_bfloat16(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.bfloat16).to(x.dtype)


def emulate_bfloat16(model: nn.Module, precision: str = "bfloat16") -> nn.Module:
    """A float32 copy of ``model`` that computes as native bfloat16 kernels do, on any CPU.

    Weights, every layer's input and every layer's output are rounded to bfloat16 (oneDNN
    and OpenVINO keep activations in bfloat16 between layers); the arithmetic inside a layer
    stays float32 (the native kernels accumulate in float32), and so does what runs outside
    the layers (a residual network's input added back) and what only moves values (shuffle,
    identity). The ECBSR cards measured by the native engines of an Intel AMX CPU it
    reproduces to 0.001 dB in bfloat16 and 0.002 dB mixed on Set5 and Set14 (bfloat16 on
    Set5, ECBSR x2 / x3 / x4: 0.0090 / 0.0067 / 0.0059 against 0.0092 / 0.0067 / 0.0059). With
    ``precision="mixed"`` the input and the weights and outputs of ``float32_layers`` stay
    float32 (what follows them, the first activation, rounds for the next layer).

    Example:
        >>> from subpixel import models
        >>> out = emulate_bfloat16(models.build("espcn", scale=2))(torch.rand(1, 1, 4, 4))
        >>> bool((out == out.bfloat16().float()).all())
        True
    """
    if precision not in LOSS_KEYS:
        raise ValueError(f"precision must be one of {', '.join(LOSS_KEYS)}, got {precision!r}")
    emulated = copy.deepcopy(model).float()
    kept = float32_layers(emulated) if precision == "mixed" else []
    for module in emulated.modules():
        if any(module is layer for layer in kept):
            continue
        with torch.no_grad():
            for parameter in module.parameters(recurse=False):
                parameter.copy_(_round_to_bfloat16(parameter))
        is_layer = not any(True for _ in module.children())  # not a container
        if is_layer and not isinstance(module, _VALUE_PRESERVING):
            module.register_forward_hook(lambda _m, _i, output: _round_to_bfloat16(output))
            if not kept:
                # The image is rounded where a layer reads it, as autocast casts a
                # convolution's input; arithmetic outside the layers (a residual network's
                # input added back) reads it in float32, as it does natively.
                module.register_forward_pre_hook(
                    lambda _m, inputs: tuple(_round_to_bfloat16(x) for x in inputs)
                )
    return emulated


def measure_bfloat16_loss(
    model: nn.Module,
    datasets: Sequence[str | Path] = LOSS_DATASETS,
    engines: Sequence[str] | None = None,
    precision: str = "bfloat16",
) -> dict[str, float]:
    """Mean PSNR (papers' protocol) in float32 minus that in ``precision`` (``"bfloat16"``
    or ``"mixed"``), per dataset, in dB: the largest over ``engines`` (default
    ``bfloat16_engines()``).

    A negative value means the reduced arithmetic scored higher. Raises what ``evaluate``
    raises when a dataset is missing.
    """
    return measure_losses(model, datasets, engines, (precision,))[precision]


def measure_losses(
    model: nn.Module,
    datasets: Sequence[str | Path] = LOSS_DATASETS,
    engines: Sequence[str] | None = None,
    precisions: Sequence[str] = tuple(LOSS_KEYS),
) -> dict[str, dict[str, float]]:
    """``measure_bfloat16_loss`` for each of ``precisions`` (precision -> dataset -> loss),
    the float32 reference evaluated once per dataset."""
    from subpixel.evaluation import evaluate
    from subpixel.upscaler import Upscaler
    from subpixel.weights import card_of

    card = card_of(model)
    runs = {
        precision: [
            Upscaler(emulate_bfloat16(model, precision), card, engine="torch", cache_file=None)
            if name == EMULATED
            else Upscaler(model, card, engine=name, precision=precision, cache_file=None)
            for name in (engines or bfloat16_engines())
        ]
        for precision in precisions
    }
    losses: dict[str, dict[str, float]] = {precision: {} for precision in precisions}
    for dataset in datasets:
        reference = evaluate(model, dataset).mean("psnr")
        for precision, models in runs.items():
            worst = max(reference - evaluate(run, dataset).mean("psnr") for run in models)
            losses[precision][Path(str(dataset)).name] = worst
    return losses


def add_losses(metrics: dict[str, dict[str, float]], losses: dict[str, dict[str, float]]) -> None:
    """Write ``measure_losses``' result into a card's ``metrics``, rounded, under each
    dataset's name and ``LOSS_KEYS``' key."""
    for precision, by_dataset in losses.items():
        for dataset, loss in by_dataset.items():
            metrics.setdefault(dataset, {})[LOSS_KEYS[precision]] = round(loss, 4)


def record_bfloat16_loss(
    path: str | Path,
    datasets: Sequence[str | Path] = LOSS_DATASETS,
    engines: Sequence[str] | None = None,
) -> dict[str, float]:
    """Measure the losses of bfloat16 and mixed of a weights file on ``datasets`` and write
    them onto its card, under each dataset's name (the file is rewritten atomically; its
    tensors are unchanged). Returns the bfloat16 losses. ``"auto"`` precision reads those of
    ``LOSS_DATASETS``."""
    from subpixel.weights import card_of, load_weights, save_weights

    model = load_weights(path)
    card = card_of(model)
    metrics = {name: dict(entry) for name, entry in card.metrics.items()}
    losses = measure_losses(model, datasets, engines)
    add_losses(metrics, losses)
    save_weights(model, path, card=dataclasses.replace(card, metrics=metrics))
    return losses["bfloat16"]
