"""Parameter counts and multiply-accumulates per output pixel, measured on the layers."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from subpixel.models.bicubic import Bicubic
from subpixel.reparam import Collapsible


@dataclass(frozen=True)
class Complexity:
    """Learned parameters and multiply-accumulates (MACs) per HR output pixel."""

    parameters: int
    macs_per_pixel: float


def _layer_macs(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        # Every output value costs one full kernel over C_in / groups input channels.
        per_output = (
            module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        )
        return output.numel() * per_output
    if isinstance(module, nn.ConvTranspose2d):
        # Every input value is spread over one kernel for each output channel.
        kh, kw = module.kernel_size
        return inputs[0].numel() * module.out_channels // module.groups * kh * kw
    if isinstance(module, Bicubic):
        # Rows pass (4 taps into rH x W), then columns pass (4 taps into rH x rW).
        b, c, h, w = inputs[0].shape
        return 4 * b * c * (module.scale * h * w + module.scale**2 * h * w)
    return 0


def measure_complexity(model: nn.Module, channels: int, size: int = 16) -> Complexity:
    """Count parameters and MACs per output pixel by running ``model`` on a small probe.

    Zero-padded borders are counted as full kernels, the usual convention. A network trained
    in a re-parameterised form (``Collapsible``) is measured collapsed, as it runs.
    """
    if isinstance(model, Collapsible):
        model = model.collapse()
    total = 0

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        total += _layer_macs(module, inputs, output)

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            probe = torch.zeros(1, channels, size, size, device=_device_of(model))
            output = model(probe)
    finally:
        for handle in handles:
            handle.remove()
    pixels = output.shape[-1] * output.shape[-2]
    parameters = sum(p.numel() for p in model.parameters())
    return Complexity(parameters=parameters, macs_per_pixel=total / pixels)


def _device_of(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")
