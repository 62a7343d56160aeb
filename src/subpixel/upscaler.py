"""The ready model: a network with its card, engine, precision and device, behind one call.

``subpixel.load_model`` returns an :class:`Upscaler`. It is what every entry point runs — the
CLI, ``subpixel.upscale_image``, video, evaluation and the benchmarks — so the Python face
gets the same path as ``subpixel upscale``: the engine measured fastest on this machine
(``engine="auto"``, ``subpixel.engines``) in the precision the card allows
(``precision="auto"``, ``subpixel.precision``).

Exactness. ``precision="auto"`` runs 8-bit images in the card's precision (bfloat16 or
"mixed" only where its recorded loss is under 0.05 dB, on hardware with native bfloat16), and
16-bit images and float arrays always in float32: bfloat16 keeps 8 significant bits, which
would cut a 16-bit gradient to a few hundred levels. The automatic engine is one whose tiles
matched the whole image bit for bit when it was chosen, or, where a faster engine's did not,
that engine run on a fixed grid of tiles that every image is cut into however it is tiled
(``subpixel.engines.grid``): tiled and untiled results are the same (``subpixel.engines``).

Engines are built on first use, one per precision, and kept: making an Upscaler costs only
the weights; the first image pays for the engine (a calibration the first time on a machine,
a cache read after).

Example:
    >>> import numpy as np, subpixel
    >>> upscaler = subpixel.load_model("bicubic", scale=2)
    >>> upscaler(np.zeros((4, 6, 3), np.uint8)).shape
    (8, 12, 3)
    >>> upscaler.scale, upscaler.colour_space
    (2, 'y')
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch
from PIL import Image
from torch import nn

from subpixel.engines import (
    ENGINES,
    PRECISIONS,
    Engine,
    EngineError,
    TorchEngine,
    auto_choice,
    chosen_engine,
    make_engine,
)
from subpixel.engines.grid import GRID_SUFFIX, GridEngine
from subpixel.errors import ModelError
from subpixel.limits import device_memory_budget
from subpixel.models import SUBPIXEL_FORM
from subpixel.pipeline import device as device_pipeline
from subpixel.pipeline import image as inference
from subpixel.pipeline.tiling import receptive_radius, work_per_lr_pixel
from subpixel.precision import precision_for_card
from subpixel.weights import DEFAULT_MODEL, ModelCard, card_of, load_network

__all__ = [
    "DEFAULT_CACHE",
    "Upscaler",
    "as_upscaler",
    "load_model",
    "upscale_array",
    "upscale_image",
]

Progress = Callable[[int, int], None]

#: ``cache_file`` meaning the user's engine cache (``engines.default_cache_file()``).
DEFAULT_CACHE = "default"


class Upscaler:
    """A network ready to upscale: card, engine, precision and device decided in one place.

    Call it on a PIL image or a uint8/uint16 numpy array (H, W[, C]); it returns the same
    kind (see ``subpixel.pipeline.image`` for modes, alpha, scales and tiles).

    Args:
        network: the network (eval mode is set); its parameters' device is where it runs.
        card: what the network is (scale, channels, colour space, recorded losses).
        engine: ``"auto"`` (the fastest tile-exact engine, measured once per machine) or one
            of ``subpixel.engines.ENGINES``.
        precision: ``"auto"`` (see the module docstring) or one of
            ``subpixel.engines.PRECISIONS``; a named precision is used for every input.
        threads: threads for ONNX Runtime / OpenVINO (PyTorch's are process-wide:
            ``subpixel.engines.set_threads``).
        cache_file: where ``"auto"`` engine choices are remembered: ``"default"`` (the
            user's cache folder), a path, or ``None`` (this process only).
        choices: engines already chosen, by precision (``{"bfloat16": "openvino"}``;
            ``engine_choice`` answers them), run in place of ``engine`` for those
            precisions: how the actors of a Ray job all run the engines its driver chose.

    Raises:
        EngineError: an unknown engine or precision name.
    """

    def __init__(
        self,
        network: nn.Module,
        card: ModelCard,
        *,
        engine: str = "auto",
        precision: str = "auto",
        threads: int | None = None,
        cache_file: str | Path | None = DEFAULT_CACHE,
        choices: Mapping[str, str] | None = None,
    ) -> None:
        if engine not in ("auto", *ENGINES):
            raise EngineError(f"unknown engine {engine!r}; choose from auto, {', '.join(ENGINES)}")
        if precision not in ("auto", *PRECISIONS):
            names = ", ".join(("auto", *PRECISIONS))
            raise EngineError(f"unknown precision {precision!r}; choose from {names}")
        self.choices = _checked_choices(choices or {})
        self.network = network.eval()
        self.card = card
        self.engine = engine
        self.precision = precision
        self.threads = threads
        self._cache_file = cache_file
        first = next(network.parameters(), None)
        self.device = first.device if first is not None else torch.device("cpu")
        self._engines: dict[str, Engine] = {}

    @classmethod
    def from_network(cls, network: nn.Module, **options: Any) -> Upscaler:
        """An Upscaler for a network built or trained in this process (its card attached,
        or described from its class and config: ``subpixel.weights.card_of``)."""
        return cls(network, card_of(network), **options)

    # ------------------------------------------------------------------ facts
    @property
    def scale(self) -> int:
        """The network's own (native) scale."""
        return self.card.scale

    @property
    def channels(self) -> int:
        """Channels the network takes: 1 (Y) or 3 (RGB)."""
        return self.card.channels

    @property
    def colour_space(self) -> str:
        """``"y"`` (BT.601 studio-swing luminance; chroma by bicubic) or ``"rgb"``."""
        return self.card.colour_space

    @property
    def name(self) -> str:
        """The model's name (``ModelCard.name``)."""
        return self.card.name

    @functools.cached_property
    def receptive_radius(self) -> int:
        """LR pixels of context a tile needs on each side (``subpixel.pipeline.tiling``)."""
        return receptive_radius(self.network)

    def __repr__(self) -> str:
        return (
            f"Upscaler({self.name} x{self.scale}, {self.colour_space}, engine={self.engine}, "
            f"precision={self.precision}, device={self.device})"
        )

    # ------------------------------------------------------------------ the network
    def precision_for(self, bits: int = 8) -> str:
        """The arithmetic an input of ``bits`` bits per sample runs in: the named precision,
        or for ``"auto"`` float32 above 8 bits and the card's choice at 8
        (``subpixel.precision.precision_for_card``)."""
        if self.precision != "auto":
            return self.precision
        if bits > 8 or self.engine == "onnxruntime":  # ONNX Runtime's kernels: float32 only
            return "float32"
        return precision_for_card(self.card, self.device)

    def engine_for(self, precision: str) -> Engine:
        """The engine that runs ``precision`` (built on first use, then kept)."""
        engine = self._engines.get(precision)
        if engine is None:
            build = chosen_engine if precision in self.choices else make_engine
            engine = build(
                self.network,
                self.choices.get(precision, self.engine),
                precision=precision,
                threads=self.threads,
                cache_file=self._engine_cache(),
            )
            self._engines[precision] = engine
        return engine

    def engine_choice(self, bits: int = 8) -> str:
        """The engine that runs ``bits``-bit inputs, by name (``"+subpixel"`` for FSRCNN's
        sub-pixel form): one chosen (``choices``) or named; for ``"auto"`` the one measured
        fastest and tile-exact on this machine at this thread count (measured now the first
        time, then remembered; nothing is built). Pass it to other processes as
        ``choices={upscaler.precision_for(bits): choice}``."""
        precision = self.precision_for(bits)
        name = self.choices.get(precision, self.engine)
        if name != "auto":
            return name
        return auto_choice(
            self.network, precision, threads=self.threads, cache_file=self._engine_cache()
        )

    def _engine_cache(self) -> Path | None:
        if self._cache_file == DEFAULT_CACHE:
            from subpixel.engines import default_cache_file

            return default_cache_file()
        return None if self._cache_file is None else Path(self._cache_file)

    def run(self, lr: np.ndarray, *, bits: int = 8, grid_tile: bool = False) -> np.ndarray:
        """The network alone: (B, C, H, W) float32 in [0, 1] -> (B, C, rH, rW) float32.

        An engine that runs on a fixed grid of tiles (``tile_grid``) runs each frame tile by
        tile on it, unless ``grid_tile`` says that ``lr`` is one of the grid's tiles already,
        cut by the caller (the image pipeline's tiles): then it runs as it is.

        Raises:
            ModelError: the output is not finite (NaN or inf): broken weights, which
                clamping and quantising would otherwise hide (NaN becomes 0, inf the peak).
        """
        engine = self.engine_for(self.precision_for(bits))
        run: Callable[[np.ndarray], np.ndarray] = engine
        if isinstance(engine, GridEngine) and grid_tile:
            run = engine.run_tile  # one tile of the grid, cut by the caller
        sr = run(lr)
        self._check_finite(bool(np.isfinite(sr).all()))
        return sr

    def tile_grid(self, bits: int = 8) -> int | None:
        """The tile side (LR pixels) of the fixed grid the engine for ``bits``-bit inputs
        runs on, or None for an engine whose tiles equal its whole image at any size
        (``subpixel.engines.grid``). The image pipeline cuts its tiles on this grid."""
        engine = self.engine_for(self.precision_for(bits))
        return engine.tile if isinstance(engine, GridEngine) else None

    def _check_finite(self, finite: bool) -> None:
        if not finite:
            raise ModelError(
                f"the output of {self.name} x{self.scale} is not finite (NaN or inf): "
                "its weights are broken"
            )

    def run_tensor(self, lr: torch.Tensor, *, bits: int = 8) -> torch.Tensor:
        """``run`` for a tensor (B, C, H, W); the result is on the tensor's device. A torch
        engine runs it where it is (no trip through the host); others through numpy.

        On the CPU a batch runs frame by frame: a CPU library may pick another convolution
        algorithm for another batch size (oneDNN does), which can move a level, and the
        engines already use every core on one frame. So a frame's bytes never depend on its
        batch-mates there.
        """
        if lr.device.type == "cpu" and lr.shape[0] > 1:
            return torch.cat([self.run_tensor(frame[None], bits=bits) for frame in lr])
        engine = self.engine_for(self.precision_for(bits))
        if isinstance(engine, TorchEngine):
            sr = engine.run_tensor(lr.detach())
            self._check_finite(bool(torch.isfinite(sr).all()))
            return sr.to(lr.device)
        out = self.run(lr.detach().float().cpu().numpy(), bits=bits)
        return torch.from_numpy(np.ascontiguousarray(out)).to(lr.device)

    def upscale_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """A batch of integer frames upscaled by the network's own scale where they are.

        ``frames`` is (B, H, W, C) ``uint8`` or ``uint16`` (C: gray, gray + alpha, RGB, RGB +
        alpha), on this Upscaler's device; the result is (B, rH, rW, C) of the same type,
        there. Colour conversion, chroma bicubic and rounding run on the device too
        (``subpixel.pipeline.device``), the network once per batch: on a GPU nothing crosses
        to the host.
        """
        bits = 8 if frames.dtype == torch.uint8 else 16
        return device_pipeline.upscale_frames(
            frames,
            functools.partial(self.run_tensor, bits=bits),
            scale=self.scale,
            colour_space=self.colour_space,
            peak=(1 << bits) - 1,
        )

    # ------------------------------------------------------------------ images
    @overload
    def __call__(
        self,
        image: Image.Image,
        *,
        scale: float | None = None,
        tile: int | None = None,
        max_memory: int | None = None,
        progress: Progress | None = None,
        alpha: str = "bicubic",
    ) -> Image.Image: ...
    @overload
    def __call__(
        self,
        image: np.ndarray,
        *,
        scale: float | None = None,
        tile: int | None = None,
        max_memory: int | None = None,
        progress: Progress | None = None,
        alpha: str = "bicubic",
    ) -> np.ndarray: ...
    def __call__(
        self,
        image: Image.Image | np.ndarray,
        *,
        scale: float | None = None,
        tile: int | None = None,
        max_memory: int | None = None,
        progress: Progress | None = None,
        alpha: str = "bicubic",
    ) -> Image.Image | np.ndarray:
        """Upscale a PIL image or a uint8/uint16 array; returns the same kind.

        The keywords are ``subpixel.upscale_image``'s. On a GPU, an image at the network's
        own scale with bicubic alpha is upscaled on the device from one upload to one
        download (``upscale_frames``) when its work fits in half the device's free memory,
        whole, whatever ``tile`` asks: a tile size bounds memory, and that budget bounds it
        there, so tiled and untiled give the same bytes. The rest goes through the CPU
        pipeline (tiled as asked, or by the default limits; the network on the device).
        """
        if self._goes_to_device(scale, max_memory, alpha):
            return self._batch_on_device([image], tile=tile)[0]
        return inference.upscale(
            image,
            self,
            scale=scale,
            tile=tile,
            max_memory=max_memory,
            progress=progress,
            alpha=alpha,
        )

    def _goes_to_device(self, scale: float | None, max_memory: int | None, alpha: str) -> bool:
        """Whether a call with these keywords takes the device pipeline (on a GPU, at the
        network's own scale, with bicubic alpha, no host memory limit; tiles or not)."""
        return (
            self.device.type != "cpu"
            and max_memory is None
            and scale in (None, self.scale)
            and alpha == "bicubic"
        )

    def upscale_batch(
        self,
        images: Sequence[Image.Image | np.ndarray],
        *,
        scale: float | None = None,
        tile: int | None = None,
        max_memory: int | None = None,
        alpha: str = "bicubic",
    ) -> list[Image.Image | np.ndarray]:
        """Several images, each returned as ``self(image, ...)`` returns it.

        On a GPU, at the network's own scale, with bicubic alpha, images of one size and
        type (after Pillow's mode conversions) go through ``upscale_frames`` together: one
        upload, the network once, one download per batch, as many a batch as fit in half
        the device's free memory (``limits.device_memory_budget``), whatever ``tile`` asks;
        an image too big for it alone is tiled through the image pipeline. Elsewhere (the
        CPU, whose engines already use every core; other scales) one image at a time.
        """
        if self._goes_to_device(scale, max_memory, alpha):
            return self._batch_on_device(images, tile=tile)
        return [
            self(image, scale=scale, tile=tile, max_memory=max_memory, alpha=alpha)
            for image in images
        ]

    def _batch_on_device(
        self, images: Sequence[Image.Image | np.ndarray], *, tile: int | None = None
    ) -> list[Image.Image | np.ndarray]:
        """``images`` through ``upscale_frames``, those of one shape and type as one batch;
        one too big for the device alone through the image pipeline, at ``tile``."""
        arrays = [
            inference.pil_to_array(i)[0] if isinstance(i, Image.Image) else np.asarray(i)
            for i in images
        ]
        groups: dict[tuple[tuple[int, ...], np.dtype], list[int]] = {}
        for index, array in enumerate(arrays):
            groups.setdefault((array.shape, array.dtype), []).append(index)
        results: list[Image.Image | np.ndarray] = list(images)
        budget = device_memory_budget(self.device)
        for (shape, _dtype), indices in groups.items():
            per_image = self._device_work(shape)
            size = len(indices) if budget is None else int(budget // per_image)
            if size == 0:  # too big for the device whole: tiles through the image pipeline
                for index in indices:
                    results[index] = inference.upscale(images[index], self, tile=tile)
                continue
            for start in range(0, len(indices), size):
                chunk = indices[start : start + size]
                stack = np.stack([arrays[i].reshape(*arrays[i].shape[:2], -1) for i in chunk])
                frames = torch.from_numpy(stack).to(self.device)
                out = self.upscale_frames(frames).cpu().numpy()
                for frame, index in zip(out, chunk, strict=True):
                    array = frame.reshape(frame.shape[:2]) if arrays[index].ndim == 2 else frame
                    pil = isinstance(images[index], Image.Image)
                    results[index] = Image.fromarray(np.ascontiguousarray(array)) if pil else array
        return results

    def _device_work(self, shape: tuple[int, ...]) -> float:
        """Estimated device bytes of one image of array ``shape`` in ``upscale_frames``: the
        image pipeline's per-pixel estimate (``pipeline.tiling.work_per_lr_pixel``)."""
        channels = shape[2] if len(shape) == 3 else 1
        return shape[0] * shape[1] * work_per_lr_pixel(self.network, channels)

    def upscale_array(
        self,
        planes: np.ndarray,
        *,
        has_alpha: bool = False,
        scale: float | None = None,
        tile: int | None = None,
        max_memory: int | None = None,
        progress: Progress | None = None,
        alpha: str = "bicubic",
    ) -> np.ndarray:
        """A float (H, W, C) array in [0, 1] (C in {1, 3}, plus an optional last alpha
        plane) -> float32 (H', W', C) clipped to [0, 1]; float arrays run in float32 under
        ``precision="auto"``."""
        return inference.upscale_float(
            planes,
            self,
            has_alpha=has_alpha,
            scale=scale,
            tile=tile,
            max_memory=max_memory,
            progress=progress,
            alpha=alpha,
        )


def _checked_choices(choices: Mapping[str, str]) -> dict[str, str]:
    for precision, name in choices.items():
        engine = name.removesuffix(GRID_SUFFIX).removesuffix(SUBPIXEL_FORM)
        if precision not in PRECISIONS or engine not in ENGINES:
            raise EngineError(
                f"unknown engine choice {precision!r}: {name!r}; a precision of "
                f"{', '.join(PRECISIONS)} and an engine of {', '.join(ENGINES)}"
            )
    return dict(choices)


def load_model(
    name_or_path: str | Path = DEFAULT_MODEL,
    scale: int | None = None,
    device: str | torch.device = "cpu",
    *,
    engine: str = "auto",
    precision: str = "auto",
    threads: int | None = None,
    cache_file: str | Path | None = DEFAULT_CACHE,
    choices: Mapping[str, str] | None = None,
) -> Upscaler:
    """A ready :class:`Upscaler` by bundled name or weights file.

    Args:
        name_or_path: a bundled model's name (``subpixel models`` lists them),
            ``"bicubic"``, or a ``.safetensors`` file.
        scale: the network's scale; for a file it must match the file's, for a name it
            picks the weights (default: 3, or the one scale bundled).
        device: where the network runs (``subpixel.devices.resolve_device``).
        engine, precision, threads, cache_file, choices: see :class:`Upscaler`.

    Raises:
        ModelError: unknown name, missing or invalid weights file.
        DeviceError: an unknown device, or one this machine does not have.
        ScaleError: a scale the model does not support.
        EngineError: an unknown engine or precision name.

    Example:
        >>> load_model("bicubic", scale=2).card.scale
        2
    """
    network = load_network(name_or_path, scale=scale, device=device)
    return Upscaler(
        network,
        card_of(network),
        engine=engine,
        precision=precision,
        threads=threads,
        cache_file=cache_file,
        choices=choices,
    )


def as_upscaler(model: Upscaler | nn.Module | str | Path) -> Upscaler:
    """``model`` itself, a bundled name or weights file loaded with the defaults, or a
    network run as it is (eager PyTorch in float32: what a network in training or a test
    needs; ``load_model`` gives the fastest path)."""
    if isinstance(model, Upscaler):
        return model
    if isinstance(model, str | Path):
        return _loaded(str(model))
    if isinstance(model, nn.Module):
        return Upscaler.from_network(model, engine="torch", precision="float32", cache_file=None)
    raise TypeError(f"expected an Upscaler, a network or a model name, got {type(model).__name__}")


@functools.lru_cache(maxsize=4)
def _loaded(name_or_path: str) -> Upscaler:
    """Models named in calls, kept so that a loop of calls builds the engine once."""
    return load_model(name_or_path)


def upscale_array(
    planes: np.ndarray,
    model: Upscaler | nn.Module | str | Path = DEFAULT_MODEL,
    *,
    has_alpha: bool = False,
    scale: float | None = None,
    tile: int | None = None,
    max_memory: int | None = None,
    progress: Progress | None = None,
    alpha: str = "bicubic",
) -> np.ndarray:
    """Upscale a float (H, W, C) array in [0, 1], C in {1, 3} plus an optional last alpha
    plane; returns float32 (H', W', C) clipped to [0, 1]. The float form of
    :func:`upscale_image` (same keywords), without quantisation; float arrays run in
    float32 under ``precision="auto"``.

    Example:
        >>> import numpy as np
        >>> upscale_array(np.zeros((4, 6, 3), np.float32), "bicubic", scale=2.5, tile=3).shape
        (10, 15, 3)
    """
    return as_upscaler(model).upscale_array(
        planes,
        has_alpha=has_alpha,
        scale=scale,
        tile=tile,
        max_memory=max_memory,
        progress=progress,
        alpha=alpha,
    )


@overload
def upscale_image(
    image: Image.Image,
    model: Upscaler | nn.Module | str | Path = DEFAULT_MODEL,
    *,
    scale: float | None = None,
    tile: int | None = None,
    max_memory: int | None = None,
    progress: Progress | None = None,
    alpha: str = "bicubic",
) -> Image.Image: ...
@overload
def upscale_image(
    image: np.ndarray,
    model: Upscaler | nn.Module | str | Path = DEFAULT_MODEL,
    *,
    scale: float | None = None,
    tile: int | None = None,
    max_memory: int | None = None,
    progress: Progress | None = None,
    alpha: str = "bicubic",
) -> np.ndarray: ...
def upscale_image(
    image: Image.Image | np.ndarray,
    model: Upscaler | nn.Module | str | Path = DEFAULT_MODEL,
    *,
    scale: float | None = None,
    tile: int | None = None,
    max_memory: int | None = None,
    progress: Progress | None = None,
    alpha: str = "bicubic",
) -> Image.Image | np.ndarray:
    """Upscale a PIL image or a uint8/uint16 numpy array; returns the same kind.

    Args:
        image: a PIL image (modes as in ``subpixel.images``) or an (H, W), (H, W, 1..4)
            uint8/uint16 array (2 or 4 channels: the last is alpha).
        model: an :class:`Upscaler` (``subpixel.load_model``), a bundled name or weights
            file (loaded with the defaults: the fastest exact path), or a network, which
            runs as it is (eager float32).
        scale: total factor, integer or not, in [1, 16]; ``None`` is the model's own. A
            factor other than the model's is reached by MATLAB bicubic after the network;
            each side becomes ``round(side * scale)`` (see ``subpixel.pipeline.image``).
        tile: process the image in tiles of ``tile x tile`` input pixels (plus a margin
            of the network's receptive radius); the result is the same as untiled.
        max_memory: a ceiling, in bytes, on the whole process (not with ``tile``): the
            image is tiled with the largest tile whose estimated work fits beside what the
            process holds and the output. ``None`` (and no ``tile``): what the process holds
            plus half the memory available.
        progress: called as ``progress(done_tiles, total_tiles)`` after each tile.
        alpha: ``"bicubic"`` (default) or ``"network"``: how an alpha plane is upscaled.

    Raises:
        ImageError: unsupported or empty image.
        ScaleError: a scale outside the rule above.
        ImageError: also an image that does not fit under the memory ceiling at all.
        TilingError: a tile below 1, or both ``tile`` and ``max_memory``.

    Example:
        >>> import numpy as np, subpixel
        >>> subpixel.upscale_image(np.zeros((4, 6, 3), np.uint8), "bicubic").shape
        (12, 18, 3)
        >>> subpixel.upscale_image(np.zeros((4, 6, 3), np.uint8), "bicubic", scale=1.5).shape
        (6, 9, 3)
    """
    return as_upscaler(model)(
        image, scale=scale, tile=tile, max_memory=max_memory, progress=progress, alpha=alpha
    )
