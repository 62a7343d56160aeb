"""The image pipeline's arithmetic around the network, in as few passes over the pixels as we
could make it.

Upscaling an RGB image with a luminance network is: Y, Cb and Cr from RGB; the network on Y;
MATLAB bicubic on Cb and Cr; RGB back from the three; rounding and clipping to 8 bits. Done
plainly (float64 matrices, a gathering bicubic, one pass per step) that took as long as the
network. Here the steps are merged by linearity:

* **LR side, one matrix product.** From the input values (0..peak) one 4 x 3 matrix and an
  offset give Y on the network's [0, 1] scale and, for each output colour k, its *chroma
  term* ``c_k = A_k . (Cb, Cr) + b_k`` already on the output's 0..out_peak scale: RGB from
  YCbCr is ``g Y + c_k`` with one gain ``g`` per colour.
* **Chroma by MATLAB bicubic, phase by phase.** Bicubic commutes with affine maps (its
  weights sum to one), so upscaling the three chroma terms equals upscaling Cb and Cr and
  applying the matrix afterwards. At an integer scale every output phase takes the same 5
  weights from its neighbourhood (``bicubic.phase_weights``): a 1-D filter per phase,
  no gathering.
* **Two planes, not three.** The chroma terms are affine in (Cb, Cr), so green's is an
  affine mix of red's and blue's (``green_from_red_blue``), before or after the bicubic.
* **HR side, one pass per colour.** ``out_k = round(clip(g_k * Y_sr + c_k))`` straight into
  the output type (``finish``), then the planes are interleaved once.
* **Bands of rows on every core.** OpenCV's filters and ``addWeighted`` run on one thread,
  so ``rgb_from_luma`` cuts the HR side into bands of rows, spread over OpenCV's threads,
  small enough that a band's planes stay in cache from one step to the next.

The maths is that of ``subpixel.colour`` and ``subpixel.models.Bicubic``, to float rounding
(float32 here; ``tests/engines/test_engines.py`` compares both). With OpenCV installed (the
``peers`` extra) the HR-side steps run as OpenCV's SIMD filters and ``addWeighted`` with
saturation; without it, as numpy and torch with the same results to float rounding. OpenCV
rounds half to even, as ``np.rint`` does.

Example:
    >>> import numpy as np
    >>> rgb = np.full((2, 3, 3), 128, np.uint8)
    >>> y, chroma = split_luma(rgb, peak=255.0, out_peak=255.0)
    >>> y.shape, len(chroma), chroma[0].shape
    ((2, 3), 3, (2, 3))
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from subpixel.bicubic import edge_pad_cv2, phase_taps, upscale_axis, upscale_band_cv2
from subpixel.colour import RGB_TO_YCBCR_MATRIX, YCBCR_OFFSET

cv2: Any
try:  # optional (the ``peers`` extra): the fast kernels
    cv2 = importlib.import_module("cv2")
except ImportError:  # the numpy/torch fallback; tests switch HAVE_OPENCV off to check it
    cv2 = None

__all__ = [
    "HAVE_OPENCV",
    "bicubic_planes",
    "finish",
    "green_from_red_blue",
    "luma_gains",
    "rgb_from_luma",
    "split_luma",
]

#: Whether OpenCV's kernels are used (tests switch it off to check the fallback).
HAVE_OPENCV = cv2 is not None

_YCBCR_TO_RGB = np.linalg.inv(RGB_TO_YCBCR_MATRIX)


def _split_matrix_float64(peak: float, out_peak: float) -> tuple[np.ndarray, np.ndarray]:
    """(4, 3) matrix and (4,) offset: input values -> Y in [0, 1], chroma terms.

    Row 0 is MATLAB's Y / 255 for RGB / peak. Rows 1..3 are the chroma terms of R, G and B
    on the 0..out_peak scale: ``out_peak * T^-1[k, 1:] (255 (Cb, Cr) - (128, 128))`` minus
    the luma offset's share ``out_peak * T^-1[k, 0] * 16``.
    """
    luma = RGB_TO_YCBCR_MATRIX[0] / (255.0 * peak)
    # 255 (Cb, Cr) = T[1:] rgb / peak + offset[1:]; RGB = T^-1 (255 YCbCr - offset).
    inverse = out_peak * _YCBCR_TO_RGB
    chroma = inverse[:, 1:] @ RGB_TO_YCBCR_MATRIX[1:] / peak
    chroma_offset = inverse[:, 1:] @ YCBCR_OFFSET[1:] - inverse @ YCBCR_OFFSET
    return np.vstack([luma, chroma]), np.concatenate([[YCBCR_OFFSET[0] / 255.0], chroma_offset])


@functools.cache
def _split_matrix(peak: float, out_peak: float) -> tuple[np.ndarray, np.ndarray]:
    """``_split_matrix_float64`` in float32, the offset as a (4, 1) column."""
    matrix, offset = _split_matrix_float64(peak, out_peak)
    return matrix.astype(np.float32), offset.astype(np.float32)[:, None]


@functools.cache
def green_from_red_blue(out_peak: float) -> tuple[float, float, float]:
    """``(a, b, c)`` with green's chroma term ``a * red's + b * blue's + c``, exactly.

    The three chroma terms are affine in the two chroma planes (Cb, Cr), and red's and
    blue's are independent, so green's follows from them; since bicubic commutes with
    affine maps, it also holds after upscaling. Only two planes then need the bicubic.
    """
    matrix, offset = _split_matrix_float64(1.0, out_peak)
    red, green, blue = matrix[1:]
    (a, b), *_ = np.linalg.lstsq(np.stack([red, blue], axis=1), green, rcond=None)
    return float(a), float(b), float(offset[2] - a * offset[1] - b * offset[3])


def luma_gains(out_peak: float) -> tuple[float, float, float]:
    """``g_k``: R, G and B on the 0..out_peak scale are ``g_k Y + c_k`` for Y in [0, 1].

    All three are ``255 out_peak / 219`` (a studio-swing Y step), kept per colour to stay
    the exact matrix inverse.
    """
    gains = out_peak * 255.0 * _YCBCR_TO_RGB[:, 0]
    return float(gains[0]), float(gains[1]), float(gains[2])


def split_luma(
    rgb: np.ndarray, peak: float, out_peak: float
) -> tuple[np.ndarray, list[np.ndarray]]:
    """(H, W, 3) RGB values in 0..peak -> Y (H, W) in [0, 1] and three (H, W) chroma terms.

    One float32 matrix product over the LR pixels; ``out_peak`` is the scale of the output
    the chroma terms will be added into (``finish``).
    """
    height, width = rgb.shape[:2]
    matrix, offset = _split_matrix(float(peak), float(out_peak))
    values = np.asarray(rgb, dtype=np.float32)
    if HAVE_OPENCV:
        # Two transforms, not one with four outputs: OpenCV's SIMD kernels cover one and
        # three output channels (0.05 + 0.1 ms at 640x360, against 1.8 ms for four).
        affine = np.hstack([matrix, offset])
        y = cv2.transform(values, affine[:1])
        return y, list(cv2.split(cv2.transform(values, affine[1:])))
    stacked = matrix @ values.reshape(-1, 3).T  # (4, H W): BLAS reads the transposed view
    stacked += offset
    y, *chroma = stacked.reshape(4, height, width)
    return y, chroma


def bicubic_planes(planes: Sequence[np.ndarray], scale: int) -> list[np.ndarray]:
    """MATLAB bicubic by an integer ``scale`` of (H, W) float32 planes -> (rH, rW) planes.

    Equal to ``models.Bicubic`` to float rounding: rows first, then columns, edge pixels
    replicated.
    """
    if not HAVE_OPENCV:
        with torch.inference_mode():
            x = torch.from_numpy(np.stack(planes).astype(np.float32, copy=False))[None]
            taps = phase_taps(scale)
            rows = upscale_axis(x, taps, dim=-2)
            return list(upscale_axis(rows, taps, dim=-1)[0].numpy())
    return [_bicubic_plane_cv2(np.asarray(plane, np.float32), scale) for plane in planes]


def _bicubic_plane_cv2(plane: np.ndarray, scale: int) -> np.ndarray:
    """One (H, W) plane by OpenCV's SIMD filters, in one band."""
    return upscale_band_cv2(edge_pad_cv2(plane), scale, 0, plane.shape[0])


def rgb_from_luma(
    y: np.ndarray,
    chroma: Sequence[np.ndarray],
    scale: int,
    out_peak: float,
    dtype: type[np.generic] | np.dtype[Any],
) -> np.ndarray:
    """(rH, rW, 3) RGB of ``dtype`` from the network's (rH, rW) Y and ``split_luma``'s chroma.

    ``finish`` of ``y`` with the chroma terms upscaled by ``bicubic_planes``, in fewer
    passes: with OpenCV only red's and blue's terms are upscaled (green's follows from
    them, ``green_from_red_blue``) and the work is cut into bands of rows that run on
    OpenCV's number of threads (its kernels here are single-threaded).
    """
    dtype = np.dtype(dtype)
    gains = luma_gains(out_peak)
    if not HAVE_OPENCV:
        return finish([y] * 3, gains, bicubic_planes(chroma, scale), dtype)
    height, width = chroma[0].shape
    red, blue = (edge_pad_cv2(np.asarray(chroma[k], np.float32)) for k in (0, 2))
    a, b, c = green_from_red_blue(float(out_peak))
    depth = _cv2_depth(dtype)
    out = np.empty((scale * height, scale * width, 3), dtype)

    def band(top: int, bottom: int) -> None:
        rows = slice(scale * top, scale * bottom)
        red_term = upscale_band_cv2(red, scale, top, bottom)
        blue_term = upscale_band_cv2(blue, scale, top, bottom)
        green_term = cv2.addWeighted(red_term, a, blue_term, b, c)
        terms = (red_term, green_term, blue_term)
        channels = [
            cv2.addWeighted(y[rows], gain, term, 1.0, 0.0, dtype=depth)
            for gain, term in zip(gains, terms, strict=True)
        ]
        cv2.merge(channels, dst=out[rows])

    _in_bands(band, height)
    return out


@functools.cache
def _pool(pid: int) -> ThreadPoolExecutor:
    """The band threads of process ``pid``: a forked child gets its own, since the
    parent's threads do not exist there."""
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="fastpath")


# LR rows a band works on at a time: at x3 and 1920 wide, each HR plane of a band is 1.5 MB,
# so a band's planes stay in cache between the steps. Measured at 640x360 -> x3 (Zen 3):
# 9.5 ms unbanded in three planes; two planes 8 ms; bands of 64 rows 7 ms, on two threads 5.
_BAND_ROWS = 64


def _in_bands(work: Callable[[int, int], None], rows: int) -> None:
    """``work(top, bottom)`` over ``rows`` in bands of at most ``_BAND_ROWS``, spread over
    OpenCV's number of threads (the calling thread takes the last share)."""
    parts = max(1, min(cv2.getNumThreads(), rows))
    edges = [rows * k // parts for k in range(parts + 1)]

    def chunks(top: int, bottom: int) -> None:
        for start in range(top, bottom, _BAND_ROWS):
            work(start, min(start + _BAND_ROWS, bottom))

    pool = _pool(os.getpid())
    futures = [pool.submit(chunks, edges[k], edges[k + 1]) for k in range(parts - 1)]
    chunks(edges[-2], edges[-1])
    for future in futures:
        future.result()


def _cv2_depth(dtype: np.dtype[Any]) -> int:
    depths = {np.dtype(np.uint8): cv2.CV_8U, np.dtype(np.uint16): cv2.CV_16U}
    return depths.get(dtype, cv2.CV_32F)


def finish(
    planes: Sequence[np.ndarray],
    gains: Sequence[float],
    addends: Sequence[np.ndarray | float],
    dtype: type[np.generic] | np.dtype[Any],
) -> np.ndarray:
    """(H, W, K) of ``dtype``: channel k is ``gains[k] * planes[k] + addends[k]``.

    Integer types are rounded half to even and clipped to their range (``np.rint`` and
    ``np.clip``), in the same pass; float32 is left unclipped. ``planes`` are (H, W)
    float32 (the same plane may be given for several channels); an addend is a plane or a
    number.
    """
    dtype = np.dtype(dtype)
    if HAVE_OPENCV:
        depth = _cv2_depth(dtype)
        channels = []
        for plane, gain, addend in zip(planes, gains, addends, strict=True):
            if isinstance(addend, np.ndarray):
                channel = cv2.addWeighted(plane, gain, addend, 1.0, 0.0, dtype=depth)
            else:
                channel = cv2.addWeighted(plane, gain, plane, 0.0, float(addend), dtype=depth)
            channels.append(channel)
        merged = channels[0][..., None] if len(channels) == 1 else cv2.merge(channels)
        return np.asarray(merged, dtype=dtype)
    height, width = planes[0].shape
    out = np.empty((height, width, len(planes)), dtype)
    for k, (plane, gain, addend) in enumerate(zip(planes, gains, addends, strict=True)):
        value = plane * np.float32(gain)
        value += addend if isinstance(addend, np.ndarray) else np.float32(addend)
        if np.issubdtype(dtype, np.integer):
            np.rint(value, out=value)
            np.clip(value, 0, np.iinfo(dtype).max, out=value)
        out[..., k] = value
    return out
