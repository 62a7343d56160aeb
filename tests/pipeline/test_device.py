"""The device pipeline against the CPU one (``subpixel.upscale_image``), on CPU tensors."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import subpixel
from subpixel import models
from subpixel.errors import ImageError, ScaleError
from subpixel.pipeline import fastpath
from subpixel.pipeline.device import tf32, upscale_frames, upscale_image_on_device
from subpixel.weights import load_network

PEAKS = {np.uint8: 255, np.uint16: 65535}


@pytest.fixture(scope="module")
def espcn() -> dict[int, nn.Module]:
    return {scale: load_network("espcn", scale=scale) for scale in (2, 3)}


@pytest.fixture
def numpy_fastpath(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The CPU pipeline's numpy/torch arithmetic instead of OpenCV's kernels."""
    monkeypatch.setattr(fastpath, "HAVE_OPENCV", False)
    yield


def _image(dtype: type[np.generic], channels: int | None, seed: int) -> np.ndarray:
    """Random values over the whole range, odd sizes; ``None`` channels: an (H, W) array."""
    shape = (23, 31) if channels is None else (23, 31, channels)
    rng = np.random.default_rng(seed)
    return rng.integers(0, PEAKS[dtype] + 1, shape).astype(dtype)


def _levels_apart(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    assert a.shape == b.shape and a.dtype == b.dtype
    return np.abs(a.astype(np.int64) - b.astype(np.int64))


@pytest.mark.parametrize("scale", [2, 3])
@pytest.mark.parametrize("channels", [None, 1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_equals_the_cpu_pipeline_to_float_rounding(
    espcn: dict[int, nn.Module], scale: int, channels: int | None, dtype: type[np.generic]
) -> None:
    image = _image(dtype, channels, seed=scale * 10 + (channels or 0))
    model = espcn[scale]
    ours = upscale_image_on_device(image, model, scale=scale, colour_space="y", device="cpu")
    theirs = subpixel.upscale_image(image, model)
    apart = _levels_apart(ours, theirs)
    assert ours.shape[:2] == (scale * 23, scale * 31)
    assert apart.max() <= 1
    # The same float32 steps summed in another order: a value within a few ulp of a .5 lands
    # on the other level. At 16 bits a level is 1/65535, and float32's ulp at 65535 is 1/256
    # of one, so that happens more often: the CPU pipeline's own OpenCV and numpy paths
    # disagree on 0.46% of ESPCN x3's RGB pixels there.
    assert apart.mean() < (1e-3 if dtype == np.uint8 else 1e-2)


@pytest.mark.parametrize("channels", [None, 1])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_gray_equals_the_numpy_path_exactly(
    espcn: dict[int, nn.Module],
    numpy_fastpath: None,
    channels: int | None,
    dtype: type[np.generic],
) -> None:
    # Gray with a Y network is elementwise float32 arithmetic in the same order on both
    # sides (to studio-swing Y, the network on the same (1, 1, H, W) input, back, rint), so
    # every output value is the same float32 number.
    for model, scale in ((espcn[3], 3), (load_network("bicubic", scale=3), 3)):
        image = _image(dtype, channels, seed=7)
        ours = upscale_image_on_device(image, model, scale=scale, colour_space="y", device="cpu")
        np.testing.assert_array_equal(ours, subpixel.upscale_image(image, model))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_rgb_network_equals_the_numpy_path_exactly(
    numpy_fastpath: None, dtype: type[np.generic]
) -> None:
    # An RGB network takes the planes scaled by 1 / peak and gives them back times peak: the
    # same elementwise float32 steps as the CPU pipeline. Gray goes in as R = G = B.
    torch.manual_seed(0)
    network = models.build("espcn", scale=3, channels=3).eval()
    for channels in (None, 3):
        image = _image(dtype, channels, seed=11)
        ours = upscale_image_on_device(image, network, scale=3, colour_space="rgb", device="cpu")
        np.testing.assert_array_equal(ours, subpixel.upscale_image(image, network))


@pytest.mark.parametrize("channels", [2, 4])
def test_rgb_network_with_alpha_to_float_rounding(channels: int) -> None:
    torch.manual_seed(0)
    network = models.build("espcn", scale=3, channels=3).eval()
    image = _image(np.uint8, channels, seed=12)
    ours = upscale_image_on_device(image, network, scale=3, colour_space="rgb", device="cpu")
    apart = _levels_apart(ours, subpixel.upscale_image(image, network))
    assert apart.max() <= 1 and apart.mean() < 1e-3


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_a_batch_equals_its_frames_one_by_one(espcn: dict[int, nn.Module], channels: int) -> None:
    frames = torch.from_numpy(np.stack([_image(np.uint8, channels, seed) for seed in range(3)]))
    batch = upscale_frames(frames, espcn[3], scale=3, colour_space="y", peak=255)
    assert batch.shape == (3, 69, 93, channels) and batch.dtype == torch.uint8
    for k in range(3):
        single = upscale_frames(frames[k : k + 1], espcn[3], scale=3, colour_space="y", peak=255)
        torch.testing.assert_close(batch[k : k + 1], single, rtol=0, atol=0)


def _magnifier(scale: int) -> Callable[[Tensor], Tensor]:
    """A network that works pixel by pixel (so batch and layout cannot touch it) and
    magnifies a last-bit difference in its input some thousand times, as far as a level."""
    return lambda lr: (
        torch.frac(4096.0 * lr).repeat_interleave(scale, -1).repeat_interleave(scale, -2)
    )


@pytest.mark.parametrize("seed", range(4))
def test_a_frame_gives_the_same_bytes_in_any_batch_and_layout(seed: int) -> None:
    # The colour arithmetic around the network, element by element: random batch sizes,
    # small sizes (where a matrix product's blocking showed) and frame types; each frame
    # alone (as a numpy [None] view, whose batch stride is 0, and from a channels-last copy)
    # and inside its batch give the same bytes.
    rng = np.random.default_rng(seed)
    dtype = (np.uint8, np.uint16)[seed % 2]
    batch, height, width = rng.integers(2, 7), rng.integers(8, 33), rng.integers(8, 33)
    channels = int(rng.integers(3, 5))
    frames = rng.integers(0, PEAKS[dtype] + 1, (batch, height, width, channels)).astype(dtype)
    run = functools.partial(
        upscale_frames, network=_magnifier(2), scale=2, colour_space="y", peak=PEAKS[dtype]
    )
    together = run(torch.from_numpy(frames))
    strided = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1)
    for k, frame in enumerate(frames):
        alone = run(torch.from_numpy(frame[None]))
        torch.testing.assert_close(together[k : k + 1], alone, rtol=0, atol=0)
        torch.testing.assert_close(run(strided[k : k + 1]), alone, rtol=0, atol=0)


def test_the_network_runs_once_per_batch_on_luminance(espcn: dict[int, nn.Module]) -> None:
    shapes: list[tuple[int, ...]] = []

    def network(lr: Tensor) -> Tensor:
        shapes.append(tuple(lr.shape))
        assert lr.dtype == torch.float32 and lr.is_contiguous()
        return espcn[2](lr)

    frames = torch.from_numpy(np.stack([_image(np.uint8, 4, seed) for seed in range(5)]))
    upscale_frames(frames, network, scale=2, colour_space="y", peak=255)
    assert shapes == [(5, 1, 23, 31)]


def test_int32_frames_give_the_uint16_result(espcn: dict[int, nn.Module]) -> None:
    frames = torch.from_numpy(_image(np.uint16, 4, seed=3))[None]
    as_uint16 = upscale_frames(frames, espcn[2], scale=2, colour_space="y", peak=65535)
    as_int32 = upscale_frames(
        frames.to(torch.int32), espcn[2], scale=2, colour_space="y", peak=65535
    )
    assert as_int32.dtype == torch.int32
    torch.testing.assert_close(as_int32, as_uint16.to(torch.int32), rtol=0, atol=0)


def test_the_arithmetic_around_the_network_ignores_autocast() -> None:
    # The bicubic network is elementwise, so autocast leaves it alone; the chroma
    # convolution and the split would run in bfloat16 (several levels off) if it reached them.
    network = load_network("bicubic", scale=3)
    frames = torch.from_numpy(_image(np.uint8, 4, seed=5))[None]
    plain = upscale_frames(frames, network, scale=3, colour_space="y", peak=255)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = upscale_frames(frames, network, scale=3, colour_space="y", peak=255)
    torch.testing.assert_close(cast, plain, rtol=0, atol=0)


def test_tf32_sets_both_flags_and_restores_them() -> None:
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    for allowed in (True, False):
        with tf32(allowed):
            assert torch.backends.cuda.matmul.allow_tf32 is allowed
            assert torch.backends.cudnn.allow_tf32 is allowed
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


def test_bad_frames_and_networks_are_refused(espcn: dict[int, nn.Module]) -> None:
    frames = torch.zeros(1, 4, 5, 3, dtype=torch.uint8)
    with pytest.raises(ImageError, match="float32"):
        upscale_frames(frames.float(), espcn[2], scale=2, colour_space="y", peak=255)
    with pytest.raises(ImageError, match="peak"):
        upscale_frames(frames, espcn[2], scale=2, colour_space="y", peak=65535)
    with pytest.raises(ImageError, match=r"\(B, H, W, C\)"):
        upscale_frames(frames[0], espcn[2], scale=2, colour_space="y", peak=255)
    with pytest.raises(ScaleError, match="expected"):
        upscale_frames(frames, espcn[2], scale=3, colour_space="y", peak=255)
    with pytest.raises(ValueError, match="colour_space"):
        upscale_frames(frames, espcn[2], scale=2, colour_space="ycbcr", peak=255)
    with pytest.raises(ImageError, match="uint8 or uint16"):
        upscale_image_on_device(
            np.zeros((4, 5), np.float32), espcn[2], scale=2, colour_space="y", device="cpu"
        )


def test_the_device_pipeline_benchmark_runs_every_row() -> None:
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "device_pipeline.py"
    command = [sys.executable, str(script), "--device", "cpu", "--repeats", "1", "--batch", "2"]
    command += ["--width", "16", "--height", "12", "--networks", "espcn-x3,fsrcnn-s-x3"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = [
        line.split() for line in done.stdout.splitlines() if line.startswith(("espcn", "fsrcnn"))
    ]
    assert len(rows) == 12  # per network: default, pipeline and network alone, batches 1 and 2
    assert {row[-1] != "inf" and float(row[-1]) > 0 for row in rows} == {True}


def test_the_exactness_benchmark_finds_the_default_path_exact_on_this_cpu() -> None:
    # What a GPU session measures (batch vs frames, tiles vs whole), here on the CPU, where
    # the README promises equal bytes for both.
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "device_exactness.py"
    command = [sys.executable, str(script), "--device", "cpu", "--batch", "3", "--width", "40"]
    command += ["--height", "24", "--networks", "espcn-x2,fsrcnn-s-x3", "--tiles", "7", "17"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = [line.split(" | ") for line in done.stdout.splitlines() if line.startswith("| espcn")]
    rows += [line.split(" | ") for line in done.stdout.splitlines() if line.startswith("| fsrcnn")]
    assert len(rows) == 6  # per network: the batch and two tile sizes
    assert {row[2] for row in rows} == {"0"}, done.stdout
