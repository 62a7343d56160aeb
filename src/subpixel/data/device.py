"""Training pairs held on the training device, and aligned random crops drawn there.

A data loader that cuts patches on the CPU cannot keep a GPU busy with networks this small:
each step is a few milliseconds of GPU work. :class:`DevicePairs` decodes nothing itself; it
takes every variant of a :class:`PatchCache` (each HR image cropped to a multiple of ``r``,
its MATLAB-bicubic LR, FSRCNN's downscaled copies), converts it once to float32 ``Y`` (or RGB)
with the loader's own conversion, and keeps all of them on the device as two flat tensors.
A batch is then one vectorised gather per side: the flat index of every pixel of every patch
is computed on the device, with the flip and rotation folded into the index, so LR and HR go
through exactly the same transform.

Sampling is uniform over every patch position of every variant, so an image is drawn in
proportion to its area (its number of positions): a 481x321 BSDS200 photo holds about six
times the patches of a 180x180 T91 crop and is drawn about six times as often, as if the
sets had been cut into patches beforehand (the papers' sub-images). Uniform over images
would show each small T91 picture's patches many times over while leaving most of the large
photos unseen.

Batch ``i`` of a run is a pure function of ``(seed, i)``: its generator is seeded from them
afresh (``numpy.random.SeedSequence``), so a resumed run needs no generator state beyond the
iteration it resumes at, and every process of a data-parallel run draws the same global
batch and takes its own share. The device's generator decides the numbers: a run on CUDA
sees other patches than the same run on the CPU.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from subpixel.data.cache import PatchCache
from subpixel.data.config import DataConfig
from subpixel.data.dataset import _check_seed, _to_tensor

__all__ = ["DevicePairs", "batch_seed", "patch_transforms"]

# Beside dataset.py's item (0) and order (1) streams.
_BATCH_STREAM = 2


def batch_seed(seed: int, iteration: int) -> int:
    """The 63-bit generator seed of batch ``iteration`` of a run seeded with ``seed``."""
    words = np.random.SeedSequence((_check_seed(seed), _BATCH_STREAM, int(iteration)))
    low, high = (int(w) for w in words.generate_state(2, np.uint32))
    return ((high & 0x7FFF_FFFF) << 32) | low


def patch_transforms(side: int) -> tuple[Tensor, Tensor]:
    """Source rows and columns of the 8 flips/rotations of a ``side`` x ``side`` patch.

    Transform ``t`` mirrors left-right when ``t >= 4`` (``np.fliplr``) and then turns by
    ``np.rot90(..., t % 4)``, as :class:`PatchDataset` does: pixel ``(i, j)`` of the
    transformed patch is pixel ``(rows[t, i, j], cols[t, i, j])`` of the original.

    Returns:
        ``rows`` and ``cols``, ``(8, side, side)`` ``int64``.
    """
    grid = np.arange(side * side).reshape(side, side)
    maps = []
    for t in range(8):
        moved = np.fliplr(grid) if t >= 4 else grid
        maps.append(np.rot90(moved, t % 4))
    flat = torch.from_numpy(np.stack(maps).astype(np.int64))
    return flat // side, flat % side


class DevicePairs:
    """Every variant's LR and HR image as float32 tensors on ``device``, and batches of
    aligned random crops of them.

    Variant ``v``'s LR image (``pair(v)[0]``, ``(C, h, w)``) pairs with its HR image
    (``(C, r h, r w)``) as in :class:`PatchDataset`: the LR patch at ``(y, x)`` with the HR
    patch at ``(r y, r x)``. Values equal the loader's (``PatchDataset``) for the same pixels.

    Args:
        cache: The pixels, from :meth:`PatchCache.build` (built for a patch size no smaller
            than ``config.patch_size``).
        config: Scale, channels, patch size, flips and rotations (``sampling`` is not used:
            positions are always uniform over all of them).
        device: Where the tensors live.

    Raises:
        ValueError: If ``config`` does not fit ``cache``.

    Example:
        >>> pairs = DevicePairs(cache, DataConfig(scale=3), "cuda")  # doctest: +SKIP
        >>> lr, hr = pairs.batch(seed=0, iteration=0, batch_size=64)  # doctest: +SKIP
        >>> tuple(lr.shape), tuple(hr.shape)  # doctest: +SKIP
        ((64, 1, 17, 17), (64, 1, 51, 51))
    """

    def __init__(self, cache: PatchCache, config: DataConfig, device: str | torch.device) -> None:
        if cache.scale != config.scale:
            raise ValueError(f"config.scale={config.scale} but the cache holds x{cache.scale}")
        if config.patch_size > cache.settings["patch_size"]:
            raise ValueError(
                f"config.patch_size={config.patch_size} exceeds the cache's "
                f"{cache.settings['patch_size']} (it may hold smaller images)"
            )
        if len(cache) == 0:
            raise ValueError("the cache holds no image")
        self.config = config
        self.device = torch.device(device)
        r, p, channels = config.scale, config.patch_size, config.channels
        shapes = np.array([cache.lr_shape(v) for v in range(len(cache))], dtype=np.int64)
        lr_sizes = shapes.prod(axis=1)
        lr_offsets = np.concatenate([[0], np.cumsum(lr_sizes)[:-1]])
        self.lr = torch.empty(channels, int(lr_sizes.sum()), device=self.device)
        self.hr = torch.empty(channels, int(lr_sizes.sum()) * r * r, device=self.device)
        for v in range(len(cache)):
            lr_u8, hr_u8 = cache.pair(v)
            start, size = int(lr_offsets[v]), int(lr_sizes[v])
            # The loader's conversion, so the device path trains on the same numbers.
            lr = _to_tensor(lr_u8, channels).reshape(channels, size)
            hr = _to_tensor(hr_u8, channels).reshape(channels, size * r * r)
            self.lr[:, start : start + size].copy_(lr)
            self.hr[:, start * r * r : (start + size) * r * r].copy_(hr)

        def on_device(values: np.ndarray) -> Tensor:
            return torch.from_numpy(values.astype(np.int64)).to(self.device)

        self._shapes, self._starts = shapes, lr_offsets
        self._lr_offsets = on_device(lr_offsets)
        self._widths = on_device(shapes[:, 1])
        # Patch positions per variant, and where each variant's positions end.
        columns = shapes[:, 1] - p + 1
        counts = (shapes[:, 0] - p + 1) * columns
        self.positions = int(counts.sum())
        self._columns = on_device(columns)
        self._ends = on_device(np.cumsum(counts))
        self._counts = on_device(counts)
        rows, cols = patch_transforms(p)
        self._lr_maps = rows.to(self.device), cols.to(self.device)
        rows, cols = patch_transforms(r * p)
        self._hr_maps = rows.to(self.device), cols.to(self.device)
        self._generator = torch.Generator(device=self.device)

    def __len__(self) -> int:
        """The number of variants."""
        return len(self._shapes)

    @property
    def nbytes(self) -> int:
        """Bytes of pixels held on the device."""
        return (self.lr.numel() + self.hr.numel()) * self.lr.element_size()

    def pair(self, index: int) -> tuple[Tensor, Tensor]:
        """Views ``(lr (C, h, w), hr (C, r h, r w))`` of variant ``index``."""
        r = self.config.scale
        h, w = (int(n) for n in self._shapes[index])
        start = int(self._starts[index])
        lr = self.lr[:, start : start + h * w].view(-1, h, w)
        hr = self.hr[:, start * r * r : (start + h * w) * r * r].view(-1, r * h, r * w)
        return lr, hr

    def locate(self, seed: int, iteration: int, batch_size: int) -> tuple[Tensor, ...]:
        """Where batch ``iteration``'s patches come from: ``(variant, y, x, transform)``.

        Each is a ``(batch_size,)`` ``int64`` tensor on the device; ``(y, x)`` is the LR
        top-left corner and ``transform`` indexes :func:`patch_transforms` (0 without flips
        or rotations; only 0-3 without flips, only 0 and 4 without rotations).
        """
        generator = self._generator
        generator.manual_seed(batch_seed(seed, iteration))
        shape, device = (batch_size,), self.device
        position = torch.randint(0, self.positions, shape, generator=generator, device=device)
        transform = torch.randint(0, 8, shape, generator=generator, device=device)
        if not self.config.flips:
            transform = transform % 4
        if not self.config.rotations:
            transform = transform - transform % 4
        variant = torch.searchsorted(self._ends, position, right=True)
        local = position - (self._ends[variant] - self._counts[variant])
        columns = self._columns[variant]
        return variant, local // columns, local % columns, transform

    def crops(
        self, variant: Tensor, y: Tensor, x: Tensor, transform: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The patches at ``(variant, y, x)`` under ``transform``, as from :meth:`locate`.

        Returns:
            ``lr`` ``(B, C, p, p)`` and ``hr`` ``(B, C, r p, r p)``, float32, contiguous.
        """
        r = self.config.scale
        width = self._widths[variant]
        lr_base = self._lr_offsets[variant] + y * width + x
        hr_base = self._lr_offsets[variant] * (r * r) + (r * y) * (r * width) + r * x
        lr = _gather(self.lr, lr_base, width, transform, self._lr_maps)
        hr = _gather(self.hr, hr_base, r * width, transform, self._hr_maps)
        return lr, hr

    def batch(
        self, seed: int, iteration: int, batch_size: int, rank: int = 0, world_size: int = 1
    ) -> tuple[Tensor, Tensor]:
        """Process ``rank``'s share of batch ``iteration``: ``(lr, hr)`` as :meth:`crops`.

        Every process draws the whole batch (a few random numbers) and gathers only its
        contiguous share, so the global batch is the same for any number of processes.
        """
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} does not split over {world_size} processes")
        share = batch_size // world_size
        where = self.locate(seed, iteration, batch_size)
        return self.crops(*(t[rank * share : (rank + 1) * share] for t in where))


def _gather(
    store: Tensor, base: Tensor, width: Tensor, transform: Tensor, maps: tuple[Tensor, Tensor]
) -> Tensor:
    """``(B, C, n, n)`` patches of the flat ``(C, N)`` ``store``: patch ``b`` starts at flat
    index ``base[b]`` of an image ``width[b]`` wide, read through transform ``transform[b]``."""
    rows, cols = maps[0][transform], maps[1][transform]  # (B, n, n)
    index = base[:, None, None] + rows * width[:, None, None] + cols  # (B, n, n)
    if store.shape[0] == 1:
        return store[0][index].unsqueeze(1)  # (B, 1, n, n)
    return store[:, index].transpose(0, 1).contiguous()  # (B, C, n, n)
