"""Exceptions the library raises; the CLI turns each into one line on stderr."""

from __future__ import annotations


class SubpixelError(Exception):
    """Base class of every error subpixel raises on purpose."""


class ImageError(SubpixelError):
    """An input image is missing, empty, corrupt, of an unsupported kind or too large."""


class ModelError(SubpixelError):
    """A model name is unknown, or a weights file is missing, corrupt or not subpixel's."""


class ScaleError(SubpixelError):
    """The requested scale is one the model does not support."""


class MissingExtraError(SubpixelError, ImportError):
    """An optional feature's packages are not installed; the message names the extra.

    Also an ``ImportError``, so code that treats the feature as optional still catches it.
    """


class DeviceError(SubpixelError):
    """A device name that is unknown, or names a device this machine does not have."""
