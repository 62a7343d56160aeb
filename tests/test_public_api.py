from __future__ import annotations

import subpixel


def test_public_api_is_listed_and_importable() -> None:
    assert set(subpixel.__all__) == {
        "ImageError",
        "ModelCard",
        "ModelError",
        "ScaleError",
        "SubpixelError",
        "Upscaler",
        "__version__",
        "load_model",
        "save_weights",
        "upscale_array",
        "upscale_image",
        "upscale_on_ray",
        "upscale_video",
        "export_onnx",
    }
    for name in subpixel.__all__:
        assert hasattr(subpixel, name), name


def test_optional_features_load_on_first_use() -> None:
    import pytest

    pytest.importorskip("av")
    pytest.importorskip("onnxscript")
    from subpixel.export import export_onnx
    from subpixel.pipeline.cluster import upscale_on_ray
    from subpixel.pipeline.video import upscale_video

    assert subpixel.upscale_video is upscale_video
    assert subpixel.export_onnx is export_onnx
    assert subpixel.upscale_on_ray is upscale_on_ray
    with pytest.raises(AttributeError):
        _ = subpixel.no_such_thing
