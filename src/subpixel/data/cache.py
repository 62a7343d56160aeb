"""A build-once, memory-mapped store of every training variant's HR and LR pixels.

Layout of a cache folder ``<cache_dir>/patches-x<r>-<degradation>-<key>/``:

* ``hr.bin``: the HR pixels of every variant, ``uint8`` RGB, row-major ``(h, w, 3)`` blocks
  back to back.
* ``lr.bin``: the LR pixels, ``(h / r, w / r, 3)`` blocks in the same order.
* ``index.json``: the format version, the key, the settings the pixels depend on, and per
  variant its source file, downscale factor, HR height and width and byte offsets into
  ``hr.bin`` and ``lr.bin``.

``key`` hashes the source files (resolved paths, sizes, modification times) and every setting
the pixels depend on, so a changed dataset or configuration gets a new folder and an unchanged
one is reused without decoding anything. A cache is written into a temporary sibling folder
and renamed into place when complete, so a folder with the final name is always whole; a
killed build leaves only a ``.patches-*.partial`` folder, which is never read (delete it at
leisure).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from subpixel.data.config import DataConfig
from subpixel.data.degradation import make_variants
from subpixel.errors import ImageError
from subpixel.evaluation import list_images as _list_folder
from subpixel.files import folder_beside
from subpixel.images import read_image

__all__ = ["CACHE_FORMAT", "PatchCache", "Variant", "cache_key", "list_images", "read_rgb"]

#: Bumped whenever the cache layout or the way pixels are made changes.
CACHE_FORMAT = 1

Progress = Callable[[int, int], None]


def list_images(folders: Iterable[str | Path] | str | Path) -> list[Path]:
    """Image files directly inside each folder (not recursive), sorted by name per folder.

    Args:
        folders: One folder or several; any folder of ``.png``/``.jpg``/``.jpeg``/``.bmp``/
            ``.tif`` files works (a DIV2K HR folder as is).

    Returns:
        The files, folder by folder in the order given.

    Raises:
        ValueError: If no folder is given.
        ImageError: If a folder does not exist or holds no image.
    """
    if isinstance(folders, (str, Path)):
        folders = [folders]
    paths = [Path(folder) for folder in folders]
    if not paths:
        raise ValueError("no image folders given")
    files: list[Path] = []
    for folder in paths:
        if not folder.is_dir():
            raise ImageError(f"image folder not found: {folder}")
        files.extend(_list_folder(folder))
    return files


def read_rgb(path: Path) -> np.ndarray:
    """Decode an image file to ``(H, W, 3)`` ``uint8`` RGB.

    Grayscale is repeated over three channels, alpha is dropped, 16-bit grayscale is scaled
    to 8 bits (``round(v / 257)``; Pillow's own conversion would clip it).

    Raises:
        ImageError: If the file cannot be decoded or holds 32-bit integer or float pixels.
    """
    image = read_image(path)
    if image.mode.startswith("I;16"):
        gray = np.asarray(image).astype(np.float64) / 257.0
        gray8 = np.floor(gray + 0.5).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray8[..., None], 3, axis=2))
    if image.mode in ("I", "F"):
        raise ImageError(f"unsupported image kind {image.mode} (32-bit pixels): {path}")
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _source_files(folders: Iterable[str | Path] | str | Path) -> list[Path]:
    # One canonical order for one set of files, whatever order the folders come in, so the
    # same files always give the same cache and the same dataset items.
    return sorted({path.resolve() for path in list_images(folders)})


def _key_settings(config: DataConfig) -> dict[str, Any]:
    # patch_size is here because variants smaller than one HR patch are left out.
    return {
        "scale": config.scale,
        "degradation": config.degradation,
        "blur_sigma": config.blur_sigma,
        "downscale_augment": list(config.downscale_augment),
        "patch_size": config.patch_size,
    }


def cache_key(files: Iterable[Path], config: DataConfig) -> str:
    """SHA-256 (hex) of the files' paths, sizes and modification times and the settings."""
    entries = []
    for path in files:
        stat = path.stat()
        entries.append([str(path), stat.st_size, stat.st_mtime_ns])
    payload = {"format": CACHE_FORMAT, "files": entries, "settings": _key_settings(config)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Variant:
    """One stored HR image (a source image or a downscaled copy) and where its bytes are.

    ``height`` and ``width`` are the HR size, multiples of the scale; offsets are in bytes.
    """

    source: str
    factor: float
    height: int
    width: int
    hr_offset: int
    lr_offset: int


def _file_variants(path: Path, config: DataConfig) -> list[tuple[float, np.ndarray, np.ndarray]]:
    return make_variants(read_rgb(path), config)


# Below this many files a process pool costs more than it saves.
_POOL_FILES = 16


def _each_file_variants(
    files: list[Path], config: DataConfig, workers: int
) -> Iterator[list[tuple[float, np.ndarray, np.ndarray]]]:
    """``make_variants`` of each file, in order; decoded by ``workers`` processes."""
    if workers <= 1 or len(files) < _POOL_FILES:
        for path in files:
            yield _file_variants(path, config)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_file_variants, files, [config] * len(files), chunksize=4)


def _write_cache(
    folder: Path,
    files: list[Path],
    config: DataConfig,
    key: str,
    progress: Progress | None,
    workers: int = 1,
) -> None:
    variants: list[dict[str, Any]] = []
    hr_offset = lr_offset = 0
    with open(folder / "hr.bin", "wb") as hr_file, open(folder / "lr.bin", "wb") as lr_file:
        each = _each_file_variants(files, config, workers)
        for done, (path, made) in enumerate(zip(files, each, strict=True), start=1):
            for factor, hr, lr in made:
                hr_file.write(hr.tobytes())
                lr_file.write(lr.tobytes())
                variants.append(
                    {
                        "source": str(path),
                        "factor": factor,
                        "height": hr.shape[0],
                        "width": hr.shape[1],
                        "hr_offset": hr_offset,
                        "lr_offset": lr_offset,
                    }
                )
                hr_offset += hr.nbytes
                lr_offset += lr.nbytes
            if progress is not None:
                progress(done, len(files))
        for handle in (hr_file, lr_file):
            handle.flush()
            os.fsync(handle.fileno())
    if not variants:
        side = config.scale * config.patch_size
        raise ValueError(f"no image is at least one HR patch ({side}x{side} px) in size")
    index = {
        "format": CACHE_FORMAT,
        "key": key,
        "settings": _key_settings(config),
        "hr_bytes": hr_offset,
        "lr_bytes": lr_offset,
        "variants": variants,
    }
    with open(folder / "index.json", "w", encoding="utf-8") as stream:
        json.dump(index, stream, indent=1)
        stream.flush()
        os.fsync(stream.fileno())


class PatchCache:
    """Every variant's HR and LR pixels, memory-mapped read-only.

    Build (or reuse) one with :meth:`PatchCache.build`; open an existing folder with
    :meth:`PatchCache.open`. The memory maps are opened on first access and are not pickled,
    so a cache (and a dataset holding one) can be sent to ``DataLoader`` worker processes.

    Attributes:
        path: The cache folder.
        scale: The scale ``r``.
        settings: The settings the pixels were made with (scale, degradation, blur_sigma,
            downscale_augment, patch_size).
        variants: One :class:`Variant` per stored image.
    """

    def __init__(self, path: Path) -> None:
        """Open the complete cache folder ``path`` (prefer :meth:`open`)."""
        self.path = Path(path)
        index_file = self.path / "index.json"
        try:
            index = json.loads(index_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ValueError(f"not a readable patch cache: {self.path} ({error})") from error
        if index.get("format") != CACHE_FORMAT:
            raise ValueError(
                f"patch cache {self.path} has format {index.get('format')!r}, "
                f"expected {CACHE_FORMAT}; delete it to rebuild"
            )
        self.settings: dict[str, Any] = index["settings"]
        self.scale: int = int(self.settings["scale"])
        self.variants: tuple[Variant, ...] = tuple(Variant(**v) for v in index["variants"])
        for name, size in (("hr.bin", index["hr_bytes"]), ("lr.bin", index["lr_bytes"])):
            actual = (self.path / name).stat().st_size if (self.path / name).is_file() else -1
            if actual != size:
                raise ValueError(
                    f"patch cache {self.path} is damaged ({name} holds {actual} "
                    f"bytes, expected {size}); delete it to rebuild"
                )
        self._hr: np.ndarray | None = None
        self._lr: np.ndarray | None = None

    @classmethod
    def open(cls, path: str | Path) -> PatchCache:
        """Open an existing cache folder.

        Raises:
            ValueError: If the folder is not a complete cache of this format.
        """
        return cls(Path(path))

    @classmethod
    def build(
        cls,
        folders: Iterable[str | Path] | str | Path,
        config: DataConfig,
        cache_dir: str | Path,
        progress: Progress | None = None,
        workers: int = 1,
    ) -> PatchCache:
        """Build the cache for ``folders`` under ``config``, or reuse an existing one.

        Each image is decoded once; every variant (the image and its ``downscale_augment``
        copies) is cropped to a multiple of ``r``, degraded, and its HR and LR pixels are
        appended to the cache. Variants smaller than one HR patch are left out.

        Args:
            folders: Folders of HR images (files directly inside, see :func:`list_images`).
            config: Only ``scale``, ``degradation``, ``blur_sigma``, ``downscale_augment`` and
                ``patch_size`` matter here.
            cache_dir: Where cache folders live; created if missing.
            progress: Called as ``progress(done, total)`` after each decoded image (never
                called when the cache is reused).
            workers: Processes that decode and degrade images (one file each at a time;
                the cache is the same for any number).

        Returns:
            The opened cache.

        Raises:
            ImageError: A folder is missing or empty, or an image cannot be decoded (the
                message names the file).
            ValueError: No image is as large as one HR patch.
        """
        files = _source_files(folders)
        key = cache_key(files, config)
        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        final = cache_dir / f"patches-x{config.scale}-{config.degradation}-{key[:16]}"
        if final.is_dir():
            return cls.open(final)
        temporary = folder_beside(final, ".partial")
        try:
            _write_cache(temporary, files, config, key, progress, workers)
            try:
                os.rename(temporary, final)
            except OSError:
                if not (final / "index.json").is_file():
                    raise
                # Another process completed the same cache first; theirs is identical.
                shutil.rmtree(temporary, ignore_errors=True)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        return cls.open(final)

    def __len__(self) -> int:
        """The number of stored variants."""
        return len(self.variants)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_hr"] = state["_lr"] = None  # never pickle the pixels; reopen lazily
        return state

    def _maps(self) -> tuple[np.ndarray, np.ndarray]:
        if self._hr is None or self._lr is None:
            self._hr = np.memmap(self.path / "hr.bin", dtype=np.uint8, mode="r")
            self._lr = np.memmap(self.path / "lr.bin", dtype=np.uint8, mode="r")
        return self._lr, self._hr

    def lr_shape(self, index: int) -> tuple[int, int]:
        """``(height, width)`` of variant ``index``'s LR image."""
        variant = self.variants[index]
        return variant.height // self.scale, variant.width // self.scale

    def pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Read-only views ``(lr, hr)`` of variant ``index``.

        Returns:
            ``lr`` ``(h / r, w / r, 3)`` and ``hr`` ``(h, w, 3)``, both ``uint8`` RGB.
        """
        variant = self.variants[index]
        lr_map, hr_map = self._maps()
        h, w = variant.height, variant.width
        hl, wl = h // self.scale, w // self.scale
        hr = hr_map[variant.hr_offset : variant.hr_offset + h * w * 3].reshape(h, w, 3)
        lr = lr_map[variant.lr_offset : variant.lr_offset + hl * wl * 3].reshape(hl, wl, 3)
        return lr, hr

    @property
    def nbytes(self) -> int:
        """Bytes of pixels stored (HR plus LR)."""
        r2 = self.scale * self.scale
        return sum(v.height * v.width * 3 * (r2 + 1) // r2 for v in self.variants)

    def __repr__(self) -> str:
        return f"PatchCache({str(self.path)!r}, variants={len(self)}, scale={self.scale})"
