"""subpixel: fast super-resolution with LR-space networks (ESPCN, FSRCNN, SRCNN).

Example:
    >>> import subpixel
    >>> model = subpixel.load_model("bicubic", scale=3)
    >>> from PIL import Image
    >>> subpixel.upscale_image(Image.new("RGB", (10, 8)), model).size
    (30, 24)
"""

from subpixel.errors import ImageError, ModelError, ScaleError, SubpixelError
from subpixel.inference import upscale_image
from subpixel.weights import ModelCard, load_model, save_weights

__version__ = "0.1.0"

__all__ = [
    "ImageError",
    "ModelCard",
    "ModelError",
    "ScaleError",
    "SubpixelError",
    "__version__",
    "load_model",
    "save_weights",
    "upscale_image",
]
