"""Turn a finished run into a shippable weights file: best weights, full training record,
and metrics measured afresh on the benchmark sets."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from subpixel.evaluation import evaluate
from subpixel.precision import LOSS_DATASETS, LOSS_KEY, measure_bfloat16_loss
from subpixel.training.loop import RunFiles
from subpixel.training.records import read_log
from subpixel.weights import card_of, load_weights, save_weights

__all__ = ["bundle_run"]


def bundle_run(
    run: str | Path,
    output: str | Path,
    *,
    datasets: Sequence[str] = ("Set5", "Set14", "BSD100"),
) -> nn.Module:
    """Write ``run``'s best weights to ``output`` with a card that records how they were made.

    The card's ``training`` holds the run's resolved config, the iteration the weights come
    from, the iterations and wall time of the whole run; ``metrics`` holds mean PSNR/SSIM on
    each of ``datasets`` under the default protocol and, on Set5 and Set14, the PSNR lost in
    bfloat16 (``subpixel.precision``), which decides whether ``"auto"`` precision uses it.
    """
    files = RunFiles(Path(run))
    model = load_weights(files.best)
    card = card_of(model)
    config = json.loads(files.config.read_text())
    rows = read_log(files.log)
    best = card.training.get("iterations")
    training = {
        "config": config,
        "best_iteration": best,
        "iterations_run": rows[-1].iteration if rows else None,
        "wall_seconds": round(rows[-1].seconds, 1) if rows else None,
    }
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
        for dataset, loss in measure_bfloat16_loss(model, loss_sets).items():
            metrics[dataset][LOSS_KEY] = round(loss, 4)
    card = dataclasses.replace(card, training=training, metrics=metrics)
    save_weights(model, output, card=card)
    setattr(model, "card", card)  # noqa: B010 - the attribute every loaded model carries
    return model
