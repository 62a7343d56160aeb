from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from subpixel import models
from subpixel.errors import ModelError
from subpixel.training.averaging import average_networks
from subpixel.weights import card_of, describe


def _network(architecture: str, scale: int, seed: int, **config: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    network = models.build(architecture, scale=scale, **config)
    describe(network, architecture, training={"iterations": seed})
    return network


def test_every_tensor_is_the_elementwise_mean_and_the_first_card_is_kept() -> None:
    networks = [_network("fsrcnn", 3, seed) for seed in (1, 2, 3)]
    average = average_networks(networks)
    states = [n.state_dict() for n in networks]
    for key, tensor in average.state_dict().items():
        flat = [s[key].flatten().tolist() for s in states]
        expected = [sum(values) / len(values) for values in zip(*flat, strict=True)]
        assert tensor.flatten().tolist() == pytest.approx(expected, rel=1e-6, abs=1e-7), key
    assert card_of(average) == card_of(networks[0])
    # The inputs are left as they were.
    assert torch.equal(networks[0].state_dict()["deconv.weight"], states[0]["deconv.weight"])


def test_one_network_averages_to_itself() -> None:
    network = _network("espcn", 2, 0)
    average = average_networks([network])
    assert average is not network
    for key, tensor in network.state_dict().items():
        assert torch.equal(average.state_dict()[key], tensor)


@pytest.mark.parametrize(
    "other",
    [
        lambda: _network("fsrcnn", 2, 5),
        lambda: _network("espcn", 3, 5),
        lambda: _network("fsrcnn", 3, 5, d=32),
    ],
    ids=["scale", "architecture", "config"],
)
def test_different_networks_are_refused(other: Callable[[], torch.nn.Module]) -> None:
    with pytest.raises(ModelError, match="not the same network"):
        average_networks([_network("fsrcnn", 3, 4), other()])


def test_nothing_to_average_is_refused() -> None:
    with pytest.raises(ModelError, match="nothing to average"):
        average_networks([])
