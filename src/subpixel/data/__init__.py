"""Training data: HR image folders -> cached, degraded, aligned LR/HR patch pairs.

Example:
    >>> from subpixel.data import DataConfig, PatchCache, PatchDataset  # doctest: +SKIP
    >>> config = DataConfig(scale=3, downscale_augment=(0.9, 0.8, 0.7, 0.6))  # doctest: +SKIP
    >>> cache = PatchCache.build(["data/train/T91"], config, "cache/")  # doctest: +SKIP
    >>> lr, hr = PatchDataset(cache, config, seed=0)[0]  # doctest: +SKIP
    >>> tuple(lr.shape), tuple(hr.shape)  # doctest: +SKIP
    ((1, 17, 17), (1, 51, 51))
"""

from subpixel.data.cache import PatchCache, Variant, list_images, read_rgb
from subpixel.data.config import DataConfig
from subpixel.data.dataset import PatchDataset, epoch_order, training_batches
from subpixel.data.degradation import degrade_image, gaussian_degrade, make_variants
from subpixel.data.device import DevicePairs

__all__ = [
    "DataConfig",
    "DevicePairs",
    "PatchCache",
    "PatchDataset",
    "Variant",
    "degrade_image",
    "epoch_order",
    "gaussian_degrade",
    "list_images",
    "make_variants",
    "read_rgb",
    "training_batches",
]
