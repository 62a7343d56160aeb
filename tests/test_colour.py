"""BT.601 studio-swing YCbCr as MATLAB's rgb2ycbcr / ycbcr2rgb."""

from __future__ import annotations

import numpy as np
import pytest

from subpixel.colour import luma_uint8_matlab, rgb_to_y, rgb_to_ycbcr, ycbcr_to_rgb

# (R, G, B) in [0, 1] -> (Y, Cb, Cr) on the 0..255 scale, worked out by hand from
# Y = 16 + 65.481 R + 128.553 G + 24.966 B, Cb = 128 - 37.797 R - 74.203 G + 112 B,
# Cr = 128 + 112 R - 93.786 G - 18.214 B.
PINNED = [
    ((0.0, 0.0, 0.0), (16.0, 128.0, 128.0)),
    ((1.0, 1.0, 1.0), (235.0, 128.0, 128.0)),
    ((1.0, 0.0, 0.0), (81.481, 90.203, 240.0)),
    ((0.0, 1.0, 0.0), (144.553, 53.797, 34.214)),
    ((0.0, 0.0, 1.0), (40.966, 240.0, 109.786)),
    ((0.5, 0.5, 0.5), (125.5, 128.0, 128.0)),
]


@pytest.mark.parametrize(("rgb", "ycbcr"), PINNED)
def test_pinned_values(rgb: tuple[float, ...], ycbcr: tuple[float, ...]) -> None:
    image = np.array(rgb, dtype=np.float64).reshape(1, 1, 3)
    got = rgb_to_ycbcr(image)
    assert got.shape == (1, 1, 3)
    np.testing.assert_allclose(got[0, 0] * 255, ycbcr, rtol=0, atol=1e-9)
    np.testing.assert_allclose(rgb_to_y(image)[0, 0] * 255, ycbcr[0], rtol=0, atol=1e-9)
    np.testing.assert_allclose(ycbcr_to_rgb(got)[0, 0], rgb, rtol=0, atol=1e-12)


def test_round_trip_random() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((17, 23, 3))
    np.testing.assert_allclose(ycbcr_to_rgb(rgb_to_ycbcr(x)), x, rtol=0, atol=1e-10)
    y = rng.uniform(-0.5, 1.5, (5, 6, 3))  # also outside the gamut, nothing is clipped
    np.testing.assert_allclose(rgb_to_ycbcr(ycbcr_to_rgb(y)), y, rtol=0, atol=1e-10)


def test_no_clipping() -> None:
    out_of_gamut = np.array([[[16 / 255, 240 / 255, 240 / 255]]])
    rgb = ycbcr_to_rgb(out_of_gamut)
    assert rgb.max() > 1.0 or rgb.min() < 0.0


def test_rgb_to_y_matches_ycbcr_channel() -> None:
    rng = np.random.default_rng(1)
    x = rng.random((8, 9, 3))
    y = rgb_to_y(x)
    assert y.shape == (8, 9)
    np.testing.assert_allclose(y, rgb_to_ycbcr(x)[..., 0], rtol=0, atol=1e-14)


@pytest.mark.parametrize(
    ("rgb", "y"),
    [
        ((0, 0, 0), 16),
        ((255, 255, 255), 235),
        ((255, 0, 0), 81),  # 81.481
        ((0, 255, 0), 145),  # 144.553
        ((0, 0, 255), 41),  # 40.966
        ((128, 128, 128), 126),  # 16 + 219 * 128 / 255 = 125.929...
        ((10, 200, 30), 122),  # 16 + (654.81 + 25710.6 + 748.98) / 255 = 122.33...
    ],
)
def test_luma_uint8_matlab_pinned(rgb: tuple[int, int, int], y: int) -> None:
    image = np.array(rgb, dtype=np.uint8).reshape(1, 1, 3)
    got = luma_uint8_matlab(image)
    assert got.dtype == np.uint8
    assert got.shape == (1, 1)
    assert int(got[0, 0]) == y


def test_luma_uint8_matlab_rounds_to_nearest() -> None:
    """Agrees with exact integer arithmetic, except possibly on exact half-integer ties."""
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)
    r, g, b = (image[..., i].astype(np.int64) for i in range(3))
    num = 65481 * r + 128553 * g + 24966 * b  # Y = 16 + num / 255000
    exact = 16 + (2 * num + 255000) // 510000  # round half up, in integers
    tie = num % 255000 == 127500
    got = luma_uint8_matlab(image).astype(np.int64)
    np.testing.assert_array_equal(got[~tie], exact[~tie])
    assert np.all(np.abs(got[tie] - exact[tie]) <= 1)
    # and to the float luma within half a level
    yf = rgb_to_y(image / 255.0) * 255
    assert np.abs(got - yf).max() <= 0.5 + 1e-9


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        rgb_to_ycbcr(np.zeros((4, 4)))
    with pytest.raises(ValueError):
        ycbcr_to_rgb(np.zeros((4, 4, 4)))
    with pytest.raises(ValueError):
        rgb_to_y(np.zeros((4, 4, 1)))
    with pytest.raises(ValueError):
        luma_uint8_matlab(np.zeros((4, 4, 3)))  # float, not uint8
    with pytest.raises(ValueError):
        luma_uint8_matlab(np.zeros((4, 4), dtype=np.uint8))
