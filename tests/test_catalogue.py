from __future__ import annotations

from subpixel import models
from subpixel.catalogue import COST_SCALES, catalogue
from subpixel.weights import bundled_weights, load_network


def test_every_builder_is_listed_once_in_order() -> None:
    assert [entry.name for entry in catalogue()] == list(models.BUILDERS)


def test_costs_and_weights_of_espcn() -> None:
    espcn = next(entry for entry in catalogue() if entry.name == "espcn")
    assert espcn.parameters == 22_729  # 1x64x5x5 + 64x32x3x3 + 32x9x3x3 weights and biases
    assert set(espcn.macs_per_pixel) == set(COST_SCALES)
    assert espcn.weights == tuple(sorted(s for (a, s) in bundled_weights() if a == "espcn"))


def test_usable_names_load_without_a_file() -> None:
    for entry in catalogue():
        if entry.usable:
            assert load_network(entry.name, scale=entry.scales[0]).card.scale == entry.scales[0]
        else:
            assert entry.weights == ()
    bicubic = next(entry for entry in catalogue() if entry.name == "bicubic")
    assert bicubic.weights == () and bicubic.usable and 2 in bicubic.scales
