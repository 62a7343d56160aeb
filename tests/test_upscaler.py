"""The ready model: one object, the same default path from Python as from the CLI, exact where
promised (16-bit levels, tiles) on the default path of the machine the tests run on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import subpixel
from subpixel.engines import EngineError
from subpixel.errors import ModelError
from subpixel.precision import native_bfloat16, precision_for_card
from subpixel.upscaler import Upscaler
from subpixel.weights import DEFAULT_MODEL, card_of, load_network

EXAMPLE = Path(__file__).parents[1] / "examples" / "cat.png"


def _gradient(height: int = 80, width: int = 90) -> np.ndarray:
    """A 16-bit gray ramp over every pixel: 7,200 distinct levels across 0..65535."""
    ramp = np.add.outer(np.arange(height) * width, np.arange(width)) * (
        65535 / (height * width - 1)
    )
    return np.round(ramp).astype(np.uint16)


def test_load_model_returns_a_ready_object_with_the_model_facts() -> None:
    upscaler = subpixel.load_model("espcn", scale=2)
    assert isinstance(upscaler, Upscaler)
    assert (upscaler.scale, upscaler.channels, upscaler.colour_space) == (2, 1, "y")
    assert upscaler.name == "espcn" and upscaler.card.scale == 2
    assert upscaler.receptive_radius == 4
    assert upscaler.device == torch.device("cpu")
    assert (upscaler.engine, upscaler.precision) == ("auto", "auto")
    assert "espcn x2" in repr(upscaler)


def test_precision_auto_is_the_cards_for_8_bits_and_float32_above() -> None:
    upscaler = subpixel.load_model("espcn", scale=3)
    assert upscaler.precision_for(8) == precision_for_card(upscaler.card)
    assert upscaler.precision_for(16) == "float32"
    assert upscaler.precision_for(32) == "float32"
    named = subpixel.load_model("espcn", scale=3, precision="bfloat16")
    assert named.precision_for(16) == "bfloat16"  # asked for: honoured


def test_engines_are_built_on_first_use_and_kept() -> None:
    upscaler = subpixel.load_model("bicubic", scale=2, engine="torch")
    assert upscaler._engines == {}
    first = upscaler.engine_for("float32")
    assert upscaler.engine_for("float32") is first


def test_unknown_engine_or_precision_is_refused_up_front() -> None:
    with pytest.raises(EngineError, match="unknown engine"):
        subpixel.load_model("bicubic", engine="tensorrt")
    with pytest.raises(EngineError, match="unknown precision"):
        subpixel.load_model("bicubic", precision="int8")


def test_choices_made_elsewhere_replace_the_engine_for_their_precision() -> None:
    upscaler = subpixel.load_model(
        "espcn", scale=2, engine="torch", choices={"float32": "torch-channels-last"}
    )
    assert upscaler.engine_for("float32").name == "torch-channels-last"
    assert upscaler.engine_choice(16) == "torch-channels-last"  # 16 bits run float32
    eight = upscaler.precision_for(8)
    assert upscaler.engine_choice(8) == ("torch-channels-last" if eight == "float32" else "torch")
    image = np.random.default_rng(0).integers(0, 65536, (20, 16, 3), dtype=np.uint16)
    chosen = subpixel.load_model("espcn", scale=2, engine="torch-channels-last")(image)
    assert np.array_equal(upscaler(image), chosen)  # the chosen engine's values
    for bad in ({"float32": "tensorrt"}, {"int8": "torch"}):
        with pytest.raises(EngineError, match="unknown engine choice"):
            subpixel.load_model("espcn", scale=2, choices=bad)


def test_onnxruntime_chosen_for_bfloat16_runs_float32_as_auto_runs_it() -> None:
    # "auto" times ONNX Runtime (float32 kernels only) among the bfloat16 candidates, so a
    # driver may hand it to its actors for bfloat16: they run it as the driver did.
    pytest.importorskip("onnxruntime", reason="needs onnxruntime: pip install 'subpixel[onnx]'")
    upscaler = subpixel.load_model(
        "espcn", scale=2, precision="bfloat16", choices={"bfloat16": "onnxruntime"}
    )
    engine = upscaler.engine_for("bfloat16")
    assert (engine.name, engine.precision) == ("onnxruntime", "float32")
    image = np.random.default_rng(1).integers(0, 256, (20, 16, 3), dtype=np.uint8)
    named = subpixel.load_model("espcn", scale=2, engine="onnxruntime")
    assert named.precision_for(8) == "float32"
    assert np.array_equal(upscaler(image), named(image))
    with pytest.raises(EngineError, match="float32 only"):  # named so, it is refused
        subpixel.load_model("espcn", scale=2, engine="onnxruntime", precision="bfloat16")(image)


def test_a_name_a_network_and_an_upscaler_give_the_same_kind_back() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    by_name = subpixel.upscale_image(rgb, "bicubic")
    assert by_name.shape == (27, 33, 3) and by_name.dtype == np.uint8
    network = load_network("bicubic", scale=3)
    np.testing.assert_array_equal(subpixel.upscale_image(rgb, network), by_name)
    image = subpixel.load_model("bicubic", scale=3)(Image.fromarray(rgb))
    assert isinstance(image, Image.Image) and image.size == (33, 27)


def test_a_bare_network_of_a_known_class_is_described_by_its_config() -> None:
    network = subpixel.models.build("espcn", scale=2, channels=3)
    card = card_of(network)
    assert (card.architecture, card.scale, card.channels, card.colour_space) == (
        "espcn",
        2,
        3,
        "rgb",
    )
    with pytest.raises(ModelError, match="no card"):
        card_of(torch.nn.Conv2d(1, 1, 3))


def test_a_network_whose_output_is_not_finite_is_refused() -> None:
    network = load_network("espcn", scale=2)
    with torch.no_grad():
        network.features[0].bias.fill_(float("nan"))  # type: ignore[index, union-attr]
    upscaler = Upscaler(network, card_of(network), engine="torch")
    with pytest.raises(ModelError, match="not finite"):
        upscaler(np.zeros((6, 7), np.uint8))


def test_sixteen_bit_images_keep_their_levels_on_the_default_path() -> None:
    gradient = _gradient()
    upscaler = subpixel.load_model("espcn", scale=2)  # defaults: auto engine and precision
    levels = len(np.unique(upscaler(gradient)))
    assert levels >= 20_000
    assert len(np.unique(np.asarray(upscaler(Image.fromarray(gradient))))) == levels


@pytest.mark.skipif(not native_bfloat16(), reason="this CPU has no native bfloat16")
def test_sixteen_bit_images_in_bfloat16_lose_their_levels() -> None:
    # Why the default runs 16-bit images in float32: bfloat16 keeps 8 significant bits.
    reduced = subpixel.load_model("espcn", scale=2, precision="bfloat16")
    assert len(np.unique(reduced(_gradient()))) < 2_000


@pytest.mark.parametrize(
    ("model", "scale"),
    [(DEFAULT_MODEL, 2), (DEFAULT_MODEL, 3), (DEFAULT_MODEL, 4), ("espcn", 3), ("fsrcnn", 3)],
)
def test_tiled_equals_untiled_bit_for_bit_on_the_default_path(model: str, scale: int) -> None:
    """Whatever engine the machine's defaults pick, on a grid of tiles or not (an image
    larger than the grid, 300x340, so that its seams are inside the image)."""
    crop = np.asarray(Image.open(EXAMPLE).convert("RGB"))[:150, :170]
    rgb = np.ascontiguousarray(np.tile(crop, (2, 2, 1)))
    upscaler = subpixel.load_model(model, scale=scale)
    whole = upscaler(rgb)
    for tile in (17, 37, 97):
        np.testing.assert_array_equal(upscaler(rgb, tile=tile), whole, err_msg=f"tile {tile}")


def test_the_python_default_is_the_clis_output(tmp_path: Path) -> None:
    target = tmp_path / "cat_x3.png"
    subprocess.run(
        [sys.executable, "-m", "subpixel", "upscale", str(EXAMPLE), "-o", str(target)],
        check=True,
        capture_output=True,
    )
    python = subpixel.load_model()(np.asarray(Image.open(EXAMPLE).convert("RGB")))
    np.testing.assert_array_equal(np.asarray(Image.open(target).convert("RGB")), python)


def test_frames_upscaled_where_they_are_match_the_image_pipeline() -> None:
    # The path a GPU takes (colour, chroma bicubic and rounding beside the network), run here
    # on CPU tensors: within one level of the CPU pipeline, and a batch equals its frames.
    upscaler = subpixel.load_model("espcn", scale=2, engine="torch", precision="float32")
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (3, 13, 17, 3), dtype=np.uint8)
    batch = upscaler.upscale_frames(torch.from_numpy(frames))
    assert batch.shape == (3, 26, 34, 3) and batch.dtype == torch.uint8
    for index, frame in enumerate(frames):
        one = upscaler.upscale_frames(torch.from_numpy(frame[None]))[0]
        np.testing.assert_array_equal(batch[index].numpy(), one.numpy())
        apart = np.abs(batch[index].numpy().astype(int) - upscaler(frame).astype(int))
        assert apart.max() <= 1 and (apart > 0).mean() < 1e-3


@pytest.mark.parametrize(
    "options", [{}, {"engine": "torch", "precision": "float32"}], ids=["default", "torch-float32"]
)
def test_a_batch_through_the_network_equals_its_frames_exactly(options: dict[str, str]) -> None:
    # oneDNN picks its float32 convolution by batch size, so on the CPU a batch runs frame
    # by frame: a frame's output never depends on its batch-mates (default or forced engine).
    upscaler = subpixel.load_model("espcn", scale=2, **options)
    for height, width in ((9, 11), (13, 17), (40, 50)):
        lr = torch.rand((4, 1, height, width), generator=torch.Generator().manual_seed(height))
        together = upscaler.run_tensor(lr)
        for k in range(4):
            alone = upscaler.run_tensor(lr[k : k + 1].clone())
            torch.testing.assert_close(together[k : k + 1], alone, rtol=0, atol=0)


def test_a_batch_of_mixed_images_goes_through_the_device_path_by_groups() -> None:
    # What a GPU does with upscale_batch, on CPU tensors: images of one shape and type share
    # one upscale_frames call; each result equals the image's own device-path result and
    # keeps its kind (PIL or array) and layout (gray arrays stay 2-D, 16-bit stays 16-bit).
    upscaler = subpixel.load_model("espcn", scale=2)
    rng = np.random.default_rng(4)
    rgb = [rng.integers(0, 256, (9, 11, 3), dtype=np.uint8) for _ in range(3)]
    gray16 = rng.integers(0, 65536, (9, 11), dtype=np.uint16)
    gray_alpha = Image.fromarray(rgb[0], "RGB").convert("LA")
    images: list[Image.Image | np.ndarray] = [
        rgb[0], Image.fromarray(rgb[1]), gray16, rgb[2], gray_alpha
    ]  # fmt: skip
    calls: list[tuple[int, ...]] = []
    frames_of = upscaler.upscale_frames

    def counted(frames: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(frames.shape))
        return frames_of(frames)

    upscaler.upscale_frames = counted  # type: ignore[method-assign]
    results = upscaler._batch_on_device(images)
    assert sorted(calls) == [(1, 9, 11, 1), (1, 9, 11, 2), (3, 9, 11, 3)]
    del upscaler.upscale_frames
    for image, result in zip(images, results, strict=True):
        assert type(result) is type(image)
        alone = upscaler._batch_on_device([image])[0]
        np.testing.assert_array_equal(np.asarray(result), np.asarray(alone))
    assert results[2].dtype == np.uint16 and results[2].shape == (18, 22)
    assert isinstance(results[4], Image.Image) and results[4].mode == "LA"
    # On the CPU upscale_batch is the image path, one image at a time.
    on_cpu = upscaler.upscale_batch(images)
    for image, result in zip(images, on_cpu, strict=True):
        np.testing.assert_array_equal(np.asarray(result), np.asarray(upscaler(image)))


def test_device_batches_are_cut_to_the_device_memory_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Five images of one size: a budget for two a batch makes batches of 2, 2 and 1; a budget
    # under one image sends each through the image pipeline (tiled there by its limits).
    import subpixel.upscaler as module

    assert module.device_memory_budget(torch.device("cpu")) is None  # the host's: limits
    upscaler = subpixel.load_model("espcn", scale=2)
    rng = np.random.default_rng(8)
    images = [rng.integers(0, 256, (10, 12, 3), dtype=np.uint8) for _ in range(5)]
    per_image = upscaler._device_work((10, 12, 3))
    calls: list[int] = []
    frames_of = upscaler.upscale_frames

    def counted(frames: torch.Tensor) -> torch.Tensor:
        calls.append(frames.shape[0])
        return frames_of(frames)

    upscaler.upscale_frames = counted  # type: ignore[method-assign]
    monkeypatch.setattr(module, "device_memory_budget", lambda device: int(2.5 * per_image))
    batched = upscaler._batch_on_device(images)
    assert calls == [2, 2, 1]
    monkeypatch.setattr(module, "device_memory_budget", lambda device: int(0.5 * per_image))
    calls.clear()
    apart = upscaler._batch_on_device(images)
    assert calls == []
    for image, one, other in zip(images, batched, apart, strict=True):
        np.testing.assert_array_equal(other, upscaler(image))
        assert np.abs(one.astype(int) - other.astype(int)).max() <= 1


def test_on_a_gpu_a_tile_size_does_not_take_an_image_off_the_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # On a GPU an image that fits the device's budget is upscaled whole on the device
    # whatever tile is asked for (tiled == untiled there by construction); one too big for
    # it goes through the image pipeline at the tile asked. Other scales, a host memory
    # limit or another alpha take the image pipeline. The route only: nothing runs on a GPU.
    import subpixel.upscaler as module

    upscaler = subpixel.load_model("espcn", scale=2)
    image = np.random.default_rng(9).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    routes: list[tuple[str, object]] = []

    def on_device(images: list[np.ndarray], *, tile: int | None = None) -> list[str]:
        routes.append(("device", tile))
        return ["device"] * len(images)

    def on_host(image: np.ndarray, model: object, **options: object) -> str:
        routes.append(("host", options.get("tile")))
        return "host"

    monkeypatch.setattr(upscaler, "_batch_on_device", on_device)
    monkeypatch.setattr(module.inference, "upscale", on_host)
    upscaler.device = torch.device("cuda")
    assert upscaler(image, tile=17) == upscaler(image) == "device"
    assert upscaler.upscale_batch([image, image], tile=37) == ["device", "device"]
    assert upscaler(image, scale=3, tile=17) == "host"
    assert upscaler(image, max_memory=1 << 30) == "host"
    assert upscaler(image, alpha="network") == "host"
    assert (
        routes
        == [("device", 17), ("device", None), ("device", 37), ("host", 17)] + [("host", None)] * 2
    )
    # Too big for the device alone: the image pipeline at the tile asked.
    monkeypatch.undo()
    upscaler.device = torch.device("cpu")
    monkeypatch.setattr(module, "device_memory_budget", lambda device: 1)
    monkeypatch.setattr(module.inference, "upscale", on_host)
    routes.clear()
    assert upscaler._batch_on_device([image], tile=17) == ["host"]
    assert routes == [("host", 17)]


def _example_upscaled_whole() -> tuple[np.ndarray, subpixel.Upscaler, np.ndarray]:
    """The example image (225x150 RGB), the default model at x3 and its untiled output."""
    rgb = np.asarray(Image.open(EXAMPLE).convert("RGB"))
    upscaler = subpixel.load_model(DEFAULT_MODEL, scale=3)
    return rgb, upscaler, upscaler(rgb)


def _assert_tiled_with_the_same_pixels(
    upscaler: subpixel.Upscaler, rgb: np.ndarray, whole: np.ndarray
) -> None:
    tiles: list[int] = []
    tiled = upscaler(rgb, progress=lambda done, total: tiles.append(total))
    assert tiles and tiles[-1] > 1
    np.testing.assert_array_equal(tiled, whole)


def test_memory_is_bounded_by_default_and_tiles_keep_the_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rgb, upscaler, whole = _example_upscaled_whole()
    output_bytes = whole.nbytes + rgb.nbytes
    # A machine with little memory free: tiles, automatically, and the same pixels.
    monkeypatch.setattr("subpixel.pipeline.image.memory_budget", lambda: output_bytes + 8 * 2**20)
    _assert_tiled_with_the_same_pixels(upscaler, rgb, whole)
    # Less than the output alone: refused before any work, in one line.
    monkeypatch.setattr("subpixel.pipeline.image.memory_budget", lambda: output_bytes // 2)
    with pytest.raises(subpixel.ImageError, match=r"may use by default .* before any tile"):
        upscaler(rgb)


def test_the_default_caps_the_work_of_a_tile_whatever_memory_is_free(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # With memory to spare, a large image is still tiled by default (limits.DEFAULT_TILE_WORK,
    # 1 GiB: a 6000x4000 photo to x3 peaks under 3 GB); here the cap is made small enough
    # to bite on the example image. Same pixels.
    rgb, upscaler, whole = _example_upscaled_whole()
    monkeypatch.setattr("subpixel.pipeline.image.memory_budget", lambda: 64 * 2**30)
    monkeypatch.setattr("subpixel.pipeline.image.DEFAULT_TILE_WORK", 16 * 2**20)
    _assert_tiled_with_the_same_pixels(upscaler, rgb, whole)
