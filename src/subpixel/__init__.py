"""subpixel: fast super-resolution with LR-space networks."""

__version__ = "0.1.0"
