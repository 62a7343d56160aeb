"""PSNR and SSIM as the super-resolution papers evaluate them.

Both metrics are computed on the luma (Y) channel of BT.601 studio-swing YCbCr, on the
0..255 scale, after cropping ``crop`` pixels (usually the scale factor) from every border.
The images are ``uint8`` arrays, i.e. the results quantised to 8 bits as a saved image
would be. Two protocols define how ``Y`` is obtained from an RGB image:

``"matlab"`` (default)
    ``Y`` as MATLAB's ``rgb2ycbcr`` returns it for a ``uint8`` image: computed in double
    and rounded to integers in ``[16, 235]``. This is how the tables of the SRCNN / FSRCNN
    / ESPCN / SelfExSR era papers were computed (MATLAB scripts on saved PNGs).

``"float"``
    ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` kept unrounded, as BasicSR and
    most PyTorch code bases do. It typically reads about 0.01-0.03 dB higher than
    ``"matlab"``.

A grayscale image, ``(H, W)`` or ``(H, W, 1)``, is its own luma under both protocols.

SSIM follows Wang et al. (``ssim_index.m``): an 11x11 Gaussian window with sigma 1.5,
``K1 = 0.01``, ``K2 = 0.03``, ``L = 255``, ``'valid'`` filtering and the mean of the SSIM
map, without any automatic downsampling.
"""

from __future__ import annotations

import math

import numpy as np

from subpixel.colour import luma_uint8_matlab, rgb_to_y

__all__ = ["PROTOCOLS", "luma", "psnr", "ssim"]

#: The supported ways to get luma from an RGB image.
PROTOCOLS = ("matlab", "float")

_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03
_PEAK = 255.0


def luma(image: np.ndarray, protocol: str = "matlab") -> np.ndarray:
    """Luma on the 0..255 scale, as the evaluation protocol defines it.

    Args:
        image: ``uint8`` image, ``(H, W, 3)`` RGB or ``(H, W)`` / ``(H, W, 1)`` grayscale.
        protocol: ``"matlab"`` (``Y`` rounded to integers as MATLAB's ``rgb2ycbcr`` does
            for ``uint8`` input) or ``"float"`` (``Y`` unrounded, as BasicSR).

    Returns:
        ``(H, W)`` float64 luma. Grayscale input is returned as is (cast to float64).

    Raises:
        ValueError: On an unknown protocol, a non-``uint8`` dtype or an unsupported shape.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (quantised to 8 bits), got {image.dtype}")
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        return image.astype(np.float64)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image shape must be (H, W), (H, W, 1) or (H, W, 3), got {image.shape}")
    if protocol == "matlab":
        return luma_uint8_matlab(image).astype(np.float64)
    return rgb_to_y(image.astype(np.float64) / 255.0) * 255.0


def _cropped_lumas(
    sr: np.ndarray, hr: np.ndarray, crop: int, protocol: str
) -> tuple[np.ndarray, np.ndarray]:
    sr = np.asarray(sr)
    hr = np.asarray(hr)
    if sr.shape != hr.shape:
        raise ValueError(f"shapes differ: sr {sr.shape} vs hr {hr.shape}")
    if isinstance(crop, bool) or int(crop) != crop or crop < 0:
        raise ValueError(f"crop must be a non-negative integer, got {crop}")
    crop = int(crop)
    y_sr = luma(sr, protocol)
    y_hr = luma(hr, protocol)
    h, w = y_sr.shape
    if 2 * crop >= h or 2 * crop >= w:
        raise ValueError(f"crop {crop} leaves nothing of a {h}x{w} image")
    if crop:
        y_sr = y_sr[crop:-crop, crop:-crop]
        y_hr = y_hr[crop:-crop, crop:-crop]
    return y_sr, y_hr


def psnr(sr: np.ndarray, hr: np.ndarray, crop: int, protocol: str = "matlab") -> float:
    """Peak signal-to-noise ratio on luma, in dB.

    Args:
        sr: Restored ``uint8`` image.
        hr: Ground-truth ``uint8`` image, same shape as ``sr``.
        crop: Pixels removed from every border before comparing (usually the scale).
        protocol: ``"matlab"`` or ``"float"``, see :func:`luma`.

    Returns:
        ``10 log10(255^2 / MSE)``; ``inf`` for identical lumas.

    Raises:
        ValueError: On mismatched shapes, a bad crop, or the errors of :func:`luma`.
    """
    y_sr, y_hr = _cropped_lumas(sr, hr, crop, protocol)
    mse = float(np.mean((y_sr - y_hr) ** 2))
    if mse == 0:
        return math.inf
    return 10.0 * math.log10(_PEAK**2 / mse)


def _gaussian_1d(size: int, sigma: float) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def _filter_valid(image: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable 2-D correlation with ``outer(taps, taps)``, ``'valid'`` part only."""
    n = len(taps)
    h, w = image.shape
    rows = taps[0] * image[: h - n + 1]
    for k in range(1, n):
        rows += taps[k] * image[k : h - n + 1 + k]
    out = taps[0] * rows[:, : w - n + 1]
    for k in range(1, n):
        out += taps[k] * rows[:, k : w - n + 1 + k]
    return out


def ssim(sr: np.ndarray, hr: np.ndarray, crop: int, protocol: str = "matlab") -> float:
    """Structural similarity (Wang et al. 2004) on luma.

    Args:
        sr: Restored ``uint8`` image.
        hr: Ground-truth ``uint8`` image, same shape as ``sr``.
        crop: Pixels removed from every border before comparing (usually the scale).
        protocol: ``"matlab"`` or ``"float"``, see :func:`luma`.

    Returns:
        The mean of the SSIM map over the ``'valid'`` region of the 11x11 Gaussian window
        (sigma 1.5, ``K1 = 0.01``, ``K2 = 0.03``, ``L = 255``).

    Raises:
        ValueError: On mismatched shapes, a bad crop, an image smaller than the window
            after cropping, or the errors of :func:`luma`.
    """
    x, y = _cropped_lumas(sr, hr, crop, protocol)
    if min(x.shape) < _SSIM_WINDOW:
        raise ValueError(f"image of {x.shape} after cropping is smaller than the SSIM window")
    g = _gaussian_1d(_SSIM_WINDOW, _SSIM_SIGMA)
    c1 = (_SSIM_K1 * _PEAK) ** 2
    c2 = (_SSIM_K2 * _PEAK) ** 2
    mu_x = _filter_valid(x, g)
    mu_y = _filter_valid(y, g)
    mu_xx = mu_x * mu_x
    mu_yy = mu_y * mu_y
    mu_xy = mu_x * mu_y
    sigma_xx = _filter_valid(x * x, g) - mu_xx
    sigma_yy = _filter_valid(y * y, g) - mu_yy
    sigma_xy = _filter_valid(x * y, g) - mu_xy
    num = (2 * mu_xy + c1) * (2 * sigma_xy + c2)
    den = (mu_xx + mu_yy + c1) * (sigma_xx + sigma_yy + c2)
    return float(np.mean(num / den))
