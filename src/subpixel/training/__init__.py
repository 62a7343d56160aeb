"""Training: ``train(config, out)`` with checkpoints, exact resume and data parallelism."""

from subpixel.training.config import TrainConfig
from subpixel.training.loop import (
    Progress,
    RunError,
    RunFiles,
    RunResult,
    TrainingView,
    build_network,
    compute_loss,
    distilled_targets,
    load_teacher,
    make_optimizer,
    output_layer,
    prepare_for_training,
    train,
)

__all__ = [
    "Progress",
    "RunError",
    "RunFiles",
    "RunResult",
    "TrainConfig",
    "TrainingView",
    "build_network",
    "compute_loss",
    "distilled_targets",
    "load_teacher",
    "make_optimizer",
    "output_layer",
    "prepare_for_training",
    "train",
]
