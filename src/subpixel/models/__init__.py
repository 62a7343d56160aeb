"""The networks, and a plain dict from name to builder.

Example:
    >>> from subpixel import models
    >>> net = models.build("espcn", scale=3, channels=1)
    >>> sorted(models.BUILDERS)[:3]
    ['bicubic', 'ecbsr', 'espcn']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from subpixel.models.base import SUBPIXEL_FORM, SRNetwork
from subpixel.models.bicubic import Bicubic, BicubicConfig, BicubicConvolution
from subpixel.models.complexity import Complexity, measure_complexity
from subpixel.models.espcn import ESPCN, ESPCN7, ESPCNConfig
from subpixel.models.fsrcnn import (
    FSRCNN,
    FSRCNNConfig,
    MultiScaleFSRCNN,
    MultiScaleFSRCNNConfig,
    combine_fsrcnn_heads,
    fsrcnn_to_subpixel,
)
from subpixel.models.reparam_sr import (
    LinearFSRCNN,
    LinearFSRCNNConfig,
    ReparamSR,
    ReparamSRConfig,
)
from subpixel.models.srcnn import SRCNN, SRCNNConfig
from subpixel.reparam import Collapsible

__all__ = [
    "BUILDERS",
    "ESPCN",
    "FSRCNN",
    "SRCNN",
    "SUBPIXEL_FORM",
    "TRAINING_FORMS",
    "Bicubic",
    "BicubicConfig",
    "BicubicConvolution",
    "Collapsible",
    "Complexity",
    "ESPCNConfig",
    "FSRCNNConfig",
    "LinearFSRCNN",
    "LinearFSRCNNConfig",
    "MultiScaleFSRCNN",
    "MultiScaleFSRCNNConfig",
    "ReparamSR",
    "ReparamSRConfig",
    "SRCNNConfig",
    "SRNetwork",
    "architecture_of",
    "build",
    "combine_fsrcnn_heads",
    "fsrcnn_to_subpixel",
    "measure_complexity",
    "settings_of",
    "trainable",
]


def _espcn(**options: Any) -> nn.Module:
    return ESPCN(ESPCNConfig(**options))


def _espcn7(**options: Any) -> nn.Module:
    return ESPCN(ESPCNConfig(**{**ESPCN7, **options}))


def _fsrcnn(**options: Any) -> nn.Module:
    return FSRCNN(FSRCNNConfig(**options))


def _fsrcnn_s(**options: Any) -> nn.Module:
    return FSRCNN(FSRCNNConfig(**{"d": 32, "s": 5, "m": 1, **options}))


def _fsrcnn_linear(**options: Any) -> nn.Module:
    return LinearFSRCNN(LinearFSRCNNConfig(**options))


def _fsrcnn_s_linear(**options: Any) -> nn.Module:
    return LinearFSRCNN(LinearFSRCNNConfig(**{"d": 32, "s": 5, "m": 1, **options}))


def _fsrcnn_multiscale(**options: Any) -> nn.Module:
    return MultiScaleFSRCNN(MultiScaleFSRCNNConfig(**options))


def _srcnn(**options: Any) -> nn.Module:
    return SRCNN(SRCNNConfig(**options))


def _srcnn_915(**options: Any) -> nn.Module:
    return SRCNN(SRCNNConfig(**{"kernels": (9, 1, 5), **options}))


def _ecbsr(**options: Any) -> nn.Module:
    return ReparamSR(ReparamSRConfig(**{"block": "ecb", **options}))


def _sesr(**options: Any) -> nn.Module:
    # SESR's blocks (256 wide in training) in ECBSR-M4C16's collapsed shape, so the two
    # training forms compare at one inference cost. The paper's SESR-M5 (blocks=5,
    # kernels=(5, 3, 5)) costs more than FSRCNN per output pixel at x2 and x4.
    return ReparamSR(ReparamSRConfig(**{"block": "sesr", "hidden": 256, **options}))


def _bicubic(**options: Any) -> nn.Module:
    return Bicubic(**options)


# Name -> builder taking scale, channels and any config field as keywords.
BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "espcn": _espcn,
    "espcn-7": _espcn7,
    "fsrcnn": _fsrcnn,
    "fsrcnn-s": _fsrcnn_s,
    "fsrcnn-linear": _fsrcnn_linear,
    "fsrcnn-s-linear": _fsrcnn_s_linear,
    "fsrcnn-multiscale": _fsrcnn_multiscale,
    "srcnn": _srcnn,
    "srcnn-915": _srcnn_915,
    "ecbsr": _ecbsr,
    "sesr": _sesr,
    "bicubic": _bicubic,
}


# Builders that train another model's network re-parameterised: name -> the model whose
# network they collapse into, and whose files theirs are (a card's ``name``).
TRAINING_FORMS: dict[str, str] = {"fsrcnn-linear": "fsrcnn", "fsrcnn-s-linear": "fsrcnn-s"}


def architecture_of(model: nn.Module) -> str | None:
    """The ``BUILDERS`` name a network is rebuilt by (with its settings), as its class
    declares it, or None for a module that is not an ``SRNetwork``. (ESPCN-7 and FSRCNN-s are
    ESPCN and FSRCNN configurations.)"""
    return model.architecture_name() if isinstance(model, SRNetwork) else None


def settings_of(model: nn.Module) -> dict[str, Any]:
    """``scale``, ``channels`` and the other config fields of a network, as keywords for
    ``build``.

    Raises:
        TypeError: ``model`` is not an ``SRNetwork`` with a config dataclass.
    """
    if not isinstance(model, SRNetwork):
        raise TypeError(f"a {type(model).__name__} is not a subpixel network")
    return model.settings()


def trainable(name: str) -> bool:
    """Whether the network ``name`` builds can be trained: as its class declares, or, for a
    module that declares nothing, whether it has parameters. The global random state is
    left as it was (building draws fresh weights)."""
    with torch.random.fork_rng(devices=[]):
        network = build(name)
    if isinstance(network, SRNetwork):
        return network.trainable
    return any(parameter.requires_grad for parameter in network.parameters())


def build(name: str, scale: int = 3, channels: int = 1, **options: Any) -> nn.Module:
    """Build a network by name with fresh weights.

    Args:
        name: a key of ``BUILDERS`` (espcn, espcn-7, fsrcnn, fsrcnn-s, fsrcnn-linear,
            fsrcnn-s-linear, srcnn, srcnn-915, ecbsr, sesr, bicubic).
        scale: the upscaling factor r.
        channels: 1 for luminance (Y), 3 for RGB.
        **options: other fields of the network's config (for example ``features=(64, 32)``).

    Raises:
        KeyError: for an unknown name.
        ValueError: for options the network does not have or cannot take.
    """
    if name not in BUILDERS:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(sorted(BUILDERS))}")
    try:
        return BUILDERS[name](scale=scale, channels=channels, **options)
    except TypeError as error:  # an unknown keyword reaches the frozen dataclass
        raise ValueError(f"bad options for {name}: {error}") from error
