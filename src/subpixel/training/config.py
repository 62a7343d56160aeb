"""The training run's configuration: one frozen dataclass, saved as JSON in the run folder."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from subpixel import models
from subpixel.data import DataConfig

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "step", "cosine", "plateau")
LOSSES = ("mse", "l1", "charbonnier")
TRAINABLE = ("all", "head")
PRECISIONS = ("auto", "float32", "bfloat16")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run's result.

    Both papers train the last layer ten times slower (``head_lr_scale = 0.1``). The
    ``plateau`` schedule is ESPCN's: every ``plateau_every`` iterations the mean training
    loss of the window is compared with the previous window's, and the rate is multiplied by
    ``plateau_factor`` when the relative improvement is below ``plateau_mu`` (down to
    ``min_lr``). ``step`` multiplies by ``step_gamma`` every ``step_size`` iterations;
    ``cosine`` anneals from ``lr`` to ``min_lr`` over the run.

    ``loss_border`` leaves that many LR pixels on each side of a patch (``r`` times as many
    HR pixels) out of the loss, like training with unpadded ("valid") convolutions; the
    receptive radius (``subpixel.pipeline.tiling.receptive_radius``) leaves exactly the outputs that
    zero padding cannot reach. The outputs at an image's edges are then never trained: on
    Set5 x3 (crop = scale) FSRCNN-s trained so scored 27.7 dB, 31.5 dB with a 20-pixel crop.
    Keep the default 0 for models scored by the papers' protocol.

    ``data_on_device`` keeps every training image on the training device and cuts each batch
    there (``subpixel.data.DevicePairs``: positions uniform over all patches, so images are
    drawn in proportion to their area); otherwise a ``DataLoader`` with ``workers``
    processes cuts ``patches_per_image`` patches per image and epoch (``PatchDataset``, also
    the only path for ``sampling="stride"``). ``charbonnier`` is the loss
    ``mean(sqrt((sr - hr)^2 + charbonnier_eps^2))``, L1 with a smooth minimum. With
    ``ema_decay`` > 0 an exponential moving average of the weights
    (``ema = d ema + (1 - d) weights`` after step ``n``, ``d = min(ema_decay, (1 + n) /
    (10 + n))``: ``subpixel.training.ema``) is what validation scores and what
    ``best``/``last`` hold. ``warmup`` iterations raise the rate linearly from
    ``lr / warmup`` to ``lr`` before any schedule (the cosine then anneals over the rest).
    ``precision="bfloat16"`` runs the network under autocast (the loss in float32);
    ``"auto"`` is bfloat16 where a measured step of the run's shape is
    ``precision_choice.BFLOAT16_PAYS`` times faster, float32 elsewhere (the run's
    ``config.json`` records the one it used);
    ``compile_mode`` names a ``torch.compile`` mode for the training step (None: eager).
    ``teacher`` names a trained network of the run's scale (a bundled model, a weights file
    or a run folder, as ``init_from`` does): each batch's target is then the HR patch moved
    ``teacher_weight`` of the way towards the teacher's output on the LR patch
    (distillation; for MSE, the same gradients as the weighted sum of the two losses).
    """

    model: str = "espcn"
    scale: int = 3
    channels: int = 1
    model_options: dict[str, Any] = field(default_factory=dict)
    data: tuple[str, ...] = ()
    val: str | None = "Set5"
    iterations: int = 100_000
    batch_size: int = 16
    patch_size: int = 17
    degradation: str = "bicubic"
    sampling: str = "random"
    patches_per_image: int = 64
    downscale_augment: tuple[float, ...] = ()
    flips: bool = True
    rotations: bool = True
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    head_lr_scale: float = 0.1
    schedule: str = "constant"
    step_size: int = 50_000
    step_gamma: float = 0.1
    min_lr: float = 1e-5
    plateau_every: int = 2_000
    plateau_mu: float = 0.001
    plateau_factor: float = 0.1
    loss: str = "mse"
    loss_border: int = 0
    unshuffled_targets: bool = False
    val_every: int = 1_000
    seed: int = 0
    workers: int = 2
    init_from: str | None = None
    train_only: str = "all"
    data_on_device: bool = True
    ema_decay: float = 0.0
    warmup: int = 0
    charbonnier_eps: float = 1e-3
    precision: str = "auto"
    compile_mode: str | None = None
    teacher: str | None = None
    teacher_weight: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", tuple(str(d) for d in self.data))
        # The JSON form (lists, not tuples), so a config equals itself after a round trip.
        object.__setattr__(self, "model_options", json.loads(json.dumps(self.model_options)))
        object.__setattr__(self, "downscale_augment", tuple(self.downscale_augment))
        checks = [
            (
                self.model in models.BUILDERS and models.trainable(self.model),
                f"model must be one of the trainable networks, got {self.model!r}",
            ),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}"),
            (self.loss in LOSSES, f"loss must be one of {LOSSES}"),
            (self.train_only in TRAINABLE, f"train_only must be one of {TRAINABLE}"),
            (
                self.iterations >= 1 and self.batch_size >= 1,
                "iterations and batch_size must be >= 1",
            ),
            (self.val_every >= 1 and self.plateau_every >= 1, "intervals must be >= 1"),
            (self.lr > 0 and self.head_lr_scale > 0, "learning rates must be positive"),
            (len(self.data) > 0, "give at least one training-data folder"),
            (self.workers >= 0, "workers must be >= 0"),
            (
                0 <= 2 * self.loss_border < self.patch_size,
                "loss_border must be >= 0 and leave part of the patch",
            ),
            (isinstance(self.data_on_device, bool), "data_on_device must be true or false"),
            (
                not (self.data_on_device and self.sampling == "stride"),
                "stride sampling needs the loader (data_on_device false)",
            ),
            (0 <= self.ema_decay < 1, "ema_decay must lie in [0, 1) (0: no average)"),
            (0 <= self.warmup < self.iterations, "warmup must be >= 0 and below iterations"),
            (self.charbonnier_eps > 0, "charbonnier_eps must be positive"),
            (self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}"),
            (
                self.compile_mode is None or self.compile_mode in COMPILE_MODES,
                f"compile_mode must be None or one of {COMPILE_MODES}",
            ),
            (0 < self.teacher_weight <= 1, "teacher_weight must lie in (0, 1]"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        self.data_config()  # validates scale, channels, patches, degradation

    def data_config(self) -> DataConfig:
        return DataConfig(
            scale=self.scale,
            channels=self.channels,
            patch_size=self.patch_size,
            degradation=self.degradation,
            sampling=self.sampling,
            patches_per_image=self.patches_per_image,
            flips=self.flips,
            rotations=self.rotations,
            downscale_augment=self.downscale_augment,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        raw = json.loads(text)
        unknown = set(raw) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown training-config keys: {sorted(unknown)}")
        # Runs saved before the device path existed used the loader; they resume on it.
        raw.setdefault("data_on_device", False)
        return cls(**raw)

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        return cls.from_json(path.read_text())
