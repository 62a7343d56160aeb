"""MATLAB-compatible bicubic: its kernel, its taps and every way they are applied.

The one home of the bicubic maths; ``resize.imresize``, ``models.Bicubic``, the colour fast
path, tiling, ONNX export and the video chroma all take it from here.

* :func:`cubic` is Keys' kernel with ``a = -0.5`` and :func:`contributions` MATLAB's taps and
  weights for a 1-D resize of any factor (see ``subpixel.resize`` for the conventions);
  :func:`apply_taps` runs them along one axis of an array.
* At an integer scale ``r`` the taps are periodic: output pixel ``r q + p`` takes the same 5
  weights from LR pixels ``q - 2 .. q + 2`` for every ``q`` (:func:`phase_weights`), edge pixels
  replicated. :func:`upscale_axis` (torch) and :func:`upscale_band_cv2` (OpenCV's SIMD filters)
  apply them phase by phase, with no index tensors.
* :func:`sited_phase_weights` is the same kernel read at a shifted grid, for 4:2:0 chroma whose
  samples are not centred (``subpixel.pipeline.video``).

Example:
    >>> phase_weights(2).shape
    (2, 5)
"""

from __future__ import annotations

import functools
import importlib
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "REACH",
    "Taps",
    "apply_taps",
    "contributions",
    "cubic",
    "edge_pad_cv2",
    "phase_taps",
    "phase_weights",
    "sited_phase_weights",
    "upscale_axis",
    "upscale_band_cv2",
]

_KERNEL_WIDTH = 4.0

#: LR pixels on each side that an output pixel's taps reach at an integer scale.
REACH = 2


# --------------------------------------------------------------------------- #
# The kernel and MATLAB's taps (any factor)
# --------------------------------------------------------------------------- #


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


def apply_taps(
    image: np.ndarray, axis: int, indices: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """``out[i] = sum_k weights[i, k] * image[indices[i, k]]`` along ``axis``, tap by tap.

    Accumulated in the dtype of ``weights`` (float64 for ``imresize``, float32 for tiles), in
    MATLAB's order. Gathering in the image's own dtype (uint8) is cheaper than converting the
    whole image first; the products are the same.
    """
    out_len = weights.shape[0]
    moved = np.moveaxis(image, axis, 0)
    wshape = (out_len,) + (1,) * (moved.ndim - 1)
    out = np.empty((out_len, *moved.shape[1:]), dtype=weights.dtype)
    tmp = np.empty_like(out)
    for k in range(indices.shape[1]):
        gathered = np.take(moved, indices[:, k], axis=0)
        if k == 0:
            np.multiply(gathered, weights[:, k].reshape(wshape), out=out)
        else:
            np.multiply(gathered, weights[:, k].reshape(wshape), out=tmp)
            out += tmp
    return np.moveaxis(out, 0, axis)


# --------------------------------------------------------------------------- #
# Integer scales: one 5-tap filter per output phase
# --------------------------------------------------------------------------- #


@functools.cache
def phase_weights(scale: int) -> np.ndarray:
    """(r, 5) float64: output phase ``p`` of LR pixel ``q`` is ``sum_k w[p, k] x[q - 2 + k]``.

    At an integer scale MATLAB's bicubic is periodic: output pixel ``r q + p`` takes the same
    weights from LR pixels ``q - 2 .. q + 2`` for every ``q``, with indices clamped to the
    image (edge replication) at the borders. The weights are read off ``contributions`` far
    from the borders, where nothing is clamped. Read-only.

    Example:
        >>> phase_weights(2).shape
        (2, 5)
    """
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    q = 2 * REACH  # rows q - 2 .. q + 2 of a (2q + 1)-row input are all in range
    indices, weights = contributions(2 * q + 1, (2 * q + 1) * scale, float(scale))
    table = np.zeros((scale, 2 * REACH + 1))
    for phase in range(scale):
        row = q * scale + phase
        for index, weight in zip(indices[row], weights[row], strict=True):
            if weight != 0.0:  # only rows q - 2 .. q + 2 have nonzero weights, at any scale
                table[phase, int(index) - q + REACH] += float(weight)
    table.setflags(write=False)
    return table


Taps = tuple[tuple[tuple[int, float], ...], ...]


def phase_taps(scale: int) -> Taps:
    """``phase_weights`` as plain numbers: per phase, (offset into the padded input, weight)
    for the nonzero weights only (even scales have a zero tap in every phase)."""
    return tuple(
        tuple((k, w) for k, w in enumerate(weights.tolist()) if w != 0.0)
        for weights in phase_weights(scale)
    )


def upscale_axis(x: Tensor, taps: Taps, dim: int) -> Tensor:
    """MATLAB bicubic along one dimension of ``x``, phase by phase (``taps = phase_taps(r)``).

    Edge padding by 2 and, for each of the r output phases, a weighted sum of 5 shifted
    views: the whole pass is 5 r multiply-adds per input value with no index tensors, and
    the phases are interleaved by one ``stack``. Float rounding aside it equals the tap
    gather of ``contributions`` (tests hold it to 1e-12 in float64).
    """
    dim = dim % x.dim()
    if dim < x.dim() - 2:
        raise ValueError("upscale_axis works along one of the last two dimensions")
    length = x.shape[dim]
    # F.pad lists the last dimension first; "replicate" is MATLAB's index clamping.
    padding = (REACH, REACH, 0, 0) if dim == x.dim() - 1 else (0, 0, REACH, REACH)
    padded = F.pad(x, padding, mode="replicate")
    phases = []
    for (k0, w0), *rest in taps:
        acc = padded.narrow(dim, k0, length) * w0
        for k, weight in rest:
            acc.add_(padded.narrow(dim, k, length), alpha=weight)
        phases.append(acc)
    return torch.stack(phases, dim=dim + 1).flatten(dim, dim + 1)


@functools.cache
def _cv2() -> Any:
    """OpenCV (the optional ``peers`` extra); callers check that it is installed."""
    return importlib.import_module("cv2")


def edge_pad_cv2(plane: np.ndarray) -> np.ndarray:
    """(H, W) float32 -> (H + 4, W + 4), edge pixels replicated: ``upscale_band_cv2``'s input."""
    cv2 = _cv2()
    return cv2.copyMakeBorder(plane, REACH, REACH, REACH, REACH, cv2.BORDER_REPLICATE)


def upscale_band_cv2(padded: np.ndarray, scale: int, top: int, bottom: int) -> np.ndarray:
    """LR rows ``top:bottom`` of an edge-padded plane (``edge_pad_cv2``) upscaled:
    (r (bottom - top), r W) float32.

    Each output phase is a 1-D 5-tap filter. Rows: r vertical filters, interleaved row by
    row into (r rows, W + 4), still at LR width. Columns: r horizontal filters of that,
    interleaved by ``merge`` (phase j of column x is channel j of pixel x). ``filter2D``
    with a 1-D kernel, not ``sepFilter2D``, which would make a second, identity pass.
    """
    cv2 = _cv2()
    rows, width = bottom - top, padded.shape[1] - 2 * REACH
    weights = phase_weights(scale).astype(np.float32)
    band = padded[top : bottom + 2 * REACH]

    def correlate(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
        # anchor (0, 0): output x reads padded x .. x + 4, i.e. input x - 2 .. x + 2; the
        # last 4 outputs run off the band and are cut off.
        return cv2.filter2D(image, -1, kernel, anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)

    phases = [correlate(band, w[:, None])[:rows] for w in weights]  # r x (rows, W + 4)
    tall = np.stack(phases, axis=1).reshape(scale * rows, width + 2 * REACH)
    columns = [correlate(tall, w[None, :])[:, :width] for w in weights]  # r x (r rows, W)
    return cv2.merge(columns).reshape(scale * rows, scale * width)


def sited_phase_weights(scale: int, shift: float) -> tuple[np.ndarray, int, int]:
    """Phase filters of a centred resize by ``scale`` read ``shift`` LR pixels further right.

    HR sample ``r i + p`` reads LR at ``i + (p + 1/2) / r - 1/2 + shift``, so the taps,
    relative to ``i``, repeat with period r: ``out[r i + p] = sum_k w[p, k] x[i - before + k]``
    with edges replicated. Returns ``(w, before, after)``, ``w`` (r, K) float64 with rows
    summing to one.
    """
    x = (np.arange(scale) + 0.5) / scale - 0.5 + shift  # (r,)
    first = int(np.floor(x).min()) - 1
    last = int(np.floor(x).max()) + 2
    taps = np.arange(first, last + 1)  # (K,) offsets from i
    weights = cubic(x[:, None] - taps[None, :])  # (r, K); zero beyond the support
    weights /= weights.sum(axis=1, keepdims=True)
    return weights, -first, last
