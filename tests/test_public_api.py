from __future__ import annotations

import subpixel


def test_public_api_is_listed_and_importable() -> None:
    assert set(subpixel.__all__) == {
        "ImageError",
        "ModelCard",
        "ModelError",
        "ScaleError",
        "SubpixelError",
        "__version__",
        "load_model",
        "save_weights",
        "upscale_image",
    }
    for name in subpixel.__all__:
        assert hasattr(subpixel, name), name
