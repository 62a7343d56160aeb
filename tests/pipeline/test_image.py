from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import subpixel
from subpixel import models
from subpixel.colour import rgb_to_ycbcr
from subpixel.errors import ImageError, ModelError, ScaleError
from subpixel.pipeline.image import MAX_SCALE, output_size
from subpixel.pipeline.tiling import TilingError
from subpixel.resize import imresize
from subpixel.upscaler import upscale_array
from subpixel.weights import ModelCard, describe


@pytest.fixture(scope="module")
def bicubic3() -> torch.nn.Module:
    return subpixel.load_model("bicubic", scale=3)


def _random_rgb(h: int = 9, w: int = 11, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_bicubic_model_on_rgb_matches_matlab_bicubic_per_channel(bicubic3: torch.nn.Module) -> None:
    # Y by the network + Cb/Cr by bicubic == bicubic on RGB, because both are linear.
    rgb = _random_rgb()
    ours = subpixel.upscale_image(rgb, bicubic3).astype(int)
    reference = np.clip(np.rint(imresize(rgb / 255.0, scale=3) * 255), 0, 255)
    assert np.abs(ours - reference).max() <= 1


def test_y_network_sees_studio_swing_luma_and_chroma_goes_by_bicubic() -> None:
    seen: list[torch.Tensor] = []

    class Probe(torch.nn.Module):
        def forward(self, lr: torch.Tensor) -> torch.Tensor:
            seen.append(lr)
            return torch.nn.functional.interpolate(lr, scale_factor=2, mode="nearest")

    # A network of its own class: its facts come from the card it is given.
    probe = subpixel.Upscaler(Probe(), ModelCard("bicubic", scale=2, channels=1), engine="torch")
    rgb = _random_rgb(5, 6)
    subpixel.upscale_image(rgb, probe)
    expected = rgb_to_ycbcr(rgb / 255.0)[..., 0]
    np.testing.assert_allclose(seen[0][0, 0].numpy(), expected, atol=1e-6)


def test_gray_and_its_rgb_copy_give_the_same_result() -> None:
    torch.manual_seed(0)
    net = models.build("espcn", scale=2).eval()
    describe(net, "espcn")
    gray = np.random.default_rng(1).integers(0, 256, (8, 9), dtype=np.uint8)
    from_gray = subpixel.upscale_image(gray, net).astype(int)
    from_rgb = subpixel.upscale_image(np.dstack([gray] * 3), net).astype(int)
    assert from_gray.shape == (16, 18)
    assert np.abs(from_rgb - from_gray[..., None]).max() <= 1


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("RGB", "RGB"),
        ("L", "L"),
        ("RGBA", "RGBA"),
        ("LA", "LA"),
        ("P", "RGB"),
        ("1", "L"),
        ("I;16", "I;16"),
        ("CMYK", "RGB"),
    ],
)
def test_pil_modes_follow_the_documented_policy(
    bicubic3: torch.nn.Module, mode: str, expected: str
) -> None:
    image = Image.new(mode, (5, 4))
    out = subpixel.upscale_image(image, bicubic3)
    assert (out.mode, out.size) == (expected, (15, 12))


def test_palette_with_transparency_keeps_alpha(bicubic3: torch.nn.Module) -> None:
    image = Image.new("P", (4, 4))
    image.info["transparency"] = 0
    assert subpixel.upscale_image(image, bicubic3).mode == "RGBA"


def test_alpha_is_upscaled_by_bicubic(bicubic3: torch.nn.Module) -> None:
    rgba = np.random.default_rng(2).integers(0, 256, (6, 7, 4), dtype=np.uint8)
    out = subpixel.upscale_image(rgba, bicubic3)
    reference = np.clip(imresize(rgba[..., 3] / 255.0, scale=3), 0, 1) * 255
    assert np.abs(out[..., 3] - reference).max() <= 0.5 + 1e-3


def test_sixteen_bit_keeps_its_precision(bicubic3: torch.nn.Module) -> None:
    values = (np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000 + 7).astype(np.uint16)
    out = subpixel.upscale_image(values, bicubic3)
    assert out.dtype == np.uint16
    # Values survive at 16-bit precision: a constant image comes back exact.
    flat = subpixel.upscale_image(np.full((4, 4), 12345, np.uint16), bicubic3)
    assert np.all(flat == 12345)
    assert len(np.unique(out)) > 256 or out.max() > 255


def test_numpy_in_numpy_out_with_the_same_layout(bicubic3: torch.nn.Module) -> None:
    assert subpixel.upscale_image(np.zeros((4, 5), np.uint8), bicubic3).shape == (12, 15)
    assert subpixel.upscale_image(np.zeros((4, 5, 1), np.uint8), bicubic3).shape == (12, 15, 1)
    assert subpixel.upscale_image(np.zeros((4, 5, 3), np.uint8), bicubic3).dtype == np.uint8


def test_bad_arrays_and_scales_are_refused(bicubic3: torch.nn.Module) -> None:
    with pytest.raises(ImageError, match="uint8 or uint16"):
        subpixel.upscale_image(np.zeros((4, 4, 3), np.float32), bicubic3)
    with pytest.raises(ImageError, match=r"C in 1\.\.4"):
        subpixel.upscale_image(np.zeros((4, 4, 5), np.uint8), bicubic3)
    with pytest.raises(ImageError, match="empty"):
        subpixel.upscale_image(np.zeros((0, 4, 3), np.uint8), bicubic3)
    with pytest.raises(ScaleError):
        subpixel.upscale_image(np.zeros((4, 4, 3), np.uint8), bicubic3, scale=0)
    with pytest.raises(ImageError, match="unsupported image mode"):
        subpixel.upscale_image(Image.new("F", (3, 3)), bicubic3)


@pytest.mark.parametrize(
    "scale", [0, -2, 0.5, 0.999, MAX_SCALE + 0.5, 100, float("nan"), float("inf"), True, "3"]
)
def test_scales_outside_the_rule_are_refused(bicubic3: torch.nn.Module, scale: object) -> None:
    with pytest.raises(ScaleError):
        subpixel.upscale_image(np.zeros((4, 4, 3), np.uint8), bicubic3, scale=scale)  # type: ignore[arg-type]


def test_output_size_is_the_input_times_the_scale_rounded_half_up() -> None:
    assert output_size(3, 5, 2.5, native=2) == (8, 13)  # 7.5 -> 8, 12.5 -> 13
    assert output_size(3, 5, None, native=4) == (12, 20)
    assert output_size(3, 5, 3, native=2) == (9, 15)
    assert output_size(150, 225, 1.5, native=2) == (225, 338)
    assert output_size(1, 1, MAX_SCALE, native=2) == (16, 16)


@pytest.mark.parametrize(("scale", "native"), [(2.5, 2), (1.5, 2), (1, 2), (4, 3), (3.3, 4)])
def test_non_native_scale_is_the_network_then_matlab_bicubic(scale: float, native: int) -> None:
    # Gray through a Y network: studio-swing Y, network, back, then imresize to the size.
    torch.manual_seed(0)
    net = models.build("espcn", scale=native).double().eval()
    gray = np.random.default_rng(4).random((7, 10, 1))
    out = upscale_array(gray.astype(np.float32), net, scale=scale)
    y = torch.from_numpy((16.0 + 219.0 * gray[..., 0]) / 255.0)[None, None]
    with torch.no_grad():
        sr = (net(y)[0, 0].numpy() * 255.0 - 16.0) / 219.0
    size = (int(7 * scale + 0.5), int(10 * scale + 0.5))
    reference = np.clip(imresize(sr, output_shape=size), 0, 1)
    assert out.shape == (*size, 1)
    np.testing.assert_allclose(out[..., 0], reference, atol=2e-6)


def test_non_native_scale_with_bicubic_matches_matlab_per_channel() -> None:
    rgb = _random_rgb(6, 8)
    model = subpixel.load_model("bicubic", scale=2)
    out = upscale_array(rgb / 255.0, model, scale=2.5)
    reference = np.clip(imresize(imresize(rgb / 255.0, scale=2), output_shape=(15, 20)), 0, 1)
    np.testing.assert_allclose(out, reference, atol=1e-5)


def test_tiled_integer_output_equals_untiled_and_pil_takes_the_options(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = subpixel.load_model("bicubic", scale=3)
    rgba = np.random.default_rng(5).integers(0, 256, (13, 17, 4), dtype=np.uint8)
    whole = subpixel.upscale_image(rgba, model)
    np.testing.assert_array_equal(subpixel.upscale_image(rgba, model, tile=4), whole)
    calls: list[tuple[int, int]] = []
    image = subpixel.upscale_image(
        Image.fromarray(rgba), model, scale=2.5, tile=5, progress=lambda *c: calls.append(c)
    )
    assert (image.mode, image.size) == ("RGBA", (43, 33))
    assert calls[-1] == (12, 12)  # 3 x 4 tiles of 5
    sixteen = (rgba[..., 0].astype(np.uint16) * 257).astype(np.uint16)
    # A process said to hold nothing, under a 1 MiB ceiling: small tiles, the same pixels.
    monkeypatch.setattr("subpixel.pipeline.image.resident_memory", lambda: 0)
    np.testing.assert_array_equal(
        subpixel.upscale_image(sixteen, model, max_memory=2**20),
        subpixel.upscale_image(sixteen, model),
    )


def test_alpha_through_the_network_is_the_alpha_plane_upscaled_as_gray() -> None:
    torch.manual_seed(0)
    net = models.build("espcn", scale=2).eval()
    describe(net, "espcn")
    rgba = np.random.default_rng(6).integers(0, 256, (6, 7, 4), dtype=np.uint8)
    by_network = subpixel.upscale_image(rgba, net, alpha="network")
    np.testing.assert_array_equal(by_network[..., 3], subpixel.upscale_image(rgba[..., 3], net))
    by_bicubic = subpixel.upscale_image(rgba, net)
    np.testing.assert_array_equal(by_bicubic[..., :3], by_network[..., :3])
    assert not np.array_equal(by_bicubic[..., 3], by_network[..., 3])
    with pytest.raises(ValueError, match="alpha"):
        subpixel.upscale_image(rgba, net, alpha="nearest")


def test_alpha_through_an_rgb_network_goes_as_gray() -> None:
    torch.manual_seed(0)
    net = models.build("espcn", scale=2, channels=3).eval()
    describe(net, "espcn")
    la = np.random.default_rng(7).integers(0, 256, (5, 6, 2), dtype=np.uint8)
    out = subpixel.upscale_image(la, net, alpha="network")
    np.testing.assert_array_equal(out[..., 1], subpixel.upscale_image(la[..., 1], net))


def test_tile_options_are_checked(bicubic3: torch.nn.Module) -> None:
    image = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(TilingError):
        subpixel.upscale_image(image, bicubic3, tile=0)
    with pytest.raises(TilingError):
        subpixel.upscale_image(image, bicubic3, tile=3, max_memory=2**30)


@pytest.mark.parametrize("kind", ["nan", "overflow"])
def test_an_output_that_is_not_finite_is_refused(kind: str) -> None:
    net = models.build("espcn", scale=2, activation="relu").eval()
    describe(net, "espcn")
    with torch.no_grad():
        if kind == "nan":
            net.features[0].weight[0, 0, 2, 2] = float("nan")
        else:  # finite weights whose products overflow float32 to inf
            for layer in (net.features[0], net.features[2]):
                layer.weight.fill_(1e30)
    image = Image.fromarray(np.full((6, 7, 3), 128, dtype=np.uint8))
    with pytest.raises(ModelError, match="not finite"):
        subpixel.upscale_image(image, net)
