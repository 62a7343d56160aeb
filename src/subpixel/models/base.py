"""What every subpixel network declares about itself, so no other module has to guess.

Training, weights files, engines and export ask a network for its facts through this base
class: the ``BUILDERS`` name that rebuilds it, its settings, the layer that makes HR pixels,
whether it ends in a sub-pixel layer, the layout it trains fastest in, a faster equivalent
form for inference, and the form it is exported to ONNX in. Adding a network is one model
file (a subclass declaring these) plus one builder line in ``subpixel.models``.
"""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

#: The ``form_name`` of a network whose transposed convolution runs as an LR-space
#: convolution plus periodic shuffling (``subpixel.layers.deconv_to_subpixel``).
SUBPIXEL_FORM = "+subpixel"


class SRNetwork(nn.Module):
    """Base class of the networks: (B, C, H, W) float in [0, 1] to (B, C, rH, rW).

    Subclasses set ``architecture`` (their ``BUILDERS`` name), keep their configuration
    dataclass (with ``scale`` and ``channels`` fields) as ``self.config``, and override what
    differs from the defaults below.
    """

    #: The ``subpixel.models.BUILDERS`` name that rebuilds this network from ``settings()``.
    architecture: ClassVar[str]
    #: Whether ``forward_phases`` gives the output before its final periodic shuffle, so
    #: training can compare it with unshuffled targets.
    ends_in_subpixel: ClassVar[bool] = False
    #: Whether ``subpixel train`` can train it (bicubic has nothing to learn; multi-scale
    #: FSRCNN files are assembled from trained heads).
    trainable: ClassVar[bool] = True
    #: Whether training on CPU runs faster with the network in channels-last layout.
    channels_last_on_cpu: ClassVar[bool] = False

    config: Any

    @property
    def scale(self) -> int:
        """The upscaling factor r."""
        return int(self.config.scale)

    @property
    def channels(self) -> int:
        """Channels in and out: 1 (luminance) or 3 (RGB)."""
        return int(self.config.channels)

    def architecture_name(self) -> str | None:
        """The ``BUILDERS`` name of this network (one class may serve several names); None
        for a subclass that does not declare its own, since its forward may differ."""
        declared = type(self).__dict__.get("architecture")
        return declared if isinstance(declared, str) else None

    def settings(self) -> dict[str, Any]:
        """``scale``, ``channels`` and the other config fields, as keywords for ``build``."""
        config = self.config
        if not is_dataclass(config) or isinstance(config, type):
            raise TypeError(f"a {type(self).__name__} has no config dataclass")
        return dict(asdict(config))

    def output_layer(self) -> nn.Module:
        """The layer that makes HR pixels (both 2016 papers train it ten times slower)."""
        raise TypeError(f"no output layer known for {type(self).__name__}")

    def forward_phases(self, lr: Tensor) -> Tensor:
        """The output before its final periodic shuffle (``ends_in_subpixel`` networks)."""
        raise TypeError(f"a {type(self).__name__} does not end in a sub-pixel layer")

    def forward_for_training(self, lr: Tensor) -> Tensor:
        """The same function as ``forward``, in the form that trains fastest."""
        return self(lr)

    def fast_form(self) -> SRNetwork | None:
        """An equal network (to float rounding) that may run faster for inference, as a copy;
        None when this network has no other form."""
        return None

    @property
    def form_name(self) -> str:
        """``""`` for a network in its own form, a name for one made by ``fast_form``."""
        return ""

    def start_from(self, donor: nn.Module) -> None:
        """Take a trained network's weights to train on from (``subpixel train
        --init-from``): by default its state dict, which must match this network's exactly.

        Raises:
            RuntimeError: a state dict of another shape.
        """
        self.load_state_dict(donor.state_dict(), strict=True)

    def onnx_form(self) -> nn.Module:
        """This network as ONNX export traces it (the network itself unless it needs an
        exportable stand-in)."""
        return self
