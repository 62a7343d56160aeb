"""MATLAB-compatible bicubic imresize: bit-exactness on the benchmark LR sets, a loop-based
reference written from MATLAB's formulas, and basic properties."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from subpixel.bicubic import contributions
from subpixel.resize import degrade, imresize, modcrop

SET5 = ("baby", "bird", "butterfly", "head", "woman")
SET14 = (
    "baboon",
    "barbara",
    "bridge",
    "coastguard",
    "comic",
    "face",
    "flowers",
    "foreman",
    "lenna",
    "man",
    "monarch",
    "pepper",
    "ppt3",
    "zebra",
)
LR_CASES = [
    (set_name, name, scale)
    for set_name, names in (("Set5", SET5), ("Set14", SET14))
    for scale in (2, 3, 4)
    for name in names
]


def load_png(path: Path) -> np.ndarray:
    """A PNG as a uint8 array: (H, W) for grayscale, (H, W, 3) for colour."""
    with Image.open(path) as img:
        if img.mode == "P":
            img = img.convert("RGB")
        return np.asarray(img)


# --------------------------------------------------------------------------------------
# Bit-exactness against the MATLAB-made LR images (SelfExSR, 57 files).


@pytest.mark.parametrize(
    ("set_name", "name", "scale"), LR_CASES, ids=[f"{a}-{b}-x{c}" for a, b, c in LR_CASES]
)
def test_degrade_matches_matlab_lr(data_dir: Path, set_name: str, name: str, scale: int) -> None:
    bench = data_dir / "benchmark" / set_name
    hr = load_png(bench / "HR" / f"{name}.png")
    expected = load_png(bench / "LR_bicubic" / f"X{scale}" / f"{name}x{scale}.png")
    lr = degrade(hr, scale)
    assert lr.dtype == np.uint8
    assert lr.shape == expected.shape
    diff = np.abs(lr.astype(np.int16) - expected.astype(np.int16))
    assert diff.max() == 0, f"{int((diff > 0).sum())} values differ, max {diff.max()}"


# --------------------------------------------------------------------------------------
# Loop-based reference, written directly from MATLAB's imresize.m (clamping version).


def _ref_cubic(x: float) -> float:
    ax = abs(x)
    if ax <= 1:
        return 1.5 * ax**3 - 2.5 * ax**2 + 1
    if ax <= 2:
        return -0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2
    return 0.0


def _ref_resize_1d(
    line: list[float], out_len: int, scale: float, antialias: bool, to_uint8: bool
) -> list[float]:
    in_len = len(line)
    shrink = scale < 1 and antialias
    width = 4.0 / scale if shrink else 4.0
    taps = math.ceil(width) + 2
    out = []
    for x in range(1, out_len + 1):
        u = x / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        idx = [left + k for k in range(taps)]
        if shrink:
            w = [scale * _ref_cubic(scale * (u - j)) for j in idx]
        else:
            w = [_ref_cubic(u - j) for j in idx]
        total = sum(w)
        w = [v / total for v in w]
        acc = 0.0
        for j, v in zip(idx, w, strict=True):
            acc += v * line[min(max(j, 1), in_len) - 1]
        if to_uint8:
            acc = float(min(max(math.floor(acc + 0.5), 0), 255))
        out.append(acc)
    return out


def _ref_imresize(
    image: np.ndarray, out_shape: tuple[int, int], scales: tuple[float, float], antialias: bool
) -> np.ndarray:
    to_uint8 = image.dtype == np.uint8
    arr = image.astype(np.float64)
    squeeze = arr.ndim == 2
    if squeeze:
        arr = arr[:, :, None]
    order = [0, 1] if scales[0] <= scales[1] else [1, 0]
    for dim in order:
        h, w, c = arr.shape
        if dim == 0:
            new = np.zeros((out_shape[0], w, c))
            for j in range(w):
                for ch in range(c):
                    new[:, j, ch] = _ref_resize_1d(
                        arr[:, j, ch].tolist(), out_shape[0], scales[0], antialias, to_uint8
                    )
        else:
            new = np.zeros((h, out_shape[1], c))
            for i in range(h):
                for ch in range(c):
                    new[i, :, ch] = _ref_resize_1d(
                        arr[i, :, ch].tolist(), out_shape[1], scales[1], antialias, to_uint8
                    )
        arr = new
    if squeeze:
        arr = arr[:, :, 0]
    return arr.astype(np.uint8) if to_uint8 else arr


REF_SCALES = (2, 3, 4, 1 / 2, 1 / 3, 1 / 4, 0.7, 1.5)


@pytest.mark.parametrize("scale", REF_SCALES, ids=[f"{s:.4g}" for s in REF_SCALES])
@pytest.mark.parametrize("dtype", ["uint8", "float64"])
def test_imresize_matches_loop_reference(scale: float, dtype: str) -> None:
    rng = np.random.default_rng(1234)
    shape = (13, 11, 2) if scale > 1 else (23, 17, 3)
    if dtype == "uint8":
        image = rng.integers(0, 256, shape, dtype=np.uint8)
    else:
        image = rng.normal(0.5, 0.4, shape)  # out of [0, 1] too: no clipping for floats
    out_shape = (math.ceil(shape[0] * scale), math.ceil(shape[1] * scale))
    expected = _ref_imresize(image, out_shape, (scale, scale), antialias=True)
    got = imresize(image, scale)
    assert got.shape == expected.shape
    if dtype == "uint8":
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, expected)
    else:
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("out_shape", "antialias"),
    [((26, 5), True), ((7, 22), True), ((9, 9), False), ((30, 4), False)],
)
@pytest.mark.parametrize("dtype", ["uint8", "float64"])
def test_output_shape_and_pass_order_match_reference(
    out_shape: tuple[int, int], antialias: bool, dtype: str
) -> None:
    rng = np.random.default_rng(99)
    shape = (13, 11)
    image = rng.integers(0, 256, shape, dtype=np.uint8) if dtype == "uint8" else rng.random(shape)
    scales = (out_shape[0] / shape[0], out_shape[1] / shape[1])
    expected = _ref_imresize(image, out_shape, scales, antialias)
    got = imresize(image, output_shape=out_shape, antialias=antialias)
    assert got.shape == out_shape
    if dtype == "uint8":
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_pass_order_matters_for_uint8() -> None:
    """Sanity check of the reference itself: the other pass order gives other values."""
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (24, 24), dtype=np.uint8)
    rows_first = imresize(image, 0.5)
    cols_first = imresize(image.T, 0.5).T
    assert not np.array_equal(rows_first, cols_first)


# --------------------------------------------------------------------------------------
# contributions()


@pytest.mark.parametrize(
    ("in_len", "out_len", "scale"),
    [(12, 24, 2.0), (12, 4, 1 / 3), (17, 5, 0.3), (10, 15, 1.5), (9, 9, 1.0)],
)
@pytest.mark.parametrize("antialias", [True, False])
def test_contributions_shape_and_normalisation(
    in_len: int, out_len: int, scale: float, antialias: bool
) -> None:
    indices, weights = contributions(in_len, out_len, scale, antialias)
    assert indices.dtype == np.int64
    assert weights.dtype == np.float64
    assert indices.shape == weights.shape
    assert indices.shape[0] == out_len
    width = 4 / scale if (scale < 1 and antialias) else 4
    assert indices.shape[1] <= math.ceil(width) + 2
    assert indices.min() >= 0
    assert indices.max() <= in_len - 1
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert np.all(np.any(weights != 0, axis=0))  # all-zero tap columns are dropped


def test_contributions_clamps_at_edges() -> None:
    indices, _ = contributions(8, 2, 0.25)
    assert indices[0, 0] == 0  # leftmost taps replicate the first pixel
    assert indices[-1, -1] == 7  # rightmost taps replicate the last pixel
    assert (indices[0] == 0).sum() > 1


def test_contributions_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        contributions(0, 3, 1.0)
    with pytest.raises(ValueError):
        contributions(3, 0, 1.0)
    with pytest.raises(ValueError):
        contributions(3, 3, 0.0)
    with pytest.raises(ValueError):
        contributions(3, 3, -2.0)


# --------------------------------------------------------------------------------------
# imresize properties


@pytest.mark.parametrize("scale", [2, 3, 4, 1 / 2, 1 / 3, 1 / 4, 0.7, 1.5])
@pytest.mark.parametrize("value", [0, 37, 255])
def test_constant_image_stays_constant(scale: float, value: int) -> None:
    image = np.full((19, 14, 3), value, dtype=np.uint8)
    out = imresize(image, scale)
    assert np.all(out == value)
    outf = imresize(image.astype(np.float64) / 255, scale)
    np.testing.assert_allclose(outf, value / 255, rtol=0, atol=1e-12)


@pytest.mark.parametrize("scale", [2, 3, 4, 1 / 2, 1 / 3, 1 / 4, 0.7, 1.5, 0.1])
@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (30, 17), (31, 45, 3)])
def test_output_size_is_ceil(scale: float, shape: tuple[int, ...]) -> None:
    image = np.zeros(shape, dtype=np.uint8)
    out = imresize(image, scale)
    assert out.shape[:2] == (math.ceil(shape[0] * scale), math.ceil(shape[1] * scale))
    assert out.shape[2:] == shape[2:]


def test_identity_at_scale_one() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (9, 12, 3), dtype=np.uint8)
    np.testing.assert_array_equal(imresize(image, 1.0), image)
    imagef = rng.random((9, 12))
    np.testing.assert_array_equal(imresize(imagef, 1.0), imagef)


def test_dtypes() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    assert imresize(image, 0.5).dtype == np.uint8
    assert imresize(image.astype(np.float32), 0.5).dtype == np.float64
    # floats are neither rounded nor clipped
    out = imresize(image.astype(np.float64), 2)
    assert np.any(out != np.round(out))
    edge = np.zeros((8, 8))
    edge[:, 4:] = 1.0
    overshoot = imresize(edge, 2)
    assert overshoot.max() > 1.0
    assert overshoot.min() < 0.0


def test_imresize_rejects_bad_arguments() -> None:
    image = np.zeros((8, 8), dtype=np.uint8)
    with pytest.raises(ValueError, match="exactly one"):
        imresize(image)
    with pytest.raises(ValueError, match="exactly one"):
        imresize(image, 2, output_shape=(16, 16))
    with pytest.raises(ValueError, match="scale"):
        imresize(image, 0)
    with pytest.raises(ValueError, match="scale"):
        imresize(image, -0.5)
    with pytest.raises(ValueError, match="output_shape"):
        imresize(image, output_shape=(0, 4))
    with pytest.raises(ValueError, match="empty"):
        imresize(np.zeros((0, 5), dtype=np.uint8), 2)
    with pytest.raises(ValueError, match="shape"):
        imresize(np.zeros((4,), dtype=np.uint8), 2)
    with pytest.raises(ValueError, match="shape"):
        imresize(np.zeros((2, 4, 4, 3), dtype=np.uint8), 2)
    with pytest.raises(ValueError, match="dtype"):
        imresize(np.zeros((4, 4), dtype=np.int32), 2)


# --------------------------------------------------------------------------------------
# modcrop / degrade


def test_modcrop() -> None:
    image = np.arange(7 * 10 * 3, dtype=np.uint8).reshape(7, 10, 3)
    out = modcrop(image, 3)
    assert out.shape == (6, 9, 3)
    np.testing.assert_array_equal(out, image[:6, :9])
    assert modcrop(image[..., 0], 2).shape == (6, 10)
    assert modcrop(image, 1).shape == image.shape
    with pytest.raises(ValueError):
        modcrop(image, 0)
    with pytest.raises(ValueError):
        modcrop(image, 2.5)
    with pytest.raises(ValueError):
        modcrop(image, 8)
    with pytest.raises(ValueError):
        modcrop(image[0, 0], 2)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_degrade_shape(scale: int) -> None:
    image = np.zeros((361, 250, 3), dtype=np.uint8)
    assert degrade(image, scale).shape == (361 // scale, 250 // scale, 3)
