"""Named training recipes: ``subpixel train --recipe NAME --out DIR``.

Each recipe is a function returning a complete :class:`TrainConfig`; command-line flags
override its fields (``--iterations`` bounds the run's length, and with it the cosine).

The modern recipe: an L1-type loss (Charbonnier; MSE for ESPCN and FSRCNN-s), Adam with
linear warm-up and a long cosine, an exponential moving average of the weights (BasicSR's
0.999), large batches of large patches, as recent small-network work (ECBSR, ETDS) trains;
sized here for one GPU: every step is 256 patches of 24-48 LR pixels (0.15-0.59 M LR
pixels), cut on the device (``data_on_device``), from T91 + General100 + BSDS200 and
FSRCNN's 0.9/0.8/0.7/0.6 downscaled copies, on the Y channel with MATLAB bicubic
degradation, validated on Set5.

Sizing: measured on one H200 (torch 2.11, 256 patches of 40x40, float32, eager), whole
steps ran at 380/s for ESPCN x3, 216 for FSRCNN x3, 253 for FSRCNN-s x3 and 68 for ECBSR x3
(its blocks' merged kernels are many small launches), so 50,000 steps take 2.2, 3.9, 3.3
and 12 minutes. Building the cache of the three sets and their copies
took 17 s with 2 processes on the 2-core CPU machine (``PatchCache.build`` uses every core),
moving its 0.8 GB of float32 Y to the device 1.5 s, and ten Set5 validations take seconds.
On a CPU the same run is slow, and resumable (``--resume``).
"""

from __future__ import annotations

from collections.abc import Callable

from subpixel.paths import data_root
from subpixel.training.config import TrainConfig

__all__ = ["RECIPES", "TRAINING_SETS", "recipe"]

#: The training sets, under ``$SUBPIXEL_DATA/train``.
TRAINING_SETS = ("T91", "General100", "BSDS200")

# FSRCNN's extra copies of every training image.
_DOWNSCALED = (0.9, 0.8, 0.7, 0.6)


def _training_folders() -> tuple[str, ...]:
    return tuple(str(data_root() / "train" / name) for name in TRAINING_SETS)


def _modern(model: str, scale: int, patch_size: int, **fields: object) -> TrainConfig:
    """The modern recipe for ``model`` at ``scale``; ``fields`` override it."""
    options: dict[str, object] = {
        "model": model,
        "scale": scale,
        "data": _training_folders(),
        "val": "Set5",
        "downscale_augment": _DOWNSCALED,
        "data_on_device": True,
        "batch_size": 256,
        "patch_size": patch_size,
        "iterations": 50_000,
        "val_every": 5_000,
        "loss": "charbonnier",
        "charbonnier_eps": 1e-3,
        "optimizer": "adam",
        # Twice the 1e-3 the bundled models trained with at 64 patches a step: four times
        # the batch, square-root scaling; the warm-up keeps the first steps stable.
        "lr": 2e-3,
        "min_lr": 1e-5,
        "warmup": 1_000,
        "schedule": "cosine",
        "ema_decay": 0.999,
    }
    options.update(fields)
    return TrainConfig(**options)  # type: ignore[arg-type]


def _espcn(scale: int, patch_size: int) -> TrainConfig:
    # ESPCN (tanh) learns with MSE, as its paper and the shipped files did: on 2 Intel cores,
    # ESPCN x3, 40,000 steps of 64 patches of 32x32 at 1e-3, two runs side by side, Set5
    # 31.997 dB with MSE against 31.585 with Charbonnier, MSE ahead at every check
    # (docs/training/README.md).
    return _modern("espcn", scale, patch_size, loss="mse")


def _espcn_x2() -> TrainConfig:
    return _espcn(2, 48)  # HR patches 96x96


def _espcn_x3() -> TrainConfig:
    return _espcn(3, 40)  # HR 120x120


def _espcn_x4() -> TrainConfig:
    return _espcn(4, 32)  # HR 128x128


def _fsrcnn_s_x3() -> TrainConfig:
    # FSRCNN's thin PReLU trunk trained at 1e-3 in the paper and here. Its deconvolution
    # trains at the trunk's rate, not the paper's 0.1x: on the 2-core CPU, 64 patches a
    # step, cosine over 40,000 steps, Set5 was 31.08 / 31.32 / 31.46 / 31.56 dB after
    # 5k / 10k / 15k / 20k steps at 1x against 31.14 / 31.28 / 31.34 / 31.37 at 0.1x (the
    # thin network's slow convergence was what kept it far under FSRCNN). Smaller patches
    # than ESPCN's: its 9x9 deconvolution's receptive field is narrower than the patch
    # either way, and the step is cheaper. MSE, not Charbonnier: 0.08 dB ahead after
    # 15,000 CPU steps side by side, and the shipped file (MSE, 120,000 x 64 on the CPU)
    # is 0.21 dB above the 80,000-step Charbonnier run it replaced (docs/training).
    # Trained re-parameterised (fsrcnn-s-linear: each body convolution a collapsible linear
    # block 256 wide), shipped as the plain FSRCNN-s it collapses into: from the same start,
    # same seed and command (64 patches, cosine over 40,000 steps, one Zen 3 thread each),
    # Set5 was 31.49 / 31.90 / 32.15 at 5k / 10k / 15k steps against 31.30 / 31.43 / 31.56
    # for the plain network.
    return _modern("fsrcnn-s-linear", 3, 32, lr=1e-3, head_lr_scale=1.0, loss="mse")  # HR 96x96


def _fsrcnn(scale: int, patch_size: int) -> TrainConfig:
    # FSRCNN (d=56, s=12, m=4) at the paper's 1e-3, from scratch at every scale, with
    # FSRCNN-s's finding: its deconvolution trains at the trunk's rate.
    return _modern("fsrcnn", scale, patch_size, lr=1e-3, head_lr_scale=1.0)


def _fsrcnn_x2() -> TrainConfig:
    return _fsrcnn(2, 48)  # HR 96x96


def _fsrcnn_x3() -> TrainConfig:
    return _fsrcnn(3, 32)  # HR 96x96


def _fsrcnn_x4() -> TrainConfig:
    return _fsrcnn(4, 24)  # HR 96x96


def _ecbsr(scale: int, patch_size: int) -> TrainConfig:
    # ECBSR-M4C16 (models.build("ecbsr")): trained re-parameterised, validated and saved
    # collapsed into a plain ESPCN of six 3x3 layers of 16 channels. ECBSR trains every
    # layer at one rate (its last block is as thin as the others): head_lr_scale 1.
    return _modern("ecbsr", scale, patch_size, head_lr_scale=1.0)


def _ecbsr_x2() -> TrainConfig:
    return _ecbsr(2, 48)


def _ecbsr_x3() -> TrainConfig:
    return _ecbsr(3, 40)


def _ecbsr_x4() -> TrainConfig:
    return _ecbsr(4, 32)


# Name -> the function that makes its config (data folders found under $SUBPIXEL_DATA
# when it is called).
RECIPES: dict[str, Callable[[], TrainConfig]] = {
    "espcn-x2": _espcn_x2,
    "espcn-x3": _espcn_x3,
    "espcn-x4": _espcn_x4,
    "fsrcnn-x2": _fsrcnn_x2,
    "fsrcnn-x3": _fsrcnn_x3,
    "fsrcnn-x4": _fsrcnn_x4,
    "fsrcnn-s-x3": _fsrcnn_s_x3,
    "ecbsr-x2": _ecbsr_x2,
    "ecbsr-x3": _ecbsr_x3,
    "ecbsr-x4": _ecbsr_x4,
}


def recipe(name: str) -> TrainConfig:
    """The config of recipe ``name``.

    Raises:
        KeyError: For an unknown name (the message lists the known ones).

    Example:
        >>> recipe("espcn-x3").patch_size
        40
    """
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; available: {', '.join(RECIPES)}")
    return RECIPES[name]()
