"""The training-data configuration: how HR images become LR/HR patch pairs."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["DEGRADATIONS", "SAMPLINGS", "DataConfig"]

DEGRADATIONS = ("bicubic", "gaussian")
SAMPLINGS = ("random", "stride")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class DataConfig:
    """How training pairs are made from HR images.

    Attributes:
        scale: Downscaling factor ``r``, at least 2.
        channels: 1 for the luminance ``Y`` of BT.601 studio-swing YCbCr
            (``subpixel.colour.rgb_to_ycbcr(rgb)[..., 0]``), 3 for RGB.
        patch_size: LR patch side ``p``; the HR patch is ``r p`` (ESPCN: 17r x 17r HR).
        degradation: ``"bicubic"``: :func:`subpixel.resize.degrade` (MATLAB ``imresize``,
            ``uint8``), whose LR pixel ``i`` is centred on HR coordinate ``r i + (r - 1) / 2``.
            ``"gaussian"``: Gaussian blur of ``blur_sigma`` HR pixels (kernel
            ``2 ceil(3 sigma) + 1``, replicated borders), then LR pixel ``i`` = HR pixel
            ``r i + (r - 1) // 2``: the same centre for odd ``r``, half an HR pixel up-left
            of the bicubic centre for even ``r``.
        blur_sigma: Standard deviation of the Gaussian blur in HR pixels (``"gaussian"`` only).
        sampling: ``"random"``: ``patches_per_image`` uniformly random patch positions per
            image variant and epoch. ``"stride"``: the paper's regular sub-images, every
            ``stride`` LR pixels from the top-left corner.
        stride: LR stride of ``"stride"`` sampling.
        patches_per_image: Dataset items per image variant for ``"random"`` sampling.
        flips: Random horizontal flip (applied to LR and HR alike).
        rotations: Random rotation by 0, 90, 180 or 270 degrees (after the flip).
        downscale_augment: FSRCNN's extra copies of each HR image, scaled by these factors
            in ``(0, 1)`` with :func:`subpixel.resize.imresize` on ``uint8``, e.g.
            ``(0.9, 0.8, 0.7, 0.6)``. A list is accepted and stored as a tuple of floats.

    Raises:
        ValueError: On any out-of-range or mistyped value (unknown keys raise ``TypeError``).

    Example:
        >>> DataConfig(scale=3, downscale_augment=[0.9, 0.8]).downscale_augment
        (0.9, 0.8)
    """

    scale: int
    channels: int = 1
    patch_size: int = 17
    degradation: str = "bicubic"
    blur_sigma: float = 1.6
    sampling: str = "random"
    stride: int = 11
    patches_per_image: int = 64
    flips: bool = True
    rotations: bool = True
    downscale_augment: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not _is_int(self.scale) or self.scale < 2:
            raise ValueError(f"scale must be an integer >= 2, got {self.scale!r}")
        if self.channels not in (1, 3) or not _is_int(self.channels):
            raise ValueError(f"channels must be 1 (luminance) or 3 (RGB), got {self.channels!r}")
        for name in ("patch_size", "stride", "patches_per_image"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.degradation not in DEGRADATIONS:
            raise ValueError(f"degradation must be one of {DEGRADATIONS}, got {self.degradation!r}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {self.sampling!r}")
        if (
            isinstance(self.blur_sigma, bool)
            or not isinstance(self.blur_sigma, (int, float))
            or not math.isfinite(self.blur_sigma)
            or self.blur_sigma <= 0
        ):
            raise ValueError(f"blur_sigma must be positive and finite, got {self.blur_sigma!r}")
        for name in ("flips", "rotations"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        factors = self.downscale_augment
        if isinstance(factors, (str, bytes)) or not hasattr(factors, "__iter__"):
            raise ValueError(f"downscale_augment must be a sequence of factors, got {factors!r}")
        factors = tuple(factors)
        for factor in factors:
            if (
                isinstance(factor, bool)
                or not isinstance(factor, (int, float))
                or not 0 < factor < 1
            ):
                raise ValueError(f"downscale_augment factors must lie in (0, 1), got {factor!r}")
        if len(set(factors)) != len(factors):
            raise ValueError(f"downscale_augment has repeated factors: {factors}")
        # JSON round trips give lists; store one canonical, hashable form.
        object.__setattr__(self, "blur_sigma", float(self.blur_sigma))
        object.__setattr__(self, "downscale_augment", tuple(float(f) for f in factors))
