from __future__ import annotations

import dataclasses
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import subpixel.data.cache as cache_module
from subpixel.colour import rgb_to_ycbcr
from subpixel.data import (
    DataConfig,
    DevicePairs,
    PatchCache,
    PatchDataset,
    epoch_order,
    gaussian_degrade,
    list_images,
    training_batches,
)
from subpixel.errors import ImageError
from subpixel.resize import degrade, imresize, modcrop

# (name, height, width, Pillow mode): colour and grayscale, several formats, odd sizes.
IMAGES = [
    ("a.png", 40, 52, "RGB"),
    ("b.bmp", 33, 45, "RGB"),
    ("c.png", 31, 27, "L"),
    ("d.jpg", 36, 30, "RGB"),
]


def _picture(height: int, width: int, seed: int) -> np.ndarray:
    """Smooth gradients plus noise, uint8 RGB: every pixel differs from its neighbours."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([3 * yy + 2 * xx, 255 - 4 * xx, 5 * yy], axis=-1) % 200
    return (base + rng.integers(0, 56, (height, width, 3))).astype(np.uint8)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    hr = tmp_path / "hr"
    hr.mkdir()
    for seed, (name, height, width, mode) in enumerate(IMAGES):
        Image.fromarray(_picture(height, width, seed)).convert(mode).save(hr / name)
    (hr / "notes.txt").write_text("not an image")
    return hr


def _source_rgb(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _config(**options: object) -> DataConfig:
    base: dict[str, object] = {"scale": 2, "patch_size": 4, "patches_per_image": 8}
    base.update(options)
    return DataConfig(**base)  # type: ignore[arg-type]


def _as_uint8(tensor: torch.Tensor) -> np.ndarray:
    """(3, h, w) float in [0, 1] -> (h, w, 3) uint8, exactly (values are k / 255)."""
    return np.rint(tensor.numpy().transpose(1, 2, 0) * 255).astype(np.uint8)


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    "options",
    [
        {"scale": 1},
        {"scale": 2.0},
        {"scale": True},
        {"channels": 2},
        {"patch_size": 0},
        {"stride": 0},
        {"patches_per_image": -1},
        {"degradation": "nearest"},
        {"sampling": "grid"},
        {"blur_sigma": 0.0},
        {"blur_sigma": float("nan")},
        {"flips": 1},
        {"downscale_augment": (0.9, 1.0)},
        {"downscale_augment": (0.9, 0.9)},
        {"downscale_augment": 0.9},
        {"downscale_augment": (0.0,)},
    ],
)
def test_config_rejects_bad_values(options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        DataConfig(**{"scale": 3, **options})  # type: ignore[arg-type]


def test_config_unknown_key_and_canonical_form() -> None:
    with pytest.raises(TypeError):
        DataConfig(scale=3, upscale=3)  # type: ignore[call-arg]
    config = DataConfig(scale=3, downscale_augment=[0.9, 0.6], blur_sigma=2)  # type: ignore[arg-type]
    assert config.downscale_augment == (0.9, 0.6)
    assert isinstance(config.blur_sigma, float)
    assert DataConfig(**dataclasses.asdict(config)) == config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.scale = 4  # type: ignore[misc]


# --------------------------------------------------------------------------- items


@pytest.mark.parametrize("channels", [1, 3])
def test_items_shapes_dtypes_ranges(folder: Path, tmp_path: Path, channels: int) -> None:
    config = _config(scale=3, channels=channels, patch_size=5)
    cache = PatchCache.build([folder], config, tmp_path / "cache")
    dataset = PatchDataset(cache, config)
    assert len(cache) == len(IMAGES)
    assert len(dataset) == len(IMAGES) * config.patches_per_image
    for index in range(0, len(dataset), 3):
        lr, hr = dataset[index]
        assert lr.shape == (channels, 5, 5) and hr.shape == (channels, 15, 15)
        assert lr.dtype == hr.dtype == torch.float32
        low, high = (16 / 255, 235 / 255) if channels == 1 else (0.0, 1.0)
        for patch in (lr, hr):
            assert low - 1e-6 <= patch.min() and patch.max() <= high + 1e-6
    with pytest.raises(IndexError):
        dataset[len(dataset)]


@pytest.mark.parametrize("scale", [2, 3])
@pytest.mark.parametrize("channels", [1, 3])
def test_bicubic_pairs_match_independent_crops(
    folder: Path, tmp_path: Path, scale: int, channels: int
) -> None:
    config = _config(
        scale=scale, channels=channels, flips=False, rotations=False, downscale_augment=(0.8,)
    )
    cache = PatchCache.build([folder], config, tmp_path / "cache")
    dataset = PatchDataset(cache, config, seed=5)
    assert {v.factor for v in cache.variants} == {1.0, 0.8}
    p = config.patch_size
    for index in range(len(dataset)):
        variant_index, y, x, k, flip = dataset.locate(index)
        assert (k, flip) == (0, False)
        variant = cache.variants[variant_index]
        image = _source_rgb(variant.source)
        if variant.factor != 1.0:
            image = imresize(image, scale=variant.factor)
        hr_full, lr_full = modcrop(image, scale), degrade(image, scale)
        hr_want = hr_full[scale * y : scale * (y + p), scale * x : scale * (x + p)]
        lr_want = lr_full[y : y + p, x : x + p]
        lr, hr = dataset[index]
        if channels == 3:
            np.testing.assert_array_equal(_as_uint8(lr), lr_want)
            np.testing.assert_array_equal(_as_uint8(hr), hr_want)
        else:
            for got, want in ((lr, lr_want), (hr, hr_want)):
                y_want = rgb_to_ycbcr(want / 255.0)[..., 0].astype(np.float32)
                np.testing.assert_array_equal(got[0].numpy(), y_want)


def test_flips_and_rotations_transform_lr_and_hr_alike(folder: Path, tmp_path: Path) -> None:
    plain_config = _config(scale=3, channels=3, flips=False, rotations=False)
    augmented_config = dataclasses.replace(plain_config, flips=True, rotations=True)
    cache = PatchCache.build([folder], plain_config, tmp_path / "cache")
    plain = PatchDataset(cache, plain_config, seed=11)
    augmented = PatchDataset(cache, augmented_config, seed=11)
    seen = set()
    for index in range(len(plain)):
        variant, y, x, k, flip = augmented.locate(index)
        assert plain.locate(index)[:3] == (variant, y, x)  # positions are drawn first
        seen.add((k, flip))
        for want, got in zip(plain[index], augmented[index], strict=True):
            want_array = want.numpy()[:, :, ::-1] if flip else want.numpy()
            want_array = np.rot90(want_array, k, axes=(1, 2))
            np.testing.assert_array_equal(got.numpy(), want_array)
    assert len(seen) == 8  # every flip/rotation combination occurs


def test_items_are_pure_functions_of_seed_and_index(folder: Path, tmp_path: Path) -> None:
    config = _config(scale=2, channels=1)
    cache = PatchCache.build([folder], config, tmp_path / "cache")
    first, second = PatchDataset(cache, config, seed=3), PatchDataset(cache, config, seed=3)
    other = PatchDataset(cache, config, seed=4)
    order = [7, 0, 31, 7, 12]
    for index in order:  # any order, repeated reads
        torch.testing.assert_close(first[index], second[index], rtol=0, atol=0)
    assert any(not torch.equal(first[i][1], other[i][1]) for i in order)
    assert [first.locate(i) for i in order] == [first.locate(i) for i in reversed(order)][::-1]
    # A pickled dataset carries no pixels (the memory maps reopen in the worker).
    assert len(pickle.dumps(first)) < 20_000
    reloaded = pickle.loads(pickle.dumps(first))
    torch.testing.assert_close(reloaded[9], first[9], rtol=0, atol=0)

    want_lr = torch.stack([first[i][0] for i in range(len(first))])
    want_hr = torch.stack([first[i][1] for i in range(len(first))])
    for workers in (0, 2):
        loader = DataLoader(first, batch_size=5, shuffle=False, num_workers=workers)
        batches = list(loader)
        torch.testing.assert_close(torch.cat([b[0] for b in batches]), want_lr, rtol=0, atol=0)
        torch.testing.assert_close(torch.cat([b[1] for b in batches]), want_hr, rtol=0, atol=0)


@pytest.mark.parametrize("channels", [1, 3])
def test_batched_items_equal_single_items(folder: Path, tmp_path: Path, channels: int) -> None:
    # What a DataLoader fetches (one colour conversion for the batch) is item by item the same.
    config = _config(scale=3, channels=channels)
    cache = PatchCache.build([folder], config, tmp_path / "cache")
    dataset = PatchDataset(cache, config, seed=2)
    order = [5, 0, 17, 5, len(dataset) - 1]
    batch = dataset.__getitems__(order)
    assert len(batch) == len(order)
    for index, (lr, hr) in zip(order, batch, strict=True):
        want_lr, want_hr = dataset[index]
        torch.testing.assert_close(lr, want_lr, rtol=0, atol=0)
        torch.testing.assert_close(hr, want_hr, rtol=0, atol=0)
    assert dataset.__getitems__([]) == []


def test_stride_sampling_enumerates_every_position(folder: Path, tmp_path: Path) -> None:
    config = _config(scale=2, sampling="stride", stride=3, patch_size=5, flips=False)
    cache = PatchCache.build([folder], config, tmp_path / "cache")
    dataset = PatchDataset(cache, config)
    expected = []
    for v, variant in enumerate(cache.variants):
        height, width = variant.height // 2, variant.width // 2
        for y in range(0, height - 5 + 1, 3):
            for x in range(0, width - 5 + 1, 3):
                expected.append((v, y, x))
    assert len(dataset) == len(expected)
    assert [dataset.locate(i)[:3] for i in range(len(dataset))] == expected
    # e.g. a.png, 40x52 HR -> 20x26 LR: rows 0..15 step 3 (6), columns 0..21 step 3 (8).
    assert sum(1 for v, _, _ in expected if v == 0) == 6 * 8


def test_downscale_augment_variant_sizes(folder: Path, tmp_path: Path) -> None:
    # HR patch 2 * 6 = 12 px: c.png (31x27) at 0.4 is 13x11 and is left out.
    config = _config(scale=2, patch_size=6, downscale_augment=(0.9, 0.4))
    cache = PatchCache.build([folder], config, tmp_path / "cache")
    sizes = {(Path(v.source).name, v.factor): (v.height, v.width) for v in cache.variants}
    expected = {}
    for name, height, width, _ in IMAGES:
        for factor in (1.0, 0.9, 0.4):
            h, w = -(-height * factor // 1), -(-width * factor // 1)  # ceil, as imresize
            if min(h, w) >= 12:
                expected[(name, factor)] = (int(h - h % 2), int(w - w % 2))
    assert sizes == expected
    assert ("c.png", 0.4) not in sizes and ("a.png", 0.4) in sizes
    assert sizes[("a.png", 0.9)] == (36, 46)  # ceil(36.0), ceil(46.8) = 47 -> 46
    for v in range(len(cache)):
        lr, hr = cache.pair(v)
        assert lr.shape == (hr.shape[0] // 2, hr.shape[1] // 2, 3) and lr.dtype == np.uint8


def test_grayscale_and_16_bit_images_become_rgb(folder: Path, tmp_path: Path) -> None:
    gray16 = (np.arange(30 * 24).reshape(30, 24) * 90).astype(np.uint16)
    Image.fromarray(gray16).save(folder / "e.png")
    config = _config(scale=2)
    cache = PatchCache.build([folder], config, tmp_path / "cache")
    names = [Path(v.source).name for v in cache.variants]
    for name in ("c.png", "e.png"):
        _, hr = cache.pair(names.index(name))
        assert hr.shape[2] == 3
        np.testing.assert_array_equal(hr[..., 0], hr[..., 2])
    _, hr16 = cache.pair(names.index("e.png"))
    np.testing.assert_array_equal(hr16[..., 0], np.floor(gray16 / 257 + 0.5).astype(np.uint8))


# --------------------------------------------------------------------------- on the device


@pytest.mark.parametrize("channels", [1, 3])
def test_device_pairs_hold_every_variant_as_the_loader_converts_it(
    folder: Path, tmp_path: Path, channels: int
) -> None:
    config = _config(scale=3, channels=channels, downscale_augment=(0.8,))
    cache = PatchCache.build([folder], config, tmp_path / "cache")
    pairs = DevicePairs(cache, config, "cpu")
    assert len(pairs) == len(cache) > len(IMAGES)
    assert pairs.nbytes == sum(v.height * v.width for v in cache.variants) * 10 // 9 * 4 * channels
    for v in range(len(cache)):
        lr_want, hr_want = cache.pair(v)
        for got, want in zip(pairs.pair(v), (lr_want, hr_want), strict=True):
            assert got.shape == (channels, *want.shape[:2])
            if channels == 3:
                np.testing.assert_array_equal(_as_uint8(got), want)
            else:
                y_want = rgb_to_ycbcr(want / 255.0)[..., 0].astype(np.float32)
                np.testing.assert_array_equal(got[0].numpy(), y_want)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("scale", [2, 3])
def test_device_crops_are_the_crops_of_the_pairs_with_one_transform_for_both(
    folder: Path, tmp_path: Path, channels: int, scale: int
) -> None:
    config = _config(scale=scale, channels=channels, patch_size=5, downscale_augment=(0.8,))
    cache = PatchCache.build([folder], config, tmp_path / "cache")
    pairs = DevicePairs(cache, config, "cpu")
    variants, ys, xs, transforms = pairs.locate(seed=4, iteration=9, batch_size=96)
    lr, hr = pairs.crops(variants, ys, xs, transforms)
    assert lr.shape == (96, channels, 5, 5) and hr.shape == (96, channels, 5 * scale, 5 * scale)
    assert lr.is_contiguous() and hr.is_contiguous()
    torch.testing.assert_close(pairs.batch(4, 9, 96), (lr, hr), rtol=0, atol=0)
    for b in range(96):
        v, y, x, t = (int(a[b]) for a in (variants, ys, xs, transforms))
        lr_image, hr_image = (image.numpy() for image in pairs.pair(v))
        assert 0 <= y <= lr_image.shape[1] - 5 and 0 <= x <= lr_image.shape[2] - 5
        lr_want = lr_image[:, y : y + 5, x : x + 5]
        hr_want = hr_image[:, scale * y : scale * (y + 5), scale * x : scale * (x + 5)]
        for got, want in ((lr[b], lr_want), (hr[b], hr_want)):
            want = want[:, :, ::-1] if t >= 4 else want  # mirrored left-right, then turned
            np.testing.assert_array_equal(got.numpy(), np.rot90(want, t % 4, axes=(1, 2)))
    assert set(transforms.tolist()) == set(range(8))
    assert len(set(variants.tolist())) > len(IMAGES)  # the downscaled copies are drawn too


def test_device_batches_are_pure_functions_of_seed_and_iteration(
    folder: Path, tmp_path: Path
) -> None:
    config = _config(scale=2)
    cache = PatchCache.build([folder], config, tmp_path / "cache")
    first, second = DevicePairs(cache, config, "cpu"), DevicePairs(cache, config, "cpu")
    for iteration in (3, 0, 3):  # any order, repeated
        torch.testing.assert_close(
            first.batch(1, iteration, 8), second.batch(1, iteration, 8), rtol=0, atol=0
        )
    assert not torch.equal(first.batch(1, 3, 8)[1], first.batch(1, 4, 8)[1])
    assert not torch.equal(first.batch(1, 3, 8)[1], first.batch(2, 3, 8)[1])
    # Each of two processes gathers its half of the same global batch.
    halves = [first.batch(1, 3, 8, rank=k, world_size=2) for k in (0, 1)]
    whole = first.batch(1, 3, 8)
    for side in (0, 1):
        torch.testing.assert_close(
            torch.cat([h[side] for h in halves]), whole[side], rtol=0, atol=0
        )
    with pytest.raises(ValueError, match="does not split"):
        first.batch(1, 3, 9, rank=0, world_size=2)


@pytest.mark.parametrize(
    ("flips", "rotations", "allowed"),
    [(False, False, {0}), (True, False, {0, 4}), (False, True, {0, 1, 2, 3})],
)
def test_device_transforms_follow_the_config(
    folder: Path, tmp_path: Path, flips: bool, rotations: bool, allowed: set[int]
) -> None:
    config = _config(scale=2, flips=flips, rotations=rotations)
    cache = PatchCache.build([folder], config, tmp_path / "cache")
    transforms = DevicePairs(cache, config, "cpu").locate(0, 0, 200)[3]
    assert set(transforms.tolist()) == allowed


def test_device_sampling_is_uniform_over_patch_positions(folder: Path, tmp_path: Path) -> None:
    # Each variant is drawn in proportion to its number of positions (its area, roughly).
    config = _config(scale=2, patch_size=6)
    cache = PatchCache.build([folder], config, tmp_path / "cache")
    pairs = DevicePairs(cache, config, "cpu")
    draws = 40_000
    variants, ys, xs, _ = pairs.locate(0, 0, draws)
    counts = np.bincount(variants.numpy(), minlength=len(cache))
    positions = np.array(
        [(v.height // 2 - 5) * (v.width // 2 - 5) for v in cache.variants], dtype=np.float64
    )
    expected = draws * positions / positions.sum()
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))
    assert len(set(zip(ys.tolist(), xs.tolist(), strict=True))) > 100


# --------------------------------------------------------------------------- gaussian


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_gaussian_degradation_grid_and_constant(scale: int) -> None:
    image = _picture(8 * scale, 5 * scale, seed=scale)
    # A very narrow Gaussian is a delta: the LR grid itself is visible.
    sampled = gaussian_degrade(image, scale, sigma=0.1)
    first = (scale - 1) // 2
    np.testing.assert_array_equal(sampled, image[first::scale, first::scale])
    constant = np.full((6 * scale, 4 * scale, 3), 173, np.uint8)
    np.testing.assert_array_equal(
        gaussian_degrade(constant, scale, 1.6), constant[::scale, ::scale]
    )


def test_gaussian_degradation_matches_a_loop_reference() -> None:
    scale, sigma = 3, 1.2
    image = _picture(15, 12, seed=9)[..., 0]
    radius = int(np.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel = np.outer(taps, taps) / taps.sum() ** 2
    padded = np.pad(image.astype(np.float64), radius, mode="edge")
    want = np.zeros((5, 4))
    for i in range(5):
        for j in range(4):
            cy, cx = scale * i + 1 + radius, scale * j + 1 + radius
            window = padded[cy - radius : cy + radius + 1, cx - radius : cx + radius + 1]
            want[i, j] = (window * kernel).sum()
    got = gaussian_degrade(image, scale, sigma).astype(np.float64)
    assert np.abs(got - want).max() <= 0.5 + 1e-9


def test_gaussian_cache_of_a_constant_image(tmp_path: Path) -> None:
    (tmp_path / "hr").mkdir()
    Image.new("RGB", (25, 21), (10, 128, 250)).save(tmp_path / "hr" / "flat.png")
    config = _config(scale=3, degradation="gaussian", blur_sigma=1.6)
    cache = PatchCache.build([tmp_path / "hr"], config, tmp_path / "cache")
    lr, hr = cache.pair(0)
    assert hr.shape == (21, 24, 3) and lr.shape == (7, 8, 3)
    np.testing.assert_array_equal(lr, np.broadcast_to(np.array([10, 128, 250], np.uint8), lr.shape))


# --------------------------------------------------------------------------- cache


def test_cache_is_reused_without_decoding(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(scale=2)
    calls: list[tuple[int, int]] = []
    cache = PatchCache.build(
        [folder], config, tmp_path / "cache", lambda d, t: calls.append((d, t))
    )
    assert calls == [(i + 1, len(IMAGES)) for i in range(len(IMAGES))]
    index = (cache.path / "index.json").read_text()
    for name in ('"hr_offset"', '"lr_offset"', '"height"', '"width"', '"source"'):
        assert name in index

    def no_decoding(path: object) -> None:
        raise AssertionError(f"decoded {path}")

    monkeypatch.setattr(cache_module, "read_image", no_decoding)
    again = PatchCache.build(
        [str(folder)], dataclasses.replace(config, sampling="stride"), tmp_path / "cache"
    )
    assert again.path == cache.path and again.variants == cache.variants
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [cache.path.name]
    # A changed setting or a touched file means a new cache, which must decode.
    for changed_config in (
        dataclasses.replace(config, degradation="gaussian"),
        dataclasses.replace(config, downscale_augment=(0.5,)),
    ):
        with pytest.raises(AssertionError, match="decoded"):
            PatchCache.build([folder], changed_config, tmp_path / "cache")
    stat = (folder / "a.png").stat()
    os.utime(folder / "a.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="decoded"):
        PatchCache.build([folder], config, tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [cache.path.name]


def test_cache_built_by_several_processes_is_the_same(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache_module, "_POOL_FILES", 2)  # a pool even for four images
    (folder / "z.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    config = _config(scale=3, downscale_augment=(0.9,))
    with pytest.raises(ImageError, match=r"z\.png"):  # a worker's error reaches the caller
        PatchCache.build([folder], config, tmp_path / "pooled", workers=2)
    (folder / "z.png").unlink()
    calls: list[tuple[int, int]] = []
    pooled = PatchCache.build(
        [folder], config, tmp_path / "pooled", lambda d, t: calls.append((d, t)), workers=2
    )
    single = PatchCache.build([folder], config, tmp_path / "single")
    assert calls == [(i + 1, len(IMAGES)) for i in range(len(IMAGES))]
    assert pooled.path.name == single.path.name and pooled.variants == single.variants
    for name in ("hr.bin", "lr.bin", "index.json"):
        assert (pooled.path / name).read_bytes() == (single.path / name).read_bytes(), name


def test_failed_build_leaves_no_cache(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (folder / "z.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ImageError, match=r"z\.png"):
        PatchCache.build([folder], _config(), tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_killed_build_never_looks_complete(folder: Path, tmp_path: Path) -> None:
    # The child is killed (os._exit, no clean-up) while writing its second image.
    script = textwrap.dedent(
        f"""
        import os
        import subpixel.data.cache as cache
        from subpixel.data import DataConfig, PatchCache
        real, seen = cache.read_rgb, []
        def dying(path):
            seen.append(path)
            if len(seen) == 2:
                os._exit(9)
            return real(path)
        cache.read_rgb = dying
        config = DataConfig(scale=2, patch_size=4)
        PatchCache.build([{str(folder)!r}], config, {str(tmp_path / "cache")!r})
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert result.returncode == 9, result.stderr.decode()
    leftovers = list((tmp_path / "cache").iterdir())
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".")
    assert leftovers[0].name.endswith(".partial")
    assert not (leftovers[0] / "index.json").exists()
    cache = PatchCache.build([folder], _config(scale=2, patch_size=4), tmp_path / "cache")
    assert len(cache) == len(IMAGES) and not cache.path.name.startswith(".")


def test_bad_inputs_raise_clear_errors(folder: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImageError, match="no images"):
        PatchCache.build([folder, empty], _config(), tmp_path / "cache")
    with pytest.raises(ImageError, match="not found"):
        PatchCache.build([tmp_path / "missing"], _config(), tmp_path / "cache")
    with pytest.raises(ValueError, match="no image folders"):
        list_images([])
    with pytest.raises(ValueError, match="HR patch"):
        PatchCache.build([folder], _config(scale=4, patch_size=20), tmp_path / "cache")
    cache = PatchCache.build([folder], _config(patch_size=4), tmp_path / "cache")
    with pytest.raises(ValueError, match="scale"):
        PatchDataset(cache, _config(scale=3, patch_size=4))
    with pytest.raises(ValueError, match="patch_size"):
        PatchDataset(cache, _config(patch_size=8))
    with pytest.raises(ValueError, match="seed"):
        PatchDataset(cache, _config(patch_size=4), seed=-1)


def test_list_images_is_sorted_and_flat(folder: Path) -> None:
    (folder / "sub").mkdir()
    Image.new("RGB", (20, 20)).save(folder / "sub" / "nested.png")
    assert [p.name for p in list_images(folder)] == ["a.png", "b.bmp", "c.png", "d.jpg"]


# --------------------------------------------------------------------------- batches


def test_epoch_order() -> None:
    order = epoch_order(50, seed=1, epoch=0)
    assert sorted(order.tolist()) == list(range(50))
    np.testing.assert_array_equal(order, epoch_order(50, seed=1, epoch=0))
    assert not np.array_equal(order, epoch_order(50, seed=1, epoch=1))
    assert not np.array_equal(order, epoch_order(50, seed=2, epoch=0))


def test_training_batches(folder: Path, tmp_path: Path) -> None:
    config = _config(scale=3, channels=1, patch_size=5, patches_per_image=3)
    batches = training_batches([folder], config, batch_size=5, cache_dir=tmp_path / "c", seed=2)
    same = training_batches([folder], config, batch_size=5, cache_dir=tmp_path / "c", seed=2)
    dataset = PatchDataset(PatchCache.build([folder], config, tmp_path / "c"), config, seed=2)
    length = len(dataset)  # 12 items: batch 2 spans epochs 0 and 1
    for b in range(4):
        lr, hr = next(batches)
        assert lr.shape == (5, 1, 5, 5) and hr.shape == (5, 1, 15, 15)
        torch.testing.assert_close((lr, hr), next(same), rtol=0, atol=0)
        for row, j in enumerate(range(5 * b, 5 * b + 5)):
            item = dataset[int(epoch_order(length, 2, j // length)[j % length])]
            torch.testing.assert_close(lr[row], item[0], rtol=0, atol=0)
            torch.testing.assert_close(hr[row], item[1], rtol=0, atol=0)
    ordered = training_batches([folder], config, 5, tmp_path / "c", seed=2, shuffle=False)
    torch.testing.assert_close(next(ordered)[1], torch.stack([dataset[i][1] for i in range(5)]))
    with pytest.raises(ValueError, match="batch_size"):
        training_batches([folder], config, 0, tmp_path / "c")


def test_real_training_folder(data_dir: Path, tmp_path: Path) -> None:
    folder = data_dir / "train" / "T91"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    config = DataConfig(scale=3)
    cache = PatchCache.build([folder], config, tmp_path / "cache")
    assert len(cache) == len(list_images(folder))
    dataset = PatchDataset(cache, config)
    lr, hr = dataset[len(dataset) - 1]
    assert lr.shape == (1, 17, 17) and hr.shape == (1, 51, 51)
