"""subpixel: fast super-resolution with LR-space networks (ESPCN, FSRCNN, SRCNN).

``load_model`` returns an ``Upscaler``: the network with its card, the fastest exact engine
on this machine and the precision its card allows, behind one call. ``upscale_on_ray`` runs
a big batch of files on a Ray cluster (the ``ray`` extra).

Example:
    >>> import subpixel
    >>> upscaler = subpixel.load_model("bicubic", scale=3)
    >>> from PIL import Image
    >>> upscaler(Image.new("RGB", (10, 8))).size
    (30, 24)
    >>> subpixel.upscale_image(Image.new("RGB", (10, 8)), upscaler).size
    (30, 24)
"""

from typing import Any

from subpixel.errors import ImageError, ModelError, ScaleError, SubpixelError
from subpixel.upscaler import Upscaler, load_model, upscale_array, upscale_image
from subpixel.weights import ModelCard, save_weights

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Video (PyAV), ONNX export and Ray are optional extras: import them on first use only.
    if name == "upscale_video":
        from subpixel.pipeline.video import upscale_video

        return upscale_video
    if name == "export_onnx":
        from subpixel.export import export_onnx

        return export_onnx
    if name == "upscale_on_ray":
        from subpixel.pipeline.cluster import upscale_on_ray

        return upscale_on_ray
    raise AttributeError(f"module 'subpixel' has no attribute {name!r}")


__all__ = [
    "ImageError",
    "ModelCard",
    "ModelError",
    "ScaleError",
    "SubpixelError",
    "Upscaler",
    "__version__",
    "export_onnx",
    "load_model",
    "save_weights",
    "upscale_array",
    "upscale_image",
    "upscale_on_ray",
    "upscale_video",
]
