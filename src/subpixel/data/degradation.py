"""HR image -> (HR, LR) ``uint8`` pairs: downscale augmentation, modcrop and degradation.

Alignment of the two degradations (``r`` is the scale, coordinates are pixel centres):

* ``"bicubic"`` is MATLAB ``imresize(hr, 1/r)``: LR pixel ``i`` is centred on HR coordinate
  ``r i + (r - 1) / 2``, the centre of HR block ``r i .. r i + r - 1``.
* ``"gaussian"`` blurs and takes HR pixel ``r i + (r - 1) // 2`` as LR pixel ``i``: the block
  centre for odd ``r``; half an HR pixel up and left of it for even ``r`` (an integer grid
  cannot hit a centre that lies between pixels).

In both cases LR pixel ``i`` belongs to HR block ``r i .. r i + r - 1``, so an LR patch at
``(y, x)`` pairs with the HR patch at ``(r y, r x)``.
"""

from __future__ import annotations

import math

import numpy as np

from subpixel.data.config import DataConfig
from subpixel.resize import degrade, imresize, modcrop

__all__ = ["degrade_image", "gaussian_degrade", "gaussian_kernel", "make_variants"]


def gaussian_kernel(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian of ``2 ceil(3 sigma) + 1`` taps, float64.

    Example:
        >>> gaussian_kernel(0.5).shape
        (5,)
    """
    if not sigma > 0 or not math.isfinite(sigma):
        raise ValueError(f"sigma must be positive and finite, got {sigma}")
    radius = math.ceil(3 * sigma)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (t / sigma) ** 2)
    return kernel / kernel.sum()


def _blur_subsample_axis(
    image: np.ndarray, axis: int, kernel: np.ndarray, scale: int
) -> np.ndarray:
    """Blur along ``axis`` with replicated borders, evaluated only at ``r i + (r - 1) // 2``."""
    radius = kernel.size // 2
    moved = np.moveaxis(image, axis, 0)
    out_len = moved.shape[0] // scale
    pad = [(radius, radius)] + [(0, 0)] * (moved.ndim - 1)
    padded = np.pad(moved, pad, mode="edge")
    first = (scale - 1) // 2  # HR index of LR pixel 0; + radius for the padding, - radius per tap
    stop = first + scale * (out_len - 1) + 1
    out = np.zeros((out_len, *moved.shape[1:]), dtype=np.float64)
    for k, weight in enumerate(kernel):
        out += weight * padded[first + k : stop + k : scale]
    return np.moveaxis(out, 0, axis)


def gaussian_degrade(hr: np.ndarray, scale: int, sigma: float) -> np.ndarray:
    """Gaussian blur then subsampling: LR pixel ``i`` is blurred HR pixel ``r i + (r - 1) // 2``.

    The separable blur has ``2 ceil(3 sigma) + 1`` taps and replicates the border pixels; it is
    only evaluated where it is sampled.

    Args:
        hr: ``(H, W)`` or ``(H, W, C)`` ``uint8`` image; ``H`` and ``W`` multiples of ``scale``.
        scale: Integer factor ``r`` >= 1.
        sigma: Standard deviation in HR pixels.

    Returns:
        ``(H / r, W / r[, C])`` ``uint8``, rounded half-up.

    Raises:
        ValueError: On a non-``uint8`` image or a size that is not a multiple of ``scale``.

    Example:
        >>> gaussian_degrade(np.full((6, 9, 3), 7, np.uint8), 3, 1.6)[..., 0]
        array([[7, 7, 7],
               [7, 7, 7]], dtype=uint8)
    """
    hr = np.asarray(hr)
    if hr.dtype != np.uint8 or hr.ndim not in (2, 3):
        raise ValueError(f"hr must be a uint8 (H, W[, C]) array, got {hr.dtype} {hr.shape}")
    if hr.shape[0] % scale or hr.shape[1] % scale or min(hr.shape[:2]) < scale:
        raise ValueError(f"hr size {hr.shape[:2]} is not a positive multiple of scale {scale}")
    kernel = gaussian_kernel(sigma)
    out = _blur_subsample_axis(hr, 0, kernel, scale)
    out = _blur_subsample_axis(out, 1, kernel, scale)
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


def degrade_image(hr: np.ndarray, config: DataConfig) -> np.ndarray:
    """The LR image of an HR image already cropped to a multiple of ``config.scale``."""
    if config.degradation == "bicubic":
        return degrade(hr, config.scale)
    return gaussian_degrade(hr, config.scale, config.blur_sigma)


def make_variants(
    rgb: np.ndarray, config: DataConfig
) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """Every training variant of one HR image, as ``(factor, hr, lr)`` ``uint8`` triples.

    Variant 0 is the image itself (factor 1.0); then one per ``config.downscale_augment``
    factor, made by MATLAB bicubic ``imresize`` on ``uint8`` (size ``ceil(factor * n)``).
    Each is cropped to a multiple of ``r`` (bottom/right) and degraded. Variants smaller
    than one HR patch (``r * patch_size``) on either side are left out.

    Args:
        rgb: ``(H, W, 3)`` ``uint8`` image.
        config: The data configuration.

    Returns:
        ``[(factor, hr, lr), ...]`` with ``hr`` ``(h, w, 3)`` and ``lr`` ``(h/r, w/r, 3)``.
    """
    need = config.scale * config.patch_size
    variants = []
    for factor in (1.0, *config.downscale_augment):
        scaled = rgb if factor == 1.0 else imresize(rgb, scale=factor)
        if min(scaled.shape[:2]) < need:
            continue
        hr = np.ascontiguousarray(modcrop(scaled, config.scale))
        variants.append((factor, hr, np.ascontiguousarray(degrade_image(hr, config))))
    return variants
