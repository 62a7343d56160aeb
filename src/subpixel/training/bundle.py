"""Turn a finished run into a shippable weights file: best weights, full training record,
and metrics measured afresh on the benchmark sets."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from subpixel.evaluation import evaluate
from subpixel.precision import LOSS_DATASETS
from subpixel.precision_loss import add_losses, measure_losses
from subpixel.training.averaging import average_networks
from subpixel.training.loop import RunFiles
from subpixel.training.records import read_log, read_sessions
from subpixel.weights import card_of, load_weights, save_weights

__all__ = ["bundle_run"]


def bundle_run(
    run: str | Path,
    output: str | Path,
    *,
    datasets: Sequence[str] = ("Set5", "Set14", "BSD100"),
    average_with: Sequence[str | Path] = (),
) -> nn.Module:
    """Write ``run``'s best weights to ``output`` with a card that records how they were made.

    The card's ``training`` holds the run's resolved config, the iteration the weights come
    from, the iterations and wall time of the whole run, and its sessions (``sessions.json``:
    the command, machine and seconds of each process that trained it, where recorded);
    ``metrics`` holds mean PSNR/SSIM on each of ``datasets`` under the default protocol
    and, on Set5 and Set14, the PSNR lost in bfloat16 and in mixed
    (``subpixel.precision``), which decide what ``"auto"`` precision runs.

    With ``average_with`` (weights files of the same network, such as earlier checkpoints
    of the run), the weights written are the mean of the best and those
    (``average_networks``); the card names each file (with its folder, the run it came
    from) and the iteration it came from.
    """
    files = RunFiles(Path(run))
    model = load_weights(files.best)
    card = card_of(model)
    config = json.loads(files.config.read_text())
    rows = read_log(files.log)
    training = {
        "config": config,
        "best_iteration": _iteration_of(model),
        "iterations_run": rows[-1].iteration if rows else None,
        "wall_seconds": round(rows[-1].seconds, 1) if rows else None,
    }
    sessions = read_sessions(files.sessions)
    if sessions:
        training["sessions"] = [dataclasses.asdict(session) for session in sessions]
    if "collapsed_from" in card.training:  # trained re-parameterised, shipped collapsed
        training["collapsed_from"] = card.training["collapsed_from"]
    if average_with:
        others = [load_weights(path) for path in average_with]
        model = average_networks([model, *others])
        training["averaged_with"] = [
            {"file": _named(Path(path)), "iteration": _iteration_of(other)}
            for path, other in zip(average_with, others, strict=True)
        ]
    metrics = {}
    for dataset in datasets:
        report = evaluate(model, dataset)
        metrics[dataset] = {
            "psnr": round(report.mean("psnr"), 4),
            "ssim": round(report.mean("ssim"), 5),
            "bicubic_psnr": round(report.mean("bicubic_psnr"), 4),
        }
    loss_sets = [d for d in LOSS_DATASETS if d in datasets]
    if loss_sets:
        add_losses(metrics, measure_losses(model, loss_sets))
    card = dataclasses.replace(card, training=training, metrics=metrics)
    save_weights(model, output, card=card)
    setattr(model, "card", card)  # noqa: B010 - the attribute every loaded model carries
    return model


def _iteration_of(model: nn.Module) -> int | None:
    """The iteration a weights file was saved at: from a run (``iterations``) or a bundle
    (``best_iteration``)."""
    training = card_of(model).training
    iteration = training.get("iterations", training.get("best_iteration"))
    return int(iteration) if iteration is not None else None


def _named(path: Path) -> str:
    """``folder/file``: two runs' ``last.safetensors`` stay apart in the card."""
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name
