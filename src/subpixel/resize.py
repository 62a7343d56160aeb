"""MATLAB-compatible bicubic ``imresize`` (the older MATLAB that made the standard LR sets).

This reproduces ``imresize(I, scale, 'bicubic')`` as it was used to make the standard
super-resolution benchmarks (e.g. the SelfExSR Set5/Set14 ``LR_bicubic`` images, which it
matches bit-exactly). The details that matter:

* Keys' cubic kernel with ``a = -0.5``.
* When downscaling (``scale < 1``) with antialiasing the kernel is widened by ``1/scale``:
  ``h(x) = scale * cubic(scale * x)``, support ``4/scale``.
* Output pixel ``x`` (1-based) maps to the input coordinate
  ``u = x/scale + 0.5 * (1 - 1/scale)``; taps ``floor(u - width/2) + (0 .. P-1)`` with
  ``P = ceil(width) + 2``; the weights are normalised to sum to one per output pixel and tap
  columns that are zero for every output pixel are dropped.
* Out-of-range taps are clamped to the edge pixel (replicate). Newer MATLAB releases mirror
  instead; the benchmark LR images were made with the clamping version.
* Output size ``ceil(in_len * scale)``.
* The dimension with the smaller scale is resized first, rows (height) first on ties.
* A ``uint8`` image is rounded half-up and clipped to ``0..255`` after *each* 1-D pass,
  because MATLAB casts back to the input class per dimension.

Everything is computed in float64 to match MATLAB's doubles. The kernel and its taps
(``cubic``, ``contributions``) are in ``subpixel.bicubic``.
"""

from __future__ import annotations

import math

import numpy as np

from subpixel.bicubic import apply_taps, contributions

__all__ = ["degrade", "imresize", "modcrop"]


def _resize_axis(
    image: np.ndarray, axis: int, out_len: int, scale: float, antialias: bool, to_uint8: bool
) -> np.ndarray:
    """One 1-D pass along ``axis``, accumulated in float64.

    ``image`` may be ``uint8`` or float64. With ``to_uint8`` the result is rounded half-up,
    clipped to ``0..255`` and returned as ``uint8``; otherwise it is returned as float64.
    """
    indices, weights = contributions(image.shape[axis], out_len, scale, antialias)
    out = apply_taps(image, axis, indices, weights)
    if to_uint8:
        out += 0.5
        np.floor(out, out=out)
        np.clip(out, 0, 255, out=out)
        out = out.astype(np.uint8)
    return out


def imresize(
    image: np.ndarray,
    scale: float | None = None,
    output_shape: tuple[int, int] | None = None,
    antialias: bool = True,
) -> np.ndarray:
    """Bicubic resize exactly as (older) MATLAB ``imresize(image, ..., 'bicubic')``.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` array, ``uint8`` or floating point.
        scale: Scale factor applied to both dimensions; output size ``ceil(in * scale)``.
        output_shape: Output ``(height, width)``; the per-dimension scale is then
            ``out / in``. Give exactly one of ``scale`` and ``output_shape``.
        antialias: Widen the kernel when downscaling (MATLAB's default ``true``).

    Returns:
        The resized image. ``uint8`` input gives ``uint8`` output, rounded half-up and
        clipped after each 1-D pass as MATLAB does; floating input gives float64 output,
        neither rounded nor clipped.

    Raises:
        ValueError: On a wrong ``ndim``, an empty image, an unsupported dtype, a
            non-positive scale or output size, or when not exactly one of ``scale`` and
            ``output_shape`` is given.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {image.shape}")
    if image.size == 0:
        raise ValueError(f"image is empty (shape {image.shape})")
    is_uint8 = image.dtype == np.uint8
    if not is_uint8 and not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"image dtype must be uint8 or floating point, got {image.dtype}")
    if (scale is None) == (output_shape is None):
        raise ValueError("give exactly one of scale and output_shape")

    in_shape = image.shape[:2]
    if scale is not None:
        if not scale > 0 or not math.isfinite(scale):
            raise ValueError(f"scale must be positive and finite, got {scale}")
        scales = (float(scale), float(scale))
        out_shape = tuple(math.ceil(scale * n) for n in in_shape)
    else:
        assert output_shape is not None  # exactly one of scale and output_shape is given
        if len(output_shape) != 2:
            raise ValueError(f"output_shape must be (height, width), got {output_shape}")
        out_shape = tuple(int(n) for n in output_shape)
        if min(out_shape) < 1:
            raise ValueError(f"output_shape must be positive, got {output_shape}")
        scales = (out_shape[0] / in_shape[0], out_shape[1] / in_shape[1])

    # MATLAB: [~, order] = sort(scale) -- stable, so rows first on a tie.
    order = (0, 1) if scales[0] <= scales[1] else (1, 0)
    out = image if is_uint8 else image.astype(np.float64, copy=False)
    for axis in order:
        out = _resize_axis(out, axis, out_shape[axis], scales[axis], antialias, is_uint8)
    return np.ascontiguousarray(out)


def modcrop(image: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right so that height and width are multiples of ``scale``.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` array.
        scale: Positive integer.

    Returns:
        The top-left ``(H - H % scale, W - W % scale)`` part (a view).

    Raises:
        ValueError: On a non-positive or non-integer scale, a wrong ``ndim``, or an image
            smaller than ``scale``.
    """
    image = np.asarray(image)
    if isinstance(scale, bool) or int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    scale = int(scale)
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {image.shape}")
    h, w = image.shape[:2]
    if h < scale or w < scale:
        raise ValueError(f"image of shape {image.shape} is smaller than scale {scale}")
    return image[: h - h % scale, : w - w % scale]


def degrade(hr: np.ndarray, scale: int) -> np.ndarray:
    """The standard bicubic degradation: ``imresize(modcrop(hr, scale), 1/scale)``.

    Args:
        hr: High-resolution ``(H, W)`` or ``(H, W, C)`` image, ``uint8`` or float.
        scale: Positive integer downscaling factor.

    Returns:
        The low-resolution image of shape ``(H // scale, W // scale[, C])``, same dtype
        convention as :func:`imresize`.
    """
    cropped = modcrop(hr, scale)
    return imresize(cropped, 1 / int(scale))
