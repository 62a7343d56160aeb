"""PSNR / SSIM evaluation protocol: published bicubic anchors, skimage SSIM, properties."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from subpixel.metrics import luma, psnr, ssim
from subpixel.resize import degrade, imresize, modcrop


def load_png(path: Path) -> np.ndarray:
    """A PNG as a uint8 array: (H, W) for grayscale, (H, W, 3) for colour."""
    with Image.open(path) as img:
        if img.mode == "P":
            img = img.convert("RGB")
        return np.asarray(img)


def bicubic_pair(path: Path, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(sr, hr): MATLAB bicubic down- then up-scaling of an HR image, and its crop."""
    image = load_png(path)
    hr = modcrop(image, scale)
    sr = imresize(degrade(image, scale), scale)
    return sr, hr


# --------------------------------------------------------------------------------------
# Published bicubic baseline (SelfExSR README), protocol "matlab", crop = scale.

ANCHORS = [
    ("Set5", 2, 33.64),
    ("Set5", 3, 30.39),
    ("Set5", 4, 28.42),
    ("Set14", 2, 30.22),
    ("Set14", 3, 27.53),
    ("Set14", 4, 25.99),
]


@pytest.mark.parametrize(
    ("set_name", "scale", "expected"), ANCHORS, ids=[f"{s}-x{k}" for s, k, _ in ANCHORS]
)
def test_bicubic_anchor_psnr(data_dir: Path, set_name: str, scale: int, expected: float) -> None:
    paths = sorted((data_dir / "benchmark" / set_name / "HR").glob("*.png"))
    assert len(paths) == {"Set5": 5, "Set14": 14}[set_name]
    matlab, floating = [], []
    for path in paths:
        sr, hr = bicubic_pair(path, scale)
        assert sr.shape == hr.shape
        matlab.append(psnr(sr, hr, crop=scale, protocol="matlab"))
        floating.append(psnr(sr, hr, crop=scale, protocol="float"))
    mean_matlab = float(np.mean(matlab))
    mean_float = float(np.mean(floating))
    assert abs(mean_matlab - expected) <= 0.01, f"{set_name} x{scale}: {mean_matlab:.4f}"
    assert 0.0 <= mean_float - mean_matlab <= 0.05, f"float {mean_float:.4f}"


# --------------------------------------------------------------------------------------
# SSIM against scikit-image (Gaussian window, population covariance == Wang's ssim.m).


def _skimage_ssim(sr: np.ndarray, hr: np.ndarray, crop: int, protocol: str) -> float:
    skimage_metrics = pytest.importorskip("skimage.metrics")
    a = luma(sr, protocol)
    b = luma(hr, protocol)
    if crop:
        a, b = a[crop:-crop, crop:-crop], b[crop:-crop, crop:-crop]
    return float(
        skimage_metrics.structural_similarity(
            a,
            b,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255,
        )
    )


@pytest.mark.parametrize("protocol", ["matlab", "float"])
@pytest.mark.parametrize("crop", [0, 3])
@pytest.mark.parametrize("shape", [(40, 52, 3), (33, 29), (30, 31, 1)])
def test_ssim_matches_skimage_random(shape: tuple[int, ...], crop: int, protocol: str) -> None:
    rng = np.random.default_rng(7)
    hr = rng.integers(0, 256, shape, dtype=np.uint8)
    noise = rng.integers(-30, 31, shape)
    sr = np.clip(hr.astype(np.int64) + noise, 0, 255).astype(np.uint8)
    got = ssim(sr, hr, crop, protocol)
    assert got == pytest.approx(_skimage_ssim(sr, hr, crop, protocol), abs=1e-4)
    assert -1.0 <= got < 1.0


@pytest.mark.parametrize(
    ("set_name", "name", "scale"), [("Set5", "butterfly", 4), ("Set14", "bridge", 3)]
)
def test_ssim_matches_skimage_real(data_dir: Path, set_name: str, name: str, scale: int) -> None:
    sr, hr = bicubic_pair(data_dir / "benchmark" / set_name / "HR" / f"{name}.png", scale)
    for protocol in ("matlab", "float"):
        got = ssim(sr, hr, scale, protocol)
        assert got == pytest.approx(_skimage_ssim(sr, hr, scale, protocol), abs=1e-4)
        assert 0.5 < got < 1.0


# --------------------------------------------------------------------------------------
# Properties and argument checks.


def test_identical_images() -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
    for protocol in ("matlab", "float"):
        assert psnr(x, x, 4, protocol) == math.inf
        assert ssim(x, x, 4, protocol) == pytest.approx(1.0, abs=1e-12)


def test_psnr_known_value_and_crop() -> None:
    hr = np.full((20, 20), 100, dtype=np.uint8)
    sr = hr.copy()
    sr[5:15, 5:15] = 110  # error of 10 grey levels inside
    # crop 5 -> only the differing 10x10 block remains: mse = 100
    assert psnr(sr, hr, crop=5) == pytest.approx(10 * math.log10(255**2 / 100), abs=1e-12)
    # crop 0 -> a quarter of the pixels differ: mse = 25
    assert psnr(sr, hr, crop=0) == pytest.approx(10 * math.log10(255**2 / 25), abs=1e-12)
    border = hr.copy()
    border[0, :] = 0
    assert psnr(border, hr, crop=1) == math.inf
    assert psnr(border, hr, crop=0) < math.inf


def test_luma_protocols() -> None:
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    ym = luma(x, "matlab")
    yf = luma(x, "float")
    assert ym.dtype == np.float64
    assert yf.dtype == np.float64
    assert ym.shape == yf.shape == (16, 16)
    np.testing.assert_array_equal(ym, np.round(ym))
    assert np.any(yf != np.round(yf))
    assert np.abs(ym - yf).max() <= 0.5 + 1e-9
    white = np.full((1, 1, 3), 255, dtype=np.uint8)
    assert luma(white)[0, 0] == 235.0
    assert luma(white, "float")[0, 0] == pytest.approx(235.0, abs=1e-12)


def test_grayscale_is_its_own_luma() -> None:
    rng = np.random.default_rng(5)
    g = rng.integers(0, 256, (12, 14), dtype=np.uint8)
    for protocol in ("matlab", "float"):
        np.testing.assert_array_equal(luma(g, protocol), g.astype(np.float64))
        np.testing.assert_array_equal(luma(g[..., None], protocol), g.astype(np.float64))
    g2 = g.copy()
    g2[6, 7] ^= 1
    assert psnr(g2, g, 0) == pytest.approx(psnr(g2[..., None], g[..., None], 0))


def test_rejects_bad_arguments() -> None:
    x = np.zeros((20, 20, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="shape"):
        psnr(x, x[:19], 2)
    with pytest.raises(ValueError, match="shape"):
        ssim(x, x[:, :19], 2)
    with pytest.raises(ValueError, match="protocol"):
        psnr(x, x, 2, protocol="basicsr")
    with pytest.raises(ValueError, match="protocol"):
        luma(x, "bt709")
    with pytest.raises(ValueError, match="uint8"):
        psnr(x.astype(np.float32), x.astype(np.float32), 2)
    with pytest.raises(ValueError, match="shape"):
        luma(np.zeros((4, 4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="crop"):
        psnr(x, x, -1)
    with pytest.raises(ValueError, match="crop"):
        psnr(x, x, 10)
    with pytest.raises(ValueError, match="window"):
        ssim(x, x, 5)
