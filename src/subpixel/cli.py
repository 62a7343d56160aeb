"""The ``subpixel`` command: a thin layer that parses arguments, calls the library, prints."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from subpixel import models
from subpixel.errors import ImageError, SubpixelError
from subpixel.evaluation import EvaluationReport, evaluate
from subpixel.images import output_format, read_image, write_image
from subpixel.inference import upscale_image
from subpixel.weights import DEFAULT_MODEL, bundled_weights, card_of, load_model


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _upscale(args: argparse.Namespace) -> int:
    source, target = Path(args.input), Path(args.output)
    output_format(target)  # an unknown extension fails before any work
    if target.exists() and source.exists() and target.resolve() == source.resolve():
        raise ImageError(f"refusing to overwrite the input {source}")
    image = read_image(source)
    model = load_model(args.model, scale=args.scale, device=_device(args.device))
    result = upscale_image(image, model)
    options = {"quality": args.quality} if output_format(target) == "JPEG" else {}
    write_image(result, target, **options)
    card = card_of(model)
    print(
        f"{source} ({image.width}x{image.height}) -> {target} ({result.width}x{result.height}), "
        f"{card.architecture} x{card.scale}"
    )
    return 0


def _print_report(report: EvaluationReport, name: str) -> None:
    print(f"{name} x{report.scale} on {report.dataset} (protocol {report.protocol})")
    print(f"{'image':<16}{'PSNR':>8}{'SSIM':>8}{'bicubic':>10}{'SSIM':>8}{'ms':>9}")
    for s in report.images:
        print(
            f"{s.name:<16}{s.psnr:8.2f}{s.ssim:8.4f}{s.bicubic_psnr:10.2f}{s.bicubic_ssim:8.4f}"
            f"{s.seconds * 1000:9.1f}"
        )
    print(
        f"{'mean':<16}{report.mean('psnr'):8.2f}{report.mean('ssim'):8.4f}"
        f"{report.mean('bicubic_psnr'):10.2f}{report.mean('bicubic_ssim'):8.4f}"
        f"{report.mean('seconds') * 1000:9.1f}"
    )


def _evaluate(args: argparse.Namespace) -> int:
    model = load_model(args.model, scale=args.scale, device=_device(args.device))
    with tqdm(
        desc=f"evaluate {args.dataset}", unit="img", disable=args.json or None, file=sys.stderr
    ) as bar:

        def progress(done: int, total: int, name: str) -> None:
            bar.total = total
            bar.set_postfix_str(name)
            bar.update(1)

        report = evaluate(model, args.dataset, protocol=args.protocol, progress=progress)
    if args.json:
        print(json.dumps({"model": str(args.model), **report.to_dict()}, indent=2))
    else:
        _print_report(report, str(args.model))
    return 0


def _models(args: argparse.Namespace) -> int:
    bundled = bundled_weights()
    print(f"{'name':<12}{'parameters':>11}{'MACs/px x2':>12}{'x3':>9}{'x4':>9}  bundled weights")
    for name in models.BUILDERS:
        costs = [models.measure_complexity(models.build(name, scale=s), 1) for s in (2, 3, 4)]
        scales = sorted(s for (arch, s) in bundled if arch == name)
        weights = " ".join(f"x{s}" for s in scales) or (
            "(no weights needed)" if name == "bicubic" else "-"
        )
        print(
            f"{name:<12}{costs[1].parameters:>11,}"
            + "".join(f"{c.macs_per_pixel:>{12 if i == 0 else 9},.0f}" for i, c in enumerate(costs))
            + f"  {weights}"
        )
    print(f"\ndefault model: {DEFAULT_MODEL}; parameters at x3, one (luminance) channel")
    return 0


# Training options: CLI flag -> TrainConfig field; defaults live in TrainConfig alone.
_TRAIN_OPTIONS: dict[str, dict[str, object]] = {
    "model": {"help": "espcn, espcn-7, fsrcnn, fsrcnn-s, srcnn, srcnn-915"},
    "scale": {"type": int},
    "data": {"nargs": "+", "metavar": "DIR", "help": "folders of HR training images"},
    "val": {"help": "Set5, Set14, BSD100, a folder of HR images, or 'none'"},
    "iterations": {"type": int},
    "batch_size": {"type": int},
    "patch_size": {"type": int, "help": "LR patch side (HR patches are scale times larger)"},
    "degradation": {"choices": ("bicubic", "gaussian")},
    "sampling": {"choices": ("random", "stride")},
    "patches_per_image": {"type": int},
    "downscale_augment": {
        "type": float,
        "nargs": "*",
        "metavar": "F",
        "help": "extra copies of each HR image scaled by these factors",
    },
    "optimizer": {"choices": ("adam", "sgd")},
    "lr": {"type": float},
    "head_lr_scale": {"type": float, "help": "output layer's rate relative to lr (0.1)"},
    "schedule": {"choices": ("constant", "step", "cosine", "plateau")},
    "step_size": {"type": int},
    "min_lr": {"type": float},
    "plateau_every": {"type": int},
    "plateau_mu": {"type": float},
    "loss": {"choices": ("mse", "l1")},
    "val_every": {"type": int},
    "seed": {"type": int},
    "workers": {"type": int},
    "init_from": {"metavar": "RUN_OR_FILE", "help": "start from a run's best weights or a file"},
    "train_only": {"choices": ("all", "head"), "help": "head: freeze all but the output layer"},
}


def _train(args: argparse.Namespace) -> int:
    from subpixel.training import Progress, TrainConfig, train

    given = {
        name: getattr(args, name) for name in _TRAIN_OPTIONS if getattr(args, name) is not None
    }
    if args.rgb:
        given["channels"] = 3
    if args.unshuffled_targets:
        given["unshuffled_targets"] = True
    if given.get("val") == "none":
        given["val"] = None
    out = Path(args.out)
    try:
        if args.resume:
            extra = set(given) - {"iterations", "workers"}
            if extra:
                flags = ", ".join(f"--{name.replace('_', '-')}" for name in sorted(extra))
                raise SubpixelError(f"--resume continues {out / 'config.json'}; drop {flags}")
            saved = TrainConfig.load(out / "config.json")
            config = dataclasses.replace(saved, **given)
            if config != saved:  # a longer run, or other workers: record it
                (out / "config.json").write_text(config.to_json())
        else:
            config = TrainConfig(**given)
    except (ValueError, TypeError, OSError) as error:
        raise SubpixelError(f"cannot set up the run: {error}") from error

    leader = os.environ.get("RANK", "0") == "0"  # under torchrun, one process reports
    with tqdm(
        total=config.iterations,
        desc=f"train {config.model} x{config.scale}",
        unit="it",
        file=sys.stderr,
        disable=not leader,
    ) as bar:

        def progress(p: Progress) -> None:
            shown = {"loss": f"{p.loss:.5f}", "lr": f"{p.lr:.1e}"}
            if p.best_psnr is not None:
                shown["best PSNR"] = f"{p.best_psnr:.3f}"
            bar.set_postfix(shown, refresh=False)
            bar.update(p.iteration - bar.n)

        result = train(
            config,
            out,
            resume=args.resume,
            cache_dir=args.cache_dir,
            device=_device(args.device),
            progress=progress,
        )
    best = f"{result.best_psnr:.3f} dB at {result.best_iteration}" if result.best_psnr else "n/a"
    if leader:
        print(
            f"{out}: {result.iteration} iterations, best {config.val} PSNR {best}; "
            f"weights in {result.files.best}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="subpixel", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("upscale", help="upscale one image")
    up.add_argument("input", help="image file to upscale (never overwritten)")
    up.add_argument("-o", "--output", required=True, help="output file; format from extension")
    up.add_argument("--model", default=DEFAULT_MODEL, help="bundled name or .safetensors file")
    up.add_argument("--scale", type=int, default=None, help="upscaling factor (default: 3)")
    up.add_argument("--quality", type=int, default=95, help="JPEG quality (default: 95)")
    up.add_argument("--device", default="auto", help="auto, cpu or cuda")
    up.set_defaults(run=_upscale)

    ev = commands.add_parser("evaluate", help="PSNR/SSIM on a benchmark or a folder of HR images")
    ev.add_argument("--model", default=DEFAULT_MODEL, help="bundled name or .safetensors file")
    ev.add_argument("--scale", type=int, default=None, help="upscaling factor (default: 3)")
    ev.add_argument("--dataset", required=True, help="Set5, Set14, BSD100 or a folder of HR images")
    ev.add_argument(
        "--protocol",
        choices=("matlab", "float"),
        default="matlab",
        help="matlab: Y rounded to 8 bits (the papers'); float: Y unrounded (BasicSR's)",
    )
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ev.set_defaults(run=_evaluate)

    tr = commands.add_parser("train", help="train a network on folders of HR images")
    for name, options in _TRAIN_OPTIONS.items():
        tr.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, **options)  # type: ignore[arg-type]
    tr.add_argument("--rgb", action="store_true", help="train on RGB instead of luminance")
    tr.add_argument(
        "--unshuffled-targets",
        action="store_true",
        help="compare pre-shuffle outputs with pixel-unshuffled targets (espcn)",
    )
    tr.add_argument("--out", required=True, help="run folder (config, checkpoints, log, plot)")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    tr.add_argument("--cache-dir", default=None, help="patch cache (default ~/.cache/subpixel)")
    tr.add_argument("--device", default="auto", help="auto, cpu or cuda")
    tr.set_defaults(run=_train)

    ls = commands.add_parser("models", help="list models with parameters and MACs per pixel")
    ls.set_defaults(run=_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 success, 1 error, 2 usage, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except SubpixelError as error:
        print(f"subpixel: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("subpixel: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
