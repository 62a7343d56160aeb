"""Limits that more than one part of subpixel enforces, defined once."""

from __future__ import annotations

__all__ = ["MAX_SCALE"]

#: The largest total scale accepted (``upscale_image``, ``--scale``, bicubic models); beyond
#: it almost all of the output is interpolation.
MAX_SCALE = 16
