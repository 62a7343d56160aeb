"""Upscaling images with a network: colour handling, alpha, 8/16-bit, PIL or numpy in and out.

Y-channel networks (``card.colour_space == "y"``) upscale the BT.601 studio-swing luminance
and bicubic upscales Cb/Cr, as the papers do; RGB networks take RGB. Grayscale images are
taken to studio-swing Y (as an RGB image with R = G = B would be), so a gray picture and its
RGB copy give the same result. Alpha is upscaled by bicubic. See ``subpixel.images`` for how
each Pillow mode is handled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar, overload

import numpy as np
import torch
from PIL import Image
from torch import nn

from subpixel.colour import rgb_to_ycbcr, ycbcr_to_rgb
from subpixel.errors import ImageError, ScaleError
from subpixel.models.bicubic import Bicubic

__all__ = ["model_traits", "upscale_array", "upscale_image"]

ImageLike = TypeVar("ImageLike", Image.Image, np.ndarray)

_CONVERTED_TO_RGB = ("CMYK", "YCbCr", "LAB", "HSV")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


@dataclass(frozen=True)
class ModelTraits:
    """What the pipeline needs to know about a network."""

    scale: int
    colour_space: str  # "y" or "rgb"


def model_traits(model: nn.Module) -> ModelTraits:
    """Scale and colour space from the model's card, or from its config for a bare network."""
    card = getattr(model, "card", None)
    if card is not None:
        return ModelTraits(card.scale, card.colour_space)
    config = getattr(model, "config", model)
    scale = getattr(config, "scale", None)
    channels = getattr(config, "channels", 1)
    if scale is None:
        raise ValueError("cannot tell the model's scale: give it a card or a config with .scale")
    return ModelTraits(int(scale), "y" if channels == 1 else "rgb")


def _device_of(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _run(model: nn.Module, planes: np.ndarray) -> np.ndarray:
    """(H, W, C) float32 -> network -> (rH, rW, C) float32."""
    device = _device_of(model)
    lr = torch.from_numpy(np.ascontiguousarray(planes.transpose(2, 0, 1)))[None].to(device)
    with torch.inference_mode():
        sr = model(lr)
    return sr[0].float().cpu().numpy().transpose(1, 2, 0)


def _bicubic(planes: np.ndarray, scale: int) -> np.ndarray:
    return _run(Bicubic(scale), planes)


def _upscale_colour(colour: np.ndarray, model: nn.Module, traits: ModelTraits) -> np.ndarray:
    """Float (H, W, 3) RGB or (H, W, 1) gray in [0, 1] -> the same at r times the size."""
    gray = colour.shape[-1] == 1
    if traits.colour_space == "rgb":
        rgb = np.repeat(colour, 3, axis=-1) if gray else colour
        sr = _run(model, rgb)
        return sr.mean(axis=-1, keepdims=True) if gray else sr
    if gray:
        # Studio-swing Y of an R = G = B pixel, and back.
        y = (16.0 + 219.0 * colour) / 255.0
        return (_run(model, y.astype(np.float32)) * 255.0 - 16.0) / 219.0
    ycbcr = rgb_to_ycbcr(colour).astype(np.float32)
    y = _run(model, ycbcr[..., :1])
    cbcr = _bicubic(ycbcr[..., 1:], traits.scale)
    return ycbcr_to_rgb(np.concatenate([y, cbcr], axis=-1)).astype(np.float32)


def upscale_array(planes: np.ndarray, model: nn.Module, *, has_alpha: bool = False) -> np.ndarray:
    """Upscale a float (H, W, C) array in [0, 1], C in {1, 3} plus an optional last alpha plane.

    Returns float32 (rH, rW, C) clipped to [0, 1].
    """
    traits = model_traits(model)
    colour, alpha = (planes[..., :-1], planes[..., -1:]) if has_alpha else (planes, None)
    if colour.shape[-1] not in (1, 3):
        raise ImageError(f"expected 1 or 3 colour channels, got {colour.shape[-1]}")
    if min(colour.shape[:2]) < 1:
        raise ImageError(f"image is empty: {colour.shape[1]}x{colour.shape[0]} pixels")
    out = _upscale_colour(colour.astype(np.float32), model, traits)
    if alpha is not None:
        out = np.concatenate([out, _bicubic(alpha.astype(np.float32), traits.scale)], axis=-1)
    return np.clip(out, 0.0, 1.0)


def _array_to_planes(array: np.ndarray) -> tuple[np.ndarray, bool, float]:
    """uint8/uint16 (H, W[, C]) -> float planes (H, W, C), whether the last is alpha, peak."""
    if array.dtype == np.uint8:
        peak = 255.0
    elif array.dtype == np.uint16:
        peak = 65535.0
    else:
        raise ImageError(f"arrays must be uint8 or uint16, got {array.dtype}")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 2, 3, 4):
        raise ImageError(f"arrays must be (H, W) or (H, W, C) with C in 1..4, got {array.shape}")
    has_alpha = array.shape[-1] in (2, 4)
    return array.astype(np.float32) / peak, has_alpha, peak


def _quantise(planes: np.ndarray, peak: float, dtype: type[np.generic]) -> np.ndarray:
    return np.rint(planes * peak).astype(dtype)


def _pil_to_array(image: Image.Image) -> tuple[np.ndarray, str]:
    """A Pillow image as a uint8/uint16 array, and the mode the result is returned in."""
    mode = image.mode
    if mode == "P":
        mode = "RGBA" if "transparency" in image.info else "RGB"
        image = image.convert(mode)
    elif mode == "1":
        mode, image = "L", image.convert("L")
    elif mode in _CONVERTED_TO_RGB:
        mode, image = "RGB", image.convert("RGB")
    if mode in ("L", "LA", "RGB", "RGBA"):
        return np.asarray(image), mode
    if mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image)
        if values.min() < 0 or values.max() > 65535:
            raise ImageError(f"{mode} image has values outside 0..65535")
        return values.astype(np.uint16), "I;16"
    raise ImageError(f"unsupported image mode {image.mode!r}")


@overload
def upscale_image(
    image: Image.Image, model: nn.Module, *, scale: int | None = None
) -> Image.Image: ...
@overload
def upscale_image(
    image: np.ndarray, model: nn.Module, *, scale: int | None = None
) -> np.ndarray: ...
def upscale_image(
    image: Image.Image | np.ndarray, model: nn.Module, *, scale: int | None = None
) -> Image.Image | np.ndarray:
    """Upscale a PIL image or a uint8/uint16 numpy array with ``model``; returns the same kind.

    Args:
        image: a PIL image (modes as in ``subpixel.images``) or an (H, W), (H, W, 1..4)
            uint8/uint16 array (2 or 4 channels: the last is alpha).
        model: a network from ``subpixel.load_model`` (or any with a card or config).
        scale: if given, must be the model's scale.

    Example:
        >>> import numpy as np, subpixel
        >>> model = subpixel.load_model("bicubic", scale=2)
        >>> subpixel.upscale_image(np.zeros((4, 6, 3), np.uint8), model).shape
        (8, 12, 3)
    """
    traits = model_traits(model)
    if scale is not None and scale != traits.scale:
        raise ScaleError(f"this is a x{traits.scale} model; x{scale} was asked for")
    if isinstance(image, Image.Image):
        array, _mode = _pil_to_array(image)
        out = upscale_image(array, model)
        # Pillow infers the mode from the array: L, LA, RGB, RGBA or I;16.
        return Image.fromarray(out)
    array = np.asarray(image)
    planes, has_alpha, peak = _array_to_planes(array)
    out = _quantise(upscale_array(planes, model, has_alpha=has_alpha), peak, array.dtype.type)
    return out.reshape(out.shape[:2]) if array.ndim == 2 else out
