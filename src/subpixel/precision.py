"""Which arithmetic a network runs in: bfloat16 only where it is both fast and harmless.

bfloat16 halves the work of a convolution on CPUs with native bfloat16 (AVX-512 BF16 or
AMX), but keeps 8 bits of mantissa, and what that costs depends on the weights. So the loss
is measured once per weights file, on Set5 and Set14 under the papers' protocol, and kept on
its card (``metrics[dataset]["bfloat16_psnr_loss"]``, float32 PSNR minus bfloat16 PSNR, the
worst over the bfloat16 engines installed). ``resolve_precision(model, "auto")`` then picks
bfloat16 only when every recorded loss is below ``BFLOAT16_LOSS_LIMIT_DB`` and the device
has native bfloat16; float32 otherwise, and for any network without a recorded loss.

``subpixel bundle`` records the loss in the files it writes; ``record_bfloat16_loss`` adds
it to an existing file. On a CPU without native bfloat16 the loss is measured on
``emulate_bfloat16``'s copy (bfloat16 storage, float32 accumulation, as the native kernels
do): PyTorch's own bfloat16 there rounds more often than native kernels and overstates the
loss (0.067 dB against a native 0.030 on FSRCNN x3, Set5), and OpenVINO runs float32.

Example:
    >>> from subpixel import models
    >>> resolve_precision(models.build("espcn", scale=3), "auto")  # no recorded loss
    'float32'
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "BFLOAT16_LOSS_LIMIT_DB",
    "LOSS_DATASETS",
    "LOSS_KEY",
    "bfloat16_engines",
    "emulate_bfloat16",
    "measure_bfloat16_loss",
    "native_bfloat16",
    "record_bfloat16_loss",
    "recorded_bfloat16_loss",
    "resolve_precision",
]

#: bfloat16 is chosen automatically only when it costs less than this on every set.
BFLOAT16_LOSS_LIMIT_DB = 0.05
#: The sets the loss is measured on (the issue's and the papers' small benchmarks).
LOSS_DATASETS = ("Set5", "Set14")
#: Key of the loss inside each dataset's entry of a card's ``metrics``.
LOSS_KEY = "bfloat16_psnr_loss"
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


def recorded_bfloat16_loss(model: nn.Module) -> dict[str, float] | None:
    """The loss on each of ``LOSS_DATASETS`` recorded on the model's card, or None if any
    is missing (or the model has no card)."""
    card = getattr(model, "card", None)
    metrics = getattr(card, "metrics", None)
    if not isinstance(metrics, dict):
        return None
    losses = {}
    for dataset in LOSS_DATASETS:
        entry = metrics.get(dataset)
        value = entry.get(LOSS_KEY) if isinstance(entry, dict) else None
        if not isinstance(value, int | float):
            return None
        losses[dataset] = float(value)
    return losses


def resolve_precision(model: nn.Module, precision: str) -> str:
    """``precision`` itself, or for ``"auto"``: ``"bfloat16"`` when the card records a loss
    below ``BFLOAT16_LOSS_LIMIT_DB`` on every set and the model's device has native
    bfloat16, else ``"float32"``."""
    if precision != "auto":
        return precision
    losses = recorded_bfloat16_loss(model)
    if losses is None or max(losses.values()) >= BFLOAT16_LOSS_LIMIT_DB:
        return "float32"
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    return "bfloat16" if native_bfloat16(device) else "float32"


#: The name ``bfloat16_engines`` gives the emulation, on CPUs without native bfloat16.
EMULATED = "emulated"


def bfloat16_engines() -> list[str]:
    """The bfloat16 arithmetic to measure here: with native bfloat16, eager torch
    (channels-last) and OpenVINO when installed with what it needs to export; without it,
    ``["emulated"]`` (``emulate_bfloat16``)."""
    if not native_bfloat16():
        return [EMULATED]
    names = ["torch-channels-last"]
    if all(importlib.util.find_spec(p) is not None for p in ("openvino", "onnx", "onnxscript")):
        names.append("openvino")
    return names


def _round_to_bfloat16(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.bfloat16).to(x.dtype)


def emulate_bfloat16(model: nn.Module) -> nn.Module:
    """A float32 copy of ``model`` that computes as native bfloat16 kernels do, on any CPU.

    Weights, the input and every layer's output are rounded to bfloat16 (oneDNN and
    OpenVINO keep activations in bfloat16 between layers); the arithmetic inside a layer
    stays float32 (the native kernels accumulate in float32). On the bundled weights the
    loss it gives is within 0.01 dB of the native one on Set5 and Set14.

    Example:
        >>> from subpixel import models
        >>> out = emulate_bfloat16(models.build("espcn", scale=2))(torch.rand(1, 1, 4, 4))
        >>> bool((out == out.bfloat16().float()).all())
        True
    """
    emulated = copy.deepcopy(model).float()
    with torch.no_grad():
        for parameter in emulated.parameters():
            parameter.copy_(_round_to_bfloat16(parameter))
    for module in emulated.modules():
        if not any(True for _ in module.children()):  # a layer, not a container
            module.register_forward_hook(lambda _m, _i, output: _round_to_bfloat16(output))
    emulated.register_forward_pre_hook(
        lambda _m, inputs: tuple(_round_to_bfloat16(x) for x in inputs)
    )
    return emulated


def measure_bfloat16_loss(
    model: nn.Module,
    datasets: Sequence[str | Path] = LOSS_DATASETS,
    engines: Sequence[str] | None = None,
) -> dict[str, float]:
    """Mean PSNR (papers' protocol) in float32 minus that in bfloat16, per dataset, in dB:
    the largest over ``engines`` (default ``bfloat16_engines()``).

    A negative value means bfloat16 scored higher. Raises what ``evaluate`` raises when a
    dataset is missing.
    """
    from subpixel.engines import EngineModule, make_engine
    from subpixel.evaluation import evaluate

    runs = [
        emulate_bfloat16(model)
        if name == EMULATED
        else EngineModule(make_engine(model, name, precision="bfloat16"), model)
        for name in (engines or bfloat16_engines())
    ]
    losses = {}
    for dataset in datasets:
        reference = evaluate(model, dataset).mean("psnr")
        worst = max(reference - evaluate(run, dataset).mean("psnr") for run in runs)
        losses[Path(str(dataset)).name] = worst
    return losses


def record_bfloat16_loss(
    path: str | Path,
    datasets: Sequence[str | Path] = LOSS_DATASETS,
    engines: Sequence[str] | None = None,
) -> dict[str, float]:
    """Measure the loss of a weights file on ``datasets`` and write it onto its card, under
    each dataset's name (the file is rewritten atomically; its tensors are unchanged).
    Returns the losses. ``"auto"`` precision reads those of ``LOSS_DATASETS``."""
    from subpixel.weights import card_of, load_weights, save_weights

    model = load_weights(path)
    losses = measure_bfloat16_loss(model, datasets, engines)
    card = card_of(model)
    metrics = {name: dict(entry) for name, entry in card.metrics.items()}
    for dataset, loss in losses.items():
        metrics.setdefault(dataset, {})[LOSS_KEY] = round(loss, 4)
    save_weights(model, path, card=dataclasses.replace(card, metrics=metrics))
    return losses
