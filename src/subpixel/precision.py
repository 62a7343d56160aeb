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

``subpixel bundle`` records both losses in the files it writes; ``record_bfloat16_loss``
adds them to an existing file. On a CPU without native bfloat16 the loss is measured on
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
    "LOSS_KEYS",
    "MIXED_LOSS_KEY",
    "add_losses",
    "bfloat16_engines",
    "emulate_bfloat16",
    "first_layer",
    "first_layer_in_float32",
    "float32_layers",
    "measure_bfloat16_loss",
    "measure_losses",
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
    key = LOSS_KEYS[precision]
    card = getattr(model, "card", None)
    metrics = getattr(card, "metrics", None)
    if not isinstance(metrics, dict):
        return None
    losses = {}
    for dataset in LOSS_DATASETS:
        entry = metrics.get(dataset)
        value = entry.get(key) if isinstance(entry, dict) else None
        if not isinstance(value, int | float):
            return None
        losses[dataset] = float(value)
    return losses


def resolve_precision(model: nn.Module, precision: str) -> str:
    """``precision`` itself, or for ``"auto"``: on a device with native bfloat16, the first
    of ``"bfloat16"`` and ``"mixed"`` whose loss recorded on the card is below
    ``BFLOAT16_LOSS_LIMIT_DB`` on every set; else ``"float32"``."""
    if precision != "auto":
        return precision
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    if not native_bfloat16(device):
        return "float32"
    for reduced in LOSS_KEYS:
        losses = recorded_bfloat16_loss(model, reduced)
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


def emulate_bfloat16(model: nn.Module, precision: str = "bfloat16") -> nn.Module:
    """A float32 copy of ``model`` that computes as native bfloat16 kernels do, on any CPU.

    Weights, the input and every layer's output are rounded to bfloat16 (oneDNN and
    OpenVINO keep activations in bfloat16 between layers); the arithmetic inside a layer
    stays float32 (the native kernels accumulate in float32). On the bundled weights the
    loss it gives is within 0.01 dB of the native one on Set5 and Set14. With
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
        if not any(True for _ in module.children()):  # a layer, not a container
            module.register_forward_hook(lambda _m, _i, output: _round_to_bfloat16(output))
    if not kept:
        emulated.register_forward_pre_hook(
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
    from subpixel.engines import EngineModule, make_engine
    from subpixel.evaluation import evaluate

    runs = {
        precision: [
            emulate_bfloat16(model, precision)
            if name == EMULATED
            else EngineModule(make_engine(model, name, precision=precision), model)
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
