"""LR/HR patch pairs from a :class:`PatchCache`, each a pure function of ``(seed, index)``.

Nothing here touches global random state: item ``index`` draws its patch position, flip and
rotation from ``np.random.default_rng((seed, 0, index))`` and epoch ``e``'s order is
``np.random.default_rng((seed, 1, e)).permutation(N)``, so any ``DataLoader`` with any number
of workers, and a resumed run, sees the same samples in the same order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from subpixel.colour import RGB_TO_YCBCR_MATRIX, YCBCR_OFFSET
from subpixel.data.cache import PatchCache, Progress
from subpixel.data.config import DataConfig

__all__ = ["PatchDataset", "epoch_order", "training_batches"]

# Independent random streams under one seed: items and epoch orders never share draws.
_ITEM_STREAM = 0
_ORDER_STREAM = 1


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def epoch_order(length: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of ``range(length)`` for ``epoch``: global sample ``j`` is dataset item
    ``epoch_order(N, seed, j // N)[j % N]``.

    Example:
        >>> sorted(epoch_order(5, seed=0, epoch=3).tolist())
        [0, 1, 2, 3, 4]
    """
    if length < 0 or epoch < 0:
        raise ValueError(f"length and epoch must be non-negative, got {length}, {epoch}")
    rng = np.random.default_rng((_check_seed(seed), _ORDER_STREAM, int(epoch)))
    return rng.permutation(int(length))


def _to_tensor(patches: np.ndarray, channels: int) -> Tensor:
    """``(..., h, w, 3)`` ``uint8`` RGB -> ``(..., C, h, w)`` float32 in [0, 1] (Y when C == 1)."""
    rgb = patches.astype(np.float64) / 255.0
    if channels == 1:
        # Y of BT.601 studio swing, the channel the papers train and evaluate on: only the
        # matrix's first row (half the time of all three), the same float32 values as
        # rgb_to_ycbcr's Y for every 8-bit colour.
        luma = (rgb @ RGB_TO_YCBCR_MATRIX[0] + YCBCR_OFFSET[0]) / 255.0
        return torch.from_numpy(luma.astype(np.float32)[..., None, :, :])
    planes = np.moveaxis(rgb, -1, -3)
    return torch.from_numpy(np.ascontiguousarray(planes, dtype=np.float32))


class PatchDataset(Dataset[tuple[Tensor, Tensor]]):
    """Aligned ``(lr, hr)`` training patches.

    Item ``index`` is ``(lr, hr)``: ``lr`` ``(C, p, p)`` and ``hr`` ``(C, r p, r p)``, float32 in
    ``[0, 1]``, where the LR patch at ``(y, x)`` of a variant pairs with the HR patch at
    ``(r y, r x)``. With ``flips`` the pair is mirrored left-right, then with ``rotations``
    turned by ``k * 90`` degrees (``np.rot90``), both drawn per item.

    * ``sampling="random"``: ``len(cache) * patches_per_image`` items; item ``i`` comes from
      variant ``i // patches_per_image`` at a uniformly random position.
    * ``sampling="stride"``: one item per sub-image at LR positions ``0, stride, 2 stride,
      ...`` (while the patch fits) in both directions, variant by variant, row by row.

    Args:
        cache: The pixels, from :meth:`PatchCache.build`.
        config: Must match the cache's scale, degradation, blur and downscale settings;
            ``patch_size`` may not exceed the one the cache was built for.
        seed: Non-negative integer; every item is a pure function of ``(seed, index)``.

    Raises:
        ValueError: If ``config`` does not fit ``cache`` or ``seed`` is negative.
    """

    def __init__(self, cache: PatchCache, config: DataConfig, seed: int = 0) -> None:
        settings = cache.settings
        for name in ("scale", "degradation", "blur_sigma"):
            if settings[name] != getattr(config, name):
                raise ValueError(
                    f"config.{name}={getattr(config, name)!r} but the cache at {cache.path} "
                    f"was built with {settings[name]!r}"
                )
        if tuple(settings["downscale_augment"]) != config.downscale_augment:
            raise ValueError(
                f"config.downscale_augment={config.downscale_augment} but the cache "
                f"was built with {tuple(settings['downscale_augment'])}"
            )
        if config.patch_size > settings["patch_size"]:
            raise ValueError(
                f"config.patch_size={config.patch_size} exceeds the cache's "
                f"{settings['patch_size']} (it may hold smaller images)"
            )
        self.cache = cache
        self.config = config
        self.seed = _check_seed(seed)
        p = config.patch_size
        # Items per variant, cumulated: item i belongs to the first variant whose end exceeds i.
        self._lr_shapes = np.array([cache.lr_shape(i) for i in range(len(cache))], dtype=np.int64)
        if config.sampling == "stride":
            counts = ((self._lr_shapes - p) // config.stride + 1).prod(axis=1)
        else:
            counts = np.full(len(cache), config.patches_per_image, dtype=np.int64)
        self._ends = np.cumsum(counts)
        self._length = int(self._ends[-1]) if len(counts) else 0

    def __len__(self) -> int:
        return self._length

    def locate(self, index: int) -> tuple[int, int, int, int, bool]:
        """Where item ``index`` comes from: ``(variant, y, x, k, flip)``.

        ``(y, x)`` is the LR top-left corner; the pair is flipped left-right when ``flip`` and
        then rotated by ``np.rot90(..., k)``.
        """
        if not 0 <= index < self._length:
            if -self._length <= index < 0:
                index += self._length
            else:
                raise IndexError(f"index {index} out of range for {self._length} items")
        rng = np.random.default_rng((self.seed, _ITEM_STREAM, int(index)))
        p = self.config.patch_size
        variant = int(np.searchsorted(self._ends, index, side="right"))
        height, width = (int(n) for n in self._lr_shapes[variant])
        if self.config.sampling == "stride":
            first = int(self._ends[variant - 1]) if variant else 0
            columns = (width - p) // self.config.stride + 1
            row, column = divmod(int(index) - first, columns)
            y, x = row * self.config.stride, column * self.config.stride
        else:
            y = int(rng.integers(0, height - p + 1))
            x = int(rng.integers(0, width - p + 1))
        flip = bool(rng.integers(2)) if self.config.flips else False
        k = int(rng.integers(4)) if self.config.rotations else 0
        return variant, y, x, k, flip

    def _crops(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Item ``index`` as ``uint8`` RGB views ``(p, p, 3)`` and ``(r p, r p, 3)``."""
        variant, y, x, k, flip = self.locate(index)
        p, r = self.config.patch_size, self.config.scale
        lr_image, hr_image = self.cache.pair(variant)
        lr = lr_image[y : y + p, x : x + p]
        hr = hr_image[r * y : r * (y + p), r * x : r * (x + p)]
        if flip:
            lr, hr = lr[:, ::-1], hr[:, ::-1]
        if k:
            lr, hr = np.rot90(lr, k), np.rot90(hr, k)
        return lr, hr

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        lr, hr = self._crops(index)
        return _to_tensor(lr, self.config.channels), _to_tensor(hr, self.config.channels)

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Tensor, Tensor]]:
        """``[self[i] for i in indices]``, with one colour conversion for all of them.

        A ``DataLoader`` fetches its batches through this; the values are those of
        ``self[i]`` (the conversion is per pixel).
        """
        if not indices:
            return []
        lr, hr = self._batch(indices)
        return list(zip(lr, hr, strict=True))

    def _batch(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        """Items ``indices`` (at least one) stacked: ``(B, C, p, p)`` and ``(B, C, r p, r p)``."""
        crops = [self._crops(int(i)) for i in indices]
        channels = self.config.channels
        lr = _to_tensor(np.stack([lr for lr, _ in crops]), channels)
        hr = _to_tensor(np.stack([hr for _, hr in crops]), channels)
        return lr, hr


def training_batches(
    folders: Iterable[str | Path] | str | Path,
    config: DataConfig,
    batch_size: int,
    cache_dir: str | Path,
    seed: int = 0,
    shuffle: bool = True,
    *,
    progress: Progress | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """An endless iterator of ``(lr (B, C, p, p), hr (B, C, r p, r p))`` batches.

    For a hand-written training loop (like Keras' ``DataGenerator``). The cache is built (or
    reused) now, so errors surface here. Batch ``b`` holds global samples ``b B .. b B + B - 1``,
    where sample ``j`` is dataset item ``epoch_order(N, seed, j // N)[j % N]`` (or ``j % N``
    without ``shuffle``); a batch may span two epochs, and every batch is full.

    Args:
        folders: Folders of HR images.
        config: The data configuration.
        batch_size: Patches per batch, positive.
        cache_dir: Where the patch cache lives (see :meth:`PatchCache.build`).
        seed: Seeds the items and the epoch orders.
        shuffle: Draw a fresh permutation per epoch; otherwise dataset order.
        progress: Passed to :meth:`PatchCache.build`.

    Raises:
        ValueError: On a non-positive ``batch_size`` or an empty dataset.

    Example:
        >>> batches = training_batches(["HR/"], DataConfig(scale=3), 16, "cache/")  # doctest: +SKIP
        >>> lr, hr = next(batches)  # (16, 1, 17, 17), (16, 1, 51, 51)  # doctest: +SKIP
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    seed = _check_seed(seed)
    dataset = PatchDataset(PatchCache.build(folders, config, cache_dir, progress), config, seed)
    if len(dataset) == 0:
        raise ValueError("the dataset has no patches")
    return _batches(dataset, batch_size, seed, shuffle)


def _batches(
    dataset: PatchDataset, batch_size: int, seed: int, shuffle: bool
) -> Iterator[tuple[Tensor, Tensor]]:
    length = len(dataset)
    epoch, order = -1, np.arange(length)
    sample = 0
    while True:
        indices = []
        for _ in range(batch_size):
            if sample // length != epoch:
                epoch = sample // length
                order = epoch_order(length, seed, epoch) if shuffle else np.arange(length)
            indices.append(int(order[sample % length]))
            sample += 1
        yield dataset._batch(indices)
