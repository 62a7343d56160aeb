"""BT.601 studio-swing YCbCr, as MATLAB's ``rgb2ycbcr`` / ``ycbcr2rgb``.

With ``R, G, B`` in ``[0, 1]``::

    Y  = (16  + 65.481 R + 128.553 G +  24.966 B) / 255
    Cb = (128 - 37.797 R -  74.203 G + 112.0   B) / 255
    Cr = (128 + 112.0  R -  93.786 G -  18.214 B) / 255

so that ``Y`` spans ``[16, 235] / 255`` and ``Cb, Cr`` span ``[16, 240] / 255``. The float
functions work on ``(H, W, 3)`` arrays in ``[0, 1]`` and never clip; callers clip.
:func:`luma_uint8_matlab` reproduces MATLAB's ``uint8`` path, which rounds ``Y`` to integers.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "RGB_TO_YCBCR_MATRIX",
    "YCBCR_OFFSET",
    "luma_uint8_matlab",
    "rgb_to_y",
    "rgb_to_ycbcr",
    "ycbcr_to_rgb",
]

#: MATLAB's ``origT`` (Poynton, eq. 9.6): maps RGB in [0, 1] to YCbCr on the 0..255 scale.
RGB_TO_YCBCR_MATRIX = np.array(
    [
        [65.481, 128.553, 24.966],
        [-37.797, -74.203, 112.0],
        [112.0, -93.786, -18.214],
    ],
    dtype=np.float64,
)
RGB_TO_YCBCR_MATRIX.setflags(write=False)

#: MATLAB's ``origOffset`` on the 0..255 scale.
YCBCR_OFFSET = np.array([16.0, 128.0, 128.0], dtype=np.float64)
YCBCR_OFFSET.setflags(write=False)

_YCBCR_TO_RGB_MATRIX = np.linalg.inv(RGB_TO_YCBCR_MATRIX)


def _check_rgb(image: np.ndarray, what: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"{what} must have shape (H, W, 3), got {image.shape}")
    return image


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """Convert float RGB in ``[0, 1]`` to studio-swing YCbCr in ``[0, 1]`` scale.

    Args:
        rgb: ``(H, W, 3)`` array with values in ``[0, 1]``.

    Returns:
        ``(H, W, 3)`` float64 YCbCr, each channel divided by 255 (``Y`` in
        ``[16/255, 235/255]`` for in-gamut input). Not clipped.

    Raises:
        ValueError: If the shape is not ``(H, W, 3)``.
    """
    rgb = _check_rgb(rgb, "rgb").astype(np.float64, copy=False)
    return (rgb @ RGB_TO_YCBCR_MATRIX.T + YCBCR_OFFSET) / 255.0


def ycbcr_to_rgb(ycbcr: np.ndarray) -> np.ndarray:
    """Invert :func:`rgb_to_ycbcr` with the exact matrix inverse.

    Args:
        ycbcr: ``(H, W, 3)`` YCbCr array on the ``[0, 1]`` scale of :func:`rgb_to_ycbcr`.

    Returns:
        ``(H, W, 3)`` float64 RGB. **Not clipped**: YCbCr values outside the RGB gamut map
        outside ``[0, 1]``; callers clip (e.g. before quantising to 8 bits).

    Raises:
        ValueError: If the shape is not ``(H, W, 3)``.
    """
    ycbcr = _check_rgb(ycbcr, "ycbcr").astype(np.float64, copy=False)
    return (ycbcr * 255.0 - YCBCR_OFFSET) @ _YCBCR_TO_RGB_MATRIX.T


def rgb_to_y(rgb: np.ndarray) -> np.ndarray:
    """The luma channel of :func:`rgb_to_ycbcr` only.

    Args:
        rgb: ``(H, W, 3)`` float array with values in ``[0, 1]``.

    Returns:
        ``(H, W)`` float64 ``Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255``.

    Raises:
        ValueError: If the shape is not ``(H, W, 3)``.
    """
    rgb = _check_rgb(rgb, "rgb").astype(np.float64, copy=False)
    return (rgb @ RGB_TO_YCBCR_MATRIX[0] + YCBCR_OFFSET[0]) / 255.0


def luma_uint8_matlab(rgb_uint8: np.ndarray) -> np.ndarray:
    """``Y`` exactly as MATLAB's ``rgb2ycbcr`` returns it for a ``uint8`` image.

    MATLAB computes ``imlincomb(T1, R, T2, G, T3, B, 16)`` in double with
    ``T = (1/255) * [65.481, 128.553, 24.966]`` on the 0..255 values, then rounds to the
    nearest integer (halves away from zero) and saturates to ``uint8``. That is
    ``round(16 + (65.481 R + 128.553 G + 24.966 B) / 255)``; the evaluation order here
    follows ``rgb2ycbcr.m``, which only matters for the rare colours whose exact value is
    a half-integer.

    Args:
        rgb_uint8: ``(H, W, 3)`` ``uint8`` RGB image.

    Returns:
        ``(H, W)`` ``uint8`` luma in ``[16, 235]``.

    Raises:
        ValueError: If the shape is not ``(H, W, 3)`` or the dtype is not ``uint8``.
    """
    rgb = _check_rgb(rgb_uint8, "rgb_uint8")
    if rgb.dtype != np.uint8:
        raise ValueError(f"rgb_uint8 must be uint8, got {rgb.dtype}")
    t = (1.0 / 255.0) * RGB_TO_YCBCR_MATRIX[0]
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = t[0] * r + t[1] * g + t[2] * b + YCBCR_OFFSET[0]
    return np.clip(np.floor(y + 0.5), 0, 255).astype(np.uint8)
