"""The ``subpixel`` command: a thin layer that parses arguments, calls the library, prints."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import json
import logging
import math
import os
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from subpixel import models
from subpixel.allocator import keep_freed_memory
from subpixel.catalogue import COST_SCALES, catalogue
from subpixel.devices import DEVICE_NAMES, resolve_device
from subpixel.engines import ENGINES, PRECISIONS, set_threads
from subpixel.errors import DeviceError, ScaleError, SubpixelError
from subpixel.evaluation import EvaluationReport, evaluate
from subpixel.files import remove_stale_temporaries
from subpixel.images import DEFAULT_MAX_PIXELS
from subpixel.pipeline.batch import BatchInterrupted, Job
from subpixel.pipeline.files import FileBatches, FileOptions, is_video
from subpixel.signals import interrupt_on_sigterm, signal_number
from subpixel.upscaler import Upscaler, load_model
from subpixel.weights import (
    DEFAULT_MODEL,
    DEFAULT_SCALE,
    MAX_SCALE,
    card_of,
    describe,
    load_network,
    network_scale,
    save_weights,
)


def _device(name: str) -> torch.device:
    """``--device``, checked before anything is loaded or written."""
    try:
        return resolve_device(name)
    except DeviceError as error:
        raise DeviceError(f"--device {error}") from error


_DEVICE_HELP = f"{DEVICE_NAMES} (default auto: the first CUDA device if there is one, else cpu)"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from error
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _quality(text: str) -> int:
    try:
        value = int(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from error
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be from 1 to 100, got {value}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from error
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be from 0 to 65535, got {value}")
    return value


def _byte_size(text: str) -> int:
    """``"2G"``, ``"512M"``, ``"64k"`` or a plain number of bytes."""
    units = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
    text = text.strip().lower().removesuffix("b").removesuffix("i")
    try:
        if text and text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 2G or 512M)") from error


def _upscale(args: argparse.Namespace) -> int:
    from subpixel.pipeline.batch import parse_shard, pending_jobs, plan_jobs, run_jobs, shard

    if args.ray is not None:
        return _upscale_on_ray(args)
    device = _device(args.device)
    streaming = args.inputs == ["-"] or args.output == "-"
    native = _native_scale(args)
    keep_freed_memory()  # frame-sized buffers are reused, not mapped afresh each frame
    if args.threads is not None:
        set_threads(args.threads)
    if streaming:
        _stream(args, _ready_model(args, native, device))
        return 0
    jobs = plan_jobs(args.inputs, args.output, recursive=args.recursive, extension=args.format)
    if args.shard:
        jobs = shard(jobs, *parse_shard(args.shard))
    # The engine (an export and a compilation for "auto") only when something is left to do.
    model = _ready_model(args, native, device) if pending_jobs(jobs, args.overwrite) else None
    options = _file_options(args)
    files = None if model is None else FileBatches(jobs, model, options, overwrite=args.overwrite)
    with tqdm(
        total=len(jobs), unit="file", desc="upscale", file=sys.stderr, disable=len(jobs) < 2 or None
    ) as bar:
        summary = run_jobs(
            jobs,
            lambda job: _upscale_one(job, files),
            overwrite=args.overwrite,
            progress=lambda job: bar.update(1),
            on_error=lambda job, reason: tqdm.write(f"subpixel: error: {reason}", sys.stderr),
        )
    if len(jobs) == 1:
        if summary.written and model is not None:
            factor = f"x{args.scale or model.scale:g}"
            print(f"{jobs[0].source} -> {jobs[0].target} ({model.name} {factor})")
        elif summary.skipped:
            print(f"subpixel: {jobs[0].target} exists; skipped (use --overwrite)", file=sys.stderr)
    else:
        print(f"subpixel: {summary.line()}", file=sys.stderr)
    return 1 if summary.failed else 0


_RAY_ADDRESS = re.compile(r"auto|local|ray://\S+|[^\s/:]+:\d+")


def _upscale_on_ray(args: argparse.Namespace) -> int:
    """``--ray``: the batch on a Ray cluster (``subpixel.pipeline.cluster``)."""
    from subpixel.pipeline.batch import parse_shard
    from subpixel.pipeline.cluster import FileResult, upscale_on_ray

    if "-" in args.inputs or args.output == "-":
        raise SubpixelError("--ray takes files and folders, not '-'")
    if args.ray and not _RAY_ADDRESS.fullmatch(args.ray):
        raise SubpixelError(
            f"--ray {args.ray}: not a Ray address (auto, local, HOST:PORT or ray://HOST:PORT); "
            "give the inputs before --ray, or write --ray=ADDRESS"
        )
    _native_scale(args)  # a bad --scale in the CLI's words, before Ray starts
    with tqdm(unit="file", desc="upscale", file=sys.stderr, disable=None) as bar:

        def progress(result: FileResult) -> None:
            bar.update(1)
            if result.status == "failed":
                tqdm.write(f"subpixel: error: {result.message}", sys.stderr)
            for note in result.notes:
                tqdm.write(f"subpixel: note: {note}", sys.stderr)

        summary = upscale_on_ray(
            args.inputs,
            args.output,
            model=args.model,
            options=_file_options(args),
            recursive=args.recursive,
            overwrite=args.overwrite,
            shard=parse_shard(args.shard) if args.shard else None,
            engine=args.engine,
            precision=args.precision,
            device=args.device,
            address=args.ray or None,
            threads=args.threads,
            progress=progress,
        )
    print(f"subpixel: {summary.line()}", file=sys.stderr)
    return 1 if summary.failed else 0


def _native_scale(args: argparse.Namespace) -> int:
    """The network scale for ``--scale``, checked before anything is loaded or written."""
    try:
        return network_scale(args.model, args.scale)
    except ScaleError as error:
        if str(error).startswith("scale"):
            raise ScaleError(f"--{error}") from error
        raise


def _ready_model(args: argparse.Namespace, native: int, device: torch.device) -> Upscaler:
    """The model at ``native`` scale on ``device``, with the engine and precision asked for."""
    return load_model(
        args.model,
        scale=native,
        device=device,
        engine=args.engine,
        precision=args.precision,
        threads=args.threads,
    )


def _file_options(args: argparse.Namespace) -> FileOptions:
    return FileOptions(
        scale=args.scale,
        tile=args.tile,
        max_memory=args.max_memory,
        max_pixels=args.max_pixels,
        alpha=args.alpha,
        format=args.format,
        quality=args.quality,
        codec=args.codec,
        crf=args.crf,
        preset=args.preset,
        batch=args.batch,
    )


def _upscale_one(job: Job, files: FileBatches | None) -> None:
    if files is None:  # run_jobs only calls this for jobs pending_jobs counted
        raise SubpixelError(f"{job.target}: no network was prepared")
    unit = "frame" if job.is_video else "tile"
    with tqdm(unit=unit, desc=job.source.name, file=sys.stderr, leave=False, disable=None) as bar:

        def progress(done: int, total: int | None) -> None:
            bar.total = total
            bar.update(done - bar.n)

        notes = files(job, progress=progress)
    for note in notes:
        print(f"subpixel: note: {note}", file=sys.stderr)


def _stream(args: argparse.Namespace, model: Upscaler) -> None:
    """``-`` as input or output: an image or y4m video on stdin, known by its first bytes."""
    from subpixel.streams import identify, peek

    if len(args.inputs) != 1:
        raise SubpixelError("streaming with '-' takes exactly one input")
    source, target = args.inputs[0], args.output
    if target != "-":
        remove_stale_temporaries(Path(target).parent)
    if source == "-":
        kind = identify(peek(sys.stdin.buffer))
        if kind.kind == "image":
            _stream_image(args, model, None, kind.extension)
            return
    elif not is_video(source):
        _stream_image(args, model, Path(source), Path(source).suffix)
        return
    from subpixel.pipeline.video import PIPE_FORMAT, upscale_video

    upscale_video(
        sys.stdin.buffer if source == "-" else source,
        sys.stdout.buffer if target == "-" else target,
        model,
        codec=args.codec,
        crf=args.crf,
        preset=args.preset,
        input_format=PIPE_FORMAT if source == "-" else None,
        batch=args.batch,
    )


def _stream_image(
    args: argparse.Namespace, model: Upscaler, source: Path | None, extension: str
) -> None:
    """An image from stdin (``source`` None) or a file, to a file or stdout (in the input's
    format, or ``--format``)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="subpixel-") as folder:
        names = {}
        if source is None:
            source = Path(folder, f"stdin{extension}")
            source.write_bytes(sys.stdin.buffer.read())
            names[str(source)] = "stdin"
        target = Path(args.output)
        if args.output == "-":
            target = Path(folder, f"stdout{extension}")
            names[str(target)] = "stdout"
        try:
            job = Job(source, target, source.name)
            _upscale_one(job, FileBatches([job], model, _file_options(args), overwrite=True))
        except SubpixelError as error:
            message = str(error)
            for path, name in names.items():
                message = message.replace(path, name)
            raise SubpixelError(message) from error
        if args.output == "-":
            sys.stdout.buffer.write(target.read_bytes())
            sys.stdout.buffer.flush()


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
    device = _device(args.device)
    # The papers' numbers: the network as trained, eager float32.
    model = load_network(args.model, scale=args.scale, device=device)
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


def _export(args: argparse.Namespace) -> int:
    from subpixel.export import export_onnx

    model = load_network(args.model, scale=args.scale)
    card = card_of(model)
    fast = model.fast_form() if isinstance(model, models.SRNetwork) else None
    if args.deconv_form == "subpixel" and fast is not None:
        model = fast
    path = export_onnx(model, args.output, opset=args.opset, card=card)
    print(f"{card.name} x{card.scale} -> {path} (input 'lr' (B, C, H, W), output 'sr')")
    return 0


def _combine(args: argparse.Namespace) -> int:
    networks = []
    for path in args.weights:
        network = load_network(path)
        if not isinstance(network, models.FSRCNN):
            raise SubpixelError(f"{path} is not an FSRCNN; only FSRCNN heads can be combined")
        networks.append(network)
    try:
        combined = models.combine_fsrcnn_heads(networks, default_scale=args.default_scale)
    except ValueError as error:
        raise SubpixelError(str(error)) from error
    cards = [card_of(n) for n in networks]
    describe(
        combined,
        "fsrcnn-multiscale",
        degradation=cards[0].degradation,
        training={f"x{c.scale}": c.training for c in cards},
        metrics={f"x{c.scale}": c.metrics for c in cards},
    )
    save_weights(combined, args.output)
    scales = "/".join(f"x{c.scale}" for c in sorted(cards, key=lambda c: c.scale))
    print(f"{args.output}: one FSRCNN trunk with {scales} heads")
    return 0


def _bundle(args: argparse.Namespace) -> int:
    from subpixel.training.bundle import bundle_run

    model = bundle_run(
        args.run_dir, args.output, datasets=args.datasets, average_with=args.average_with
    )
    card = card_of(model)
    scores = ", ".join(f"{name} {m['psnr']:.2f} dB" for name, m in card.metrics.items())
    print(f"{args.output}: {card.name} x{card.scale} ({scores})")
    return 0


def _models(args: argparse.Namespace) -> int:
    entries = catalogue()
    width = max(len(entry.name) for entry in entries) + 1
    header = f"{'name':<{width}}{'parameters':>11}{'MACs/px x2':>12}{'x3':>9}{'x4':>9}"
    print(f"{header}  bundled weights")
    for entry in entries:
        weights = " ".join(f"x{s}" for s in entry.weights) or (
            "(no weights needed)" if entry.name == "bicubic" else "-"
        )
        print(
            f"{entry.name:<{width}}{entry.parameters:>11,}"
            + "".join(
                f"{entry.macs_per_pixel[s]:>{12 if i == 0 else 9},.0f}"
                for i, s in enumerate(COST_SCALES)
            )
            + f"  {weights}"
        )
    print(f"\ndefault model: {DEFAULT_MODEL}; parameters at x3, one (luminance) channel")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from subpixel.serve import Limits, run  # MissingExtraError names the extra

    max_upload = {} if args.max_upload is None else {"max_upload": args.max_upload}
    try:
        limits = Limits(max_pixels=args.max_pixels, **max_upload)
    except ValueError as error:
        raise SubpixelError(str(error).replace("max_", "--max-")) from error
    run(
        args.host,
        args.port,
        limits,
        device=str(_device(args.device)),
        on_ready=lambda url: print(f"subpixel: serving on {url} (Ctrl-C stops)", file=sys.stderr),
    )
    return 0


# Training options: CLI flag -> TrainConfig field; defaults live in TrainConfig alone (the
# help shows them from there).
_TRAIN_OPTIONS: dict[str, dict[str, object]] = {
    "model": {"help": "the network: espcn, espcn-7, fsrcnn, fsrcnn-s, srcnn or srcnn-915"},
    "scale": {"type": int, "help": "upscaling factor"},
    "data": {
        "nargs": "+",
        "metavar": "DIR",
        "help": "folders of HR training images (required unless --resume)",
    },
    "val": {"help": "validation set: Set5, Set14, BSD100, a folder of HR images, or 'none'"},
    "iterations": {"type": int, "help": "training steps"},
    "batch_size": {"type": int, "help": "patches per step"},
    "patch_size": {"type": int, "help": "LR patch side (HR patches are scale times larger)"},
    "degradation": {
        "choices": ("bicubic", "gaussian"),
        "help": "how LR images are made: MATLAB bicubic, or Gaussian blur and subsampling "
        "(the ESPCN paper's)",
    },
    "sampling": {
        "choices": ("random", "stride"),
        "help": "random patch positions, or the paper's regular grid",
    },
    "patches_per_image": {"type": int, "help": "patches per image and pass (random sampling)"},
    "downscale_augment": {
        "type": float,
        "nargs": "*",
        "metavar": "F",
        "help": "extra copies of each HR image scaled by these factors (FSRCNN: 0.9 0.8 0.7 0.6)",
    },
    "optimizer": {"choices": ("adam", "sgd"), "help": "the optimiser"},
    "lr": {"type": float, "help": "learning rate"},
    "head_lr_scale": {"type": float, "help": "the output layer's rate relative to --lr"},
    "schedule": {
        "choices": ("constant", "step", "cosine", "plateau"),
        "help": "learning-rate schedule; plateau: ESPCN's",
    },
    "step_size": {"type": int, "help": "step schedule: iterations between rate drops"},
    "step_gamma": {"type": float, "help": "step schedule: factor of each drop"},
    "min_lr": {"type": float, "help": "cosine and plateau schedules: the lowest rate"},
    "plateau_every": {"type": int, "help": "plateau schedule: iterations per loss window"},
    "plateau_mu": {
        "type": float,
        "help": "plateau schedule: lower the rate when the loss improves by less than this share",
    },
    "plateau_factor": {"type": float, "help": "plateau schedule: factor of each drop"},
    "loss": {"choices": ("mse", "l1", "charbonnier"), "help": "training loss"},
    "charbonnier_eps": {"type": float, "help": "charbonnier loss: sqrt(d^2 + eps^2)'s eps"},
    "ema_decay": {"type": float, "help": "average the weights with this decay (0: no average)"},
    "warmup": {"type": int, "help": "iterations of linear learning-rate warm-up"},
    "precision": {
        "choices": ("auto", "float32", "bfloat16"),
        "help": "bfloat16: autocast; auto: bfloat16 where a measured step is 1.25x faster",
    },
    "compile_mode": {
        "choices": ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
        "help": "torch.compile the training step in this mode (none: eager)",
    },
    "data_on_device": {
        "action": argparse.BooleanOptionalAction,
        "help": "keep the images on the training device and cut batches there, or load them",
    },
    "loss_border": {
        "type": int,
        "help": "LR pixels per patch side left out of the loss (receptive radius: espcn 4)",
    },
    "val_every": {"type": int, "help": "iterations between validations and checkpoints"},
    "seed": {"type": int, "help": "seed of the weights and the data order"},
    "workers": {"type": int, "help": "data-loading processes"},
    "init_from": {
        "metavar": "FROM",
        "help": "start from a run folder's best weights, a .safetensors file or a bundled "
        "model (espcn_x3, or espcn for the run's scale; see `subpixel models`); an "
        "ESPCN-class file of another scale starts every layer but the sub-pixel one",
    },
    "train_only": {"choices": ("all", "head"), "help": "head: freeze all but the output layer"},
    "teacher": {
        "metavar": "NET",
        "help": "distil: a trained network of the run's scale (named as for --init-from) "
        "whose output on each LR patch is blended into the target",
    },
    "teacher_weight": {
        "type": float,
        "help": "the teacher's share of the target, in (0, 1]",
    },
}


def _shown(value: object) -> str:
    """A default as a user would type it."""
    if isinstance(value, (list, tuple)):
        return " ".join(_shown(v) for v in value) if value else "none"
    if isinstance(value, float):
        return f"{value:g}"
    return "none" if value is None else str(value)


def _train_option_help(name: str, text: object) -> str:
    """``text`` with ``TrainConfig``'s default for ``name``, where it has one to show."""
    from subpixel.training.config import TrainConfig

    default = {f.name: f.default for f in dataclasses.fields(TrainConfig)}.get(name)
    if default is None or default is dataclasses.MISSING or name == "data":
        return str(text)
    return f"{text} (default: {_shown(default)})"


def _model_options(pairs: list[str]) -> dict[str, object]:
    """``KEY=VALUE`` pairs -> the network's keyword arguments; a VALUE that reads as JSON
    (``8``, ``0.5``, ``[3, 3]``, ``true``) is that value, any other a string."""
    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.isidentifier():
            raise SubpixelError(f"--model-option wants KEY=VALUE (blocks=8), got {pair!r}")
        try:
            options[key] = json.loads(text)
        except json.JSONDecodeError:
            options[key] = text
    return options


def _flag(name: str) -> str:
    """The command-line flag that sets TrainConfig field ``name``."""
    return "--model-option" if name == "model_options" else f"--{name.replace('_', '-')}"


def _train(args: argparse.Namespace) -> int:
    from subpixel.training import Progress, TrainConfig, train
    from subpixel.training.recipes import recipe

    device = _device(args.device)
    given = {
        name: getattr(args, name) for name in _TRAIN_OPTIONS if getattr(args, name) is not None
    }
    if args.rgb:
        given["channels"] = 3
    if args.unshuffled_targets:
        given["unshuffled_targets"] = True
    if args.model_option:
        given["model_options"] = _model_options(args.model_option)
    if given.get("val") == "none":
        given["val"] = None
    out = Path(args.out)
    try:
        if args.resume and args.recipe:
            raise SubpixelError(f"--resume continues {out / 'config.json'}; drop --recipe")
        if args.resume:
            extra = set(given) - {"iterations", "workers"}
            if extra:
                flags = ", ".join(_flag(name) for name in sorted(extra))
                raise SubpixelError(f"--resume continues {out / 'config.json'}; drop {flags}")
            saved = TrainConfig.load(out / "config.json")
            config = dataclasses.replace(saved, **given)
            if config != saved:  # a longer run, or other workers: record it
                (out / "config.json").write_text(config.to_json())
        elif args.recipe:
            config = dataclasses.replace(recipe(args.recipe), **given)
        else:
            config = TrainConfig(**given)
    except KeyError as error:
        raise SubpixelError(str(error.args[0])) from error
    except (ValueError, TypeError, OSError) as error:
        raise SubpixelError(f"cannot set up the run: {error}") from error
    if args.model_option:  # an unknown or bad option fails here, in one line
        try:
            models.build(
                config.model, scale=config.scale, channels=config.channels, **config.model_options
            )
        except (ValueError, TypeError) as error:
            given_options = " ".join(args.model_option)
            raise SubpixelError(f"--model-option {given_options}: {error}") from error

    leader = os.environ.get("RANK", "0") == "0"  # under torchrun, one process reports
    with contextlib.ExitStack() as stack:
        bars: list[tqdm] = []  # made at the first step, so an error before it is one line

        def progress(p: Progress) -> None:
            if not bars:
                bar = tqdm(
                    total=config.iterations,
                    desc=f"train {config.model} x{config.scale}",
                    unit="it",
                    file=sys.stderr,
                    disable=not leader,
                )
                bars.append(stack.enter_context(bar))
            shown = {"lr": f"{p.lr:.1e}"}
            if not math.isnan(p.loss):  # no loss is logged before the first log row
                shown = {"loss": f"{p.loss:.5f}", **shown}
            if p.best_psnr is not None:
                shown["best PSNR"] = f"{p.best_psnr:.3f}"
            bars[0].set_postfix(shown, refresh=False)
            bars[0].update(p.iteration - bars[0].n)

        result = train(
            config,
            out,
            resume=args.resume,
            cache_dir=args.cache_dir,
            device=device,
            progress=progress,
            command=args.command,
        )
    if leader and result.best_psnr is not None:
        print(
            f"{out}: {result.iteration} iterations, best {config.val} PSNR "
            f"{result.best_psnr:.3f} dB at {result.best_iteration}; weights in {result.files.best}"
        )
    elif leader:  # no validation, so no best: the last weights are the result
        print(
            f"{out}: {result.iteration} iterations (no validation); weights in {result.files.last}"
        )
    return 0


_DESCRIPTION = """\
Upscale images and videos with small, fast super-resolution networks (ESPCN, FSRCNN,
SRCNN), and train, evaluate and export them. Bundled weights work out of the box."""

_EPILOG = """\
examples:
  subpixel upscale photo.jpg -o photo_x3.png        one image, x3 (the default)
  subpixel upscale photos/ -o big/ --recursive --scale 2
  subpixel upscale clip.mp4 -o clip_x3.mp4          video, audio copied (needs .[video])
  subpixel upscale photos/ -o big/ --ray auto       on a running Ray cluster (needs .[ray])
  subpixel evaluate --dataset Set5 --model fsrcnn   PSNR/SSIM as the papers measure them
  subpixel models                                   the networks and their bundled weights
  subpixel serve                                    a web page at http://127.0.0.1:8000

'subpixel COMMAND --help' lists a command's options and their defaults."""


def _version() -> str:
    try:
        return importlib.metadata.version("subpixel")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        from subpixel import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    from subpixel.training.recipes import RECIPES

    parser = argparse.ArgumentParser(
        prog="subpixel",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser(
        "upscale",
        help="upscale images, folders and videos",
        description="Upscale images, folders of images and videos; outputs that exist are "
        "skipped, so a re-run continues where the last one stopped.",
    )
    up.add_argument(
        "inputs",
        nargs="+",
        metavar="IN",
        help="files, folders or globs (never overwritten); '-' reads y4m or an image from stdin",
    )
    up.add_argument(
        "-o",
        "--output",
        required=True,
        help="a file for one input, else a folder; '-' writes to stdout (y4m for a video)",
    )
    up.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"bundled name (see `subpixel models`) or .safetensors file (default: "
        f"{DEFAULT_MODEL})",
    )
    up.add_argument(
        "--scale",
        type=float,
        default=None,
        help=f"total factor, above 1 and up to {MAX_SCALE}; off the network's own scale, "
        f"bicubic finishes the job (default: the network's own, {DEFAULT_SCALE} for a "
        "bundled name)",
    )
    up.add_argument("--recursive", action="store_true", help="descend into folders")
    up.add_argument(
        "--format",
        default=None,
        help="output format: png, jpg, webp, tif, ... (default: the output's extension; "
        "for a folder, each input's)",
    )
    up.add_argument("--overwrite", action="store_true", help="replace outputs that exist")
    up.add_argument(
        "--shard",
        default=None,
        metavar="K/N",
        help="process only the K-th of N stable shards of the inputs (default: all of them)",
    )
    up.add_argument(
        "--tile",
        type=int,
        default=None,
        metavar="N",
        help="tiles of N x N input pixels; exact, and bounds the working memory (default: "
        "the whole image at once)",
    )
    up.add_argument(
        "--max-memory",
        type=_byte_size,
        default=None,
        metavar="SIZE",
        help="a ceiling on the whole process's memory, e.g. 2G: the image is tiled with the "
        "largest tile that fits beside what the process holds and the output, or refused "
        "(default: half the memory available, beside what the process holds)",
    )
    up.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help=f"refuse larger inputs (default: {DEFAULT_MAX_PIXELS})",
    )
    up.add_argument(
        "--alpha",
        choices=("bicubic", "network"),
        default="bicubic",
        help="how to upscale an alpha channel (default: bicubic)",
    )
    up.add_argument("--quality", type=_quality, default=95, help="JPEG/WebP quality (default: 95)")
    up.add_argument(
        "--engine",
        choices=("auto", *ENGINES),
        default="auto",
        help="inference engine (default: auto, the fastest measured for this network on this "
        "machine, remembered in ~/.cache/subpixel/engines.json)",
    )
    up.add_argument(
        "--precision",
        choices=("auto", *PRECISIONS),
        default="auto",
        help="arithmetic of the network; mixed: the first layer float32, the rest bfloat16 "
        "(default: auto, on CPUs with native BF16 bfloat16 or else mixed for weights whose "
        "recorded Set5/Set14 loss in it is under 0.05 dB, else float32)",
    )
    up.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="threads for the network and colour work (default: all cores)",
    )
    up.add_argument("--codec", default="libx264", help="video codec (default: libx264)")
    up.add_argument(
        "--crf", type=int, default=18, help="video quality, lower is better (default: 18)"
    )
    up.add_argument("--preset", default="medium", help="video encoder preset (default: medium)")
    up.add_argument("--device", default="auto", help=_DEVICE_HELP)
    up.add_argument(
        "--batch",
        type=_positive_int,
        default=1,
        metavar="N",
        help="upscale N video frames, or N images of a folder, together: on a GPU one upload "
        "and one network call for images of one size; the outputs are the same (default: 1)",
    )
    up.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run the batch on a Ray cluster (needs .[ray]): the one at ADDRESS (auto, "
        "HOST:6379, ray://HOST:10001, local); without one, RAY_ADDRESS's, else the one "
        "`ray start` started here, else a new local one; --threads is then each actor's, "
        "--device auto, cpu or cuda (default: not on Ray)",
    )
    up.set_defaults(run=_upscale)

    ev = commands.add_parser(
        "evaluate",
        help="PSNR/SSIM on a benchmark or a folder of HR images",
        description="PSNR and SSIM on Y, as the papers measure them: HR images degraded by "
        "MATLAB bicubic, scale pixels cropped from each border; bicubic alongside.",
    )
    ev.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"bundled name or .safetensors file (default: {DEFAULT_MODEL})",
    )
    ev.add_argument(
        "--scale",
        type=int,
        default=None,
        help=f"upscaling factor (default: {DEFAULT_SCALE} for a bundled name, a file's own)",
    )
    ev.add_argument("--dataset", required=True, help="Set5, Set14, BSD100 or a folder of HR images")
    ev.add_argument(
        "--protocol",
        choices=("matlab", "float"),
        default="matlab",
        help="matlab: Y rounded to 8 bits (the papers'); float: Y unrounded (BasicSR's) "
        "(default: matlab)",
    )
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("--device", default="auto", help=_DEVICE_HELP)
    ev.set_defaults(run=_evaluate)

    tr = commands.add_parser(
        "train",
        help="train a network on folders of HR images",
        description="Train a network on folders of HR images into a run folder (config, "
        "checkpoints, log, curves); --resume continues one exactly.",
    )
    tr.add_argument(
        "--recipe",
        metavar="NAME",
        help="start from a named recipe (subpixel.training.recipes: "
        + ", ".join(RECIPES)
        + "); other options override its fields",
    )
    for name, options in _TRAIN_OPTIONS.items():
        shown = {**options, "help": _train_option_help(name, options["help"])}
        tr.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, **shown)  # type: ignore[arg-type]
    tr.add_argument(
        "--model-option",
        action="append",
        metavar="KEY=VALUE",
        help="a keyword of the network's builder, repeatable: --model-option blocks=8 "
        "--model-option features=24 (ecbsr; see subpixel.models.build)",
    )
    tr.add_argument("--rgb", action="store_true", help="train on RGB instead of luminance")
    tr.add_argument(
        "--unshuffled-targets",
        action="store_true",
        help="compare pre-shuffle outputs with pixel-unshuffled targets (espcn)",
    )
    tr.add_argument("--out", required=True, help="run folder (config, checkpoints, log, plot)")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    tr.add_argument(
        "--cache-dir",
        default=None,
        help="where decoded training patches are kept (default: ~/.cache/subpixel/patches)",
    )
    tr.add_argument("--device", default="auto", help=_DEVICE_HELP)
    tr.set_defaults(run=_train)

    ex = commands.add_parser(
        "export",
        help="export a network to ONNX (dynamic height/width)",
        description="Write a network as one ONNX file: input 'lr' (B, C, H, W) float32, "
        "output 'sr', dynamic batch, height and width, the model card in its metadata.",
    )
    ex.add_argument("--model", required=True, help="bundled name or .safetensors file")
    ex.add_argument(
        "--scale",
        type=int,
        default=None,
        help=f"which bundled scale (default: {DEFAULT_SCALE}, or a file's own)",
    )
    ex.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    ex.add_argument("--opset", type=int, default=18, help="ONNX opset (default: 18)")
    ex.add_argument(
        "--deconv-form",
        choices=("deconv", "subpixel"),
        default="deconv",
        help="FSRCNN's last layer as a transposed conv or its exact sub-pixel form "
        "(default: deconv)",
    )
    ex.set_defaults(run=_export)

    co = commands.add_parser(
        "combine",
        help="put FSRCNN heads that share a trunk in one file",
        description="Put FSRCNN networks that share a trunk (scale transfer) in one "
        "multi-scale weights file.",
    )
    co.add_argument("weights", nargs="+", help="FSRCNN .safetensors files, one per scale")
    co.add_argument("-o", "--output", required=True, help="the multi-scale .safetensors file")
    co.add_argument(
        "--default-scale",
        type=int,
        default=None,
        help="the head a plain call uses (default: the first file's scale)",
    )
    co.set_defaults(run=_combine)

    bu = commands.add_parser(
        "bundle",
        help="a run's best weights with its training record",
        description="Write a run's best weights with a model card: its config, training "
        "record and metrics measured afresh.",
    )
    bu.add_argument("run_dir", metavar="RUN", help="a run folder made by `subpixel train`")
    bu.add_argument("-o", "--output", required=True, help="the .safetensors file to write")
    bu.add_argument(
        "--datasets",
        nargs="+",
        default=["Set5", "Set14", "BSD100"],
        help="benchmarks to measure into the card (default: Set5 Set14 BSD100)",
    )
    bu.add_argument(
        "--average-with",
        nargs="+",
        default=[],
        metavar="FILE",
        help="average the best weights with these files of the same network (default: none)",
    )
    bu.set_defaults(run=_bundle)

    ls = commands.add_parser(
        "models",
        help="list models with parameters and MACs per pixel",
        description="List the networks with their parameters, MACs per pixel and bundled weights.",
    )
    ls.set_defaults(run=_models)

    se = commands.add_parser(
        "serve",
        help="a local web app: upscale in the browser",
        description="Serve a web page to upscale images and videos in the browser, and its "
        "API (GET /api/models, POST /api/upscale). One image is upscaled at a time; the rest "
        'wait. Needs the serve extra: pip install "subpixel[serve]".',
    )
    se.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 opens it "
        "to the network, with no login)",
    )
    se.add_argument("--port", type=_port, default=8000, help="port (default: 8000; 0: any free)")
    se.add_argument(
        "--max-upload",
        type=_byte_size,
        default=None,
        metavar="SIZE",
        help="refuse larger uploads, e.g. 20M (default: 100M)",
    )
    se.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help=f"refuse images (and video frames) with more pixels (default: {DEFAULT_MAX_PIXELS})",
    )
    se.add_argument("--device", default="auto", help=_DEVICE_HELP)
    se.set_defaults(run=_serve)
    return parser


class _WarningLines(logging.Handler):
    """The library's logged warnings as ``subpixel: warning: ...`` lines, above any bar."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(f"subpixel: warning: {record.getMessage()}", sys.stderr)


def _interrupted(interruption: KeyboardInterrupt) -> str:
    """What an interruption stopped, for its one line."""
    if not isinstance(interruption, BatchInterrupted):
        return "interrupted"
    summary, current = interruption.summary, interruption.current
    done = summary.written or summary.skipped or summary.failed
    if current is not None and not done and interruption.not_started == 0:  # the only job
        return f"interrupted: {current.target} not written"
    return f"interrupted: {summary.line()}; the rest not started"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 success, 1 error, 2 usage; interrupted by Ctrl-C
    130, by SIGTERM 143)."""
    args = build_parser().parse_args(argv)
    args.command = shlex.join(["subpixel", *(sys.argv[1:] if argv is None else argv)])
    warnings = _WarningLines(logging.WARNING)
    library_log = logging.getLogger("subpixel")
    library_log.addHandler(warnings)
    propagate, library_log.propagate = library_log.propagate, False
    try:
        with interrupt_on_sigterm():
            try:
                return int(args.run(args))
            except SubpixelError as error:
                print(f"subpixel: error: {error}", file=sys.stderr)
                return 1
            except KeyboardInterrupt as interruption:
                print(f"subpixel: {_interrupted(interruption)}", file=sys.stderr)
                return 128 + signal_number(interruption)
    finally:
        library_log.removeHandler(warnings)
        library_log.propagate = propagate


if __name__ == "__main__":
    sys.exit(main())
