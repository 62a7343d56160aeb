from __future__ import annotations

import numpy as np
import pytest

from subpixel.bicubic import (
    REACH,
    apply_taps,
    contributions,
    phase_weights,
    sited_phase_weights,
)


@pytest.mark.parametrize("scale", [1, 2, 3, 4, 5])
def test_centred_sited_weights_are_the_phase_weights(scale: int) -> None:
    # Two derivations of the same centred resize: the video chroma filters at shift 0 and
    # the phase table read off MATLAB's contributions.
    weights, before, after = sited_phase_weights(scale, 0.0)
    table = np.zeros((scale, 2 * REACH + 1))
    for column, offset in enumerate(range(-before, after + 1)):
        assert abs(offset) <= REACH or not weights[:, column].any()
        if abs(offset) <= REACH:
            table[:, offset + REACH] = weights[:, column]
    np.testing.assert_allclose(table, phase_weights(scale), rtol=0, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("axis", [0, 1])
def test_apply_taps_matches_a_loop(dtype: type, axis: int) -> None:
    rng = np.random.default_rng(axis)
    image = (rng.random((7, 9, 2)) * 255).astype(dtype)
    indices, weights = contributions(image.shape[axis], 11, 11 / image.shape[axis])
    got = apply_taps(image, axis, indices, weights)
    moved = np.moveaxis(image.astype(np.float64), axis, 0)
    expected = np.zeros((11, *moved.shape[1:]))
    for i in range(11):
        for k in range(indices.shape[1]):
            expected[i] += weights[i, k] * moved[indices[i, k]]
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, np.moveaxis(expected, 0, axis), rtol=0, atol=1e-10)
