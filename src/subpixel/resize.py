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

Everything is computed in float64 to match MATLAB's doubles.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

__all__ = ["contributions", "cubic", "degrade", "imresize", "modcrop"]

_KERNEL_WIDTH = 4.0


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with ``a = -0.5``, as MATLAB's ``imresize``.

    Args:
        x: Sample positions (any shape).

    Returns:
        The kernel values, float64, same shape as ``x``.
    """
    absx = np.abs(np.asarray(x, dtype=np.float64))
    absx2 = absx * absx
    absx3 = absx2 * absx
    inner = (1.5 * absx3 - 2.5 * absx2 + 1.0) * (absx <= 1)
    outer = (-0.5 * absx3 + 2.5 * absx2 - 4.0 * absx + 2.0) * ((absx > 1) & (absx <= 2))
    return inner + outer


def contributions(
    in_len: int, out_len: int, scale: float, antialias: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Taps and weights of a 1-D MATLAB bicubic resize (MATLAB's ``contributions``).

    Output pixel ``i`` (0-based) is ``sum_k weights[i, k] * input[indices[i, k]]``.

    Args:
        in_len: Input length (pixels), positive.
        out_len: Output length (pixels), positive.
        scale: Scale factor ``out/in`` as the caller gives it (e.g. ``1/3``), positive.
        antialias: Widen the kernel by ``1/scale`` when downscaling (MATLAB's default).

    Returns:
        ``(indices, weights)``, both of shape ``(out_len, P)``: ``indices`` int64, 0-based and
        already clamped to ``[0, in_len - 1]``; ``weights`` float64, each row summing to one.
        Tap columns whose weights are zero for every output pixel are dropped.

    Raises:
        ValueError: If a length or the scale is not positive.
    """
    if in_len < 1 or out_len < 1:
        raise ValueError(f"lengths must be positive, got in_len={in_len}, out_len={out_len}")
    if not scale > 0 or not math.isfinite(scale):
        raise ValueError(f"scale must be positive and finite, got {scale}")
    scale = float(scale)
    width = _KERNEL_WIDTH
    kernel: Callable[[np.ndarray], np.ndarray] = cubic
    if scale < 1 and antialias:
        width = _KERNEL_WIDTH / scale

        def widened(t: np.ndarray) -> np.ndarray:
            return scale * cubic(scale * t)

        kernel = widened

    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = math.ceil(width) + 2
    ind = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    weights = kernel(u[:, None] - ind)
    weights = weights / weights.sum(axis=1, keepdims=True)
    indices = np.clip(ind, 1, in_len).astype(np.int64) - 1
    keep = np.any(weights != 0, axis=0)
    return np.ascontiguousarray(indices[:, keep]), np.ascontiguousarray(weights[:, keep])


def _resize_axis(
    image: np.ndarray, axis: int, out_len: int, scale: float, antialias: bool, to_uint8: bool
) -> np.ndarray:
    """One 1-D pass along ``axis``, accumulated in float64.

    ``image`` may be ``uint8`` or float64. With ``to_uint8`` the result is rounded half-up,
    clipped to ``0..255`` and returned as ``uint8``; otherwise it is returned as float64.
    """
    indices, weights = contributions(image.shape[axis], out_len, scale, antialias)
    moved = np.moveaxis(image, axis, 0)
    wshape = (out_len,) + (1,) * (moved.ndim - 1)
    out = np.empty((out_len, *moved.shape[1:]), dtype=np.float64)
    tmp = np.empty_like(out)
    # Accumulate tap by tap, in MATLAB's order. Gathering in the input dtype (uint8) is
    # cheaper than converting the whole image to float64 first; the products are the same.
    for k in range(indices.shape[1]):
        gathered = np.take(moved, indices[:, k], axis=0)
        if k == 0:
            np.multiply(gathered, weights[:, k].reshape(wshape), out=out)
        else:
            np.multiply(gathered, weights[:, k].reshape(wshape), out=tmp)
            out += tmp
    if to_uint8:
        out += 0.5
        np.floor(out, out=out)
        np.clip(out, 0, 255, out=out)
        out = out.astype(np.uint8)
    return np.moveaxis(out, 0, axis)


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
