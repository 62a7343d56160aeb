"""Speed of subpixel's networks and image pipeline, beside OpenCV and this CPU's matmul peak.

For each network and workload (an LR frame whose output is 1080p: 960x540 at x2, 640x360 at
x3, 480x270 at x4; and 1280x720 at x3, whose output is 4K) one run measures, interleaved
(every round calls every method once, so a change in the machine's load hits them alike),
the median of ``--runs`` calls after a warm-up call:

- **RGB, end to end**: a uint8 RGB array to a uint8 RGB array, colour conversion and chroma
  upsampling included. ``subpixel default`` is the Python default path,
  ``subpixel.load_model(name)(rgb)``, the same ``Upscaler`` that ``subpixel upscale`` runs:
  the engine chosen by ``"auto"`` in the precision chosen by ``"auto"`` (bfloat16 for
  bundled weights whose recorded loss allows it, or else mixed, on a CPU with native
  bfloat16; see ``subpixel.precision``).
  Also the same path forced to float32, bfloat16 or mixed, and with the compiled bfloat16
  graph. OpenCV's ``dnn_superres`` with its pretrained model of the same architecture and
  scale (``$SUBPIXEL_DATA/peers/opencv_dnn_superres``) and OpenCV's bicubic ``cv2.resize``
  are the peers.
- **Y network**: the network alone on a (1, 1, H, W) float32 luminance frame, for every
  engine (``subpixel.engines.ENGINES``) in float32 and, for the torch and OpenVINO engines,
  bfloat16 (and mixed: channels-last torch, OpenVINO); FSRCNN also in the exact sub-pixel
  form of its deconvolution.

Each row gives ms, frames/s, the ratio of frames/s to OpenCV dnn_superres end to end, and
GFLOP/s: the network's own FLOPs (2 x multiply-accumulates of the network as defined, its
transposed convolution counted as such, whatever form runs) per second, and that as a share
of the fp32 or bf16 peak of a 4096^3 matmul measured at the start of the same run, on the
same threads: the faster of torch's and OpenVINO's (on a Zen 5 machine torch's float32
matmul ran at less than half of OpenVINO's rate). Compile time (the first call of
``torch-compile``) is reported apart. The bundled weights where there are some
(``subpixel.weights.bundled_weights()``), random ones otherwise: speed does not depend on
them, but the automatic precision does. For networks with weights the loss of PSNR of
bfloat16 and of mixed against float32 on Set5 and Set14, measured in this run for each
bfloat16 engine (torch autocast, OpenVINO), is printed beside those rows.

On a machine with CUDA (``--gpu``, default: CUDA when present) a section for the GPU
follows, for the networks with bundled weights at the same frame sizes:
``benchmarks/device_pipeline.py``'s rows (the default path host to host, the device pipeline
in float32/float16/bfloat16, the network alone; one frame a call and ``--gpu-batch``) with
the network-alone rows as GFLOP/s and shares of the device's matmul peaks.

Writes ``OUT/speed.md`` (the machine, library versions, a summary and the full table),
``OUT/speed.png`` and ``OUT/speed.json`` (the records).

Usage::

    python benchmarks/speed.py                         # everything (over an hour on 2 cores)
    python benchmarks/speed.py --workloads 1080p       # the 1080p frames only
    python benchmarks/speed.py --quick --out /tmp/s    # 2 networks, 3 runs: a smoke test
    python benchmarks/speed.py --networks espcn-x3,fsrcnn-s-x3 --runs 20
    python benchmarks/speed.py --engines torch,onnxruntime --no-quality
    python benchmarks/speed.py --quick --gpu cpu --out /tmp/s  # the GPU section, on the CPU
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib.util
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import subpixel
from subpixel import models
from subpixel.allocator import keep_freed_memory
from subpixel.devices import processor_name, resolve_device
from subpixel.engines import ENGINES, Engine, GridEngine, make_engine, set_threads
from subpixel.errors import SubpixelError
from subpixel.precision import LOSS_KEYS, native_bfloat16, precision_for_card
from subpixel.precision_loss import measure_losses
from subpixel.upscaler import Upscaler
from subpixel.weights import bundled_weights, card_of, describe, load_network

# name -> (architecture, scale)
NETWORKS = {
    "espcn-x2": ("espcn", 2),
    "espcn-x3": ("espcn", 3),
    "espcn-x4": ("espcn", 4),
    "fsrcnn-x2": ("fsrcnn", 2),
    "fsrcnn-x3": ("fsrcnn", 3),
    "fsrcnn-x4": ("fsrcnn", 4),
    "fsrcnn-s-x3": ("fsrcnn-s", 3),
    "srcnn-x3": ("srcnn", 3),
    "ecbsr-x2": ("ecbsr", 2),
    "ecbsr-x3": ("ecbsr", 3),
    "ecbsr-x4": ("ecbsr", 4),
}
# Output frame -> LR (width, height) per scale; "--workloads WxH" adds an LR size for every
# scale (a quick check at a small size).
WORKLOADS = {
    "1080p": {2: (960, 540), 3: (640, 360), 4: (480, 270)},
    "4K": {3: (1280, 720)},
}
# SRCNN runs every convolution at the output size (119 GMAC a 1080p frame, 4x that at 4K):
# its 4K row would take longer than all the others together.
SKIP = {("srcnn-x3", "4K")}
QUICK_NETWORKS = ("espcn-x3", "fsrcnn-s-x3")
RGB, Y = "RGB end to end", "Y network"
FILES = "BMP files, per image"
#: Images in the folder the CLI and the Python loop upscale, per timed call.
FILE_IMAGES = 4
QUALITY_SETS = ("Set5", "Set14")


@dataclass
class Method:
    """One thing to time: ``call()`` runs it once on its prepared input."""

    label: str
    path: str  # RGB or Y
    engine: str
    precision: str
    call: Callable[[], object]
    form: str = ""  # "sub-pixel" for FSRCNN converted by models.fsrcnn_to_subpixel
    peer: bool = False
    images: int = 1  # images one call makes: its time is divided by them


@dataclass
class Record:
    """One measured row of the table."""

    network: str
    workload: str
    lr_size: tuple[int, int]  # (width, height)
    path: str
    label: str
    engine: str
    precision: str
    form: str
    ms: float
    runs: int
    gflop: float  # network FLOPs per frame / 1e9
    first_call_s: float
    peer: bool = False
    psnr_loss: dict[str, float] = field(default_factory=dict)  # bf16 vs fp32, dB

    @property
    def fps(self) -> float:
        return 1e3 / self.ms

    @property
    def gflops(self) -> float:
        return self.gflop / (self.ms / 1e3)


# --------------------------------------------------------------------------- #
# The machine
# --------------------------------------------------------------------------- #


def matmul_peak(dtype: torch.dtype, size: int, runs: int = 5) -> dict[str, float]:
    """GFLOP/s of a size^3 matmul (median of ``runs`` after one warm-up) in each library
    that can run it here: torch, and OpenVINO when installed.

    The fastest of them is the machine's peak: on a Zen 5 machine torch's float32 matmul
    ran at less than half of OpenVINO's rate.
    """
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(dtype)
    b = torch.randn(size, size, generator=generator).to(dtype)
    rates = {"torch": _gflops(lambda: torch.mm(a, b), size, runs)}
    if importlib.util.find_spec("openvino") is not None:
        matmul = _openvino_matmul(a.float().numpy(), b.float().numpy(), dtype)
        rates["OpenVINO"] = _gflops(matmul, size, runs)
    return rates


def _gflops(call: Callable[[], object], size: int, runs: int) -> float:
    call()
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(seconds) / 1e9


def _openvino_matmul(a: np.ndarray, b: np.ndarray, dtype: torch.dtype) -> Callable[[], object]:
    """One OpenVINO request computing ``a @ b`` (``b`` a constant) in ``dtype``'s arithmetic."""
    import openvino
    from openvino import opset13

    x = opset13.parameter(list(a.shape), openvino.Type.f32)
    model = openvino.Model([opset13.matmul(x, opset13.constant(b), False, False)], [x])
    config = {
        "INFERENCE_PRECISION_HINT": "bf16" if dtype == torch.bfloat16 else "f32",
        "INFERENCE_NUM_THREADS": torch.get_num_threads(),
    }
    request = openvino.Core().compile_model(model, "CPU", config).create_infer_request()
    return lambda: request.infer({0: a})


def _cpu_model() -> tuple[str, list[str]]:
    """The CPU's name and the SIMD flags that matter here (Linux's /proc/cpuinfo)."""
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return processor_name(), [f for f in value.split() if f in wanted]
    return processor_name(), []


def _version(module: str) -> str:
    try:
        return str(__import__(module).__version__)
    except ImportError:
        return "not installed"


def _load() -> str:
    """The 1, 5 and 15 minute load averages: another job running makes timings noisy."""
    if not hasattr(os, "getloadavg"):
        return "unknown"
    return " / ".join(f"{value:.1f}" for value in os.getloadavg())


def machine() -> dict[str, Any]:
    name, flags = _cpu_model()
    return {
        "cpu": name,
        "flags": flags,
        "cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "onnxruntime": _version("onnxruntime"),
        "openvino": _version("openvino"),
        "opencv": _version("cv2"),
        "subpixel": subpixel.__version__,
        "platform": platform.platform(),
        "load_average": _load(),
    }


# --------------------------------------------------------------------------- #
# What is timed
# --------------------------------------------------------------------------- #


def build_network(architecture: str, scale: int, extra: Sequence[Path] = ()) -> nn.Module:
    """The weights ``subpixel upscale`` would use (a file in ``extra`` for this architecture
    and scale, else the bundled one), or random ones with a card where there are none."""
    for path in extra:
        model = load_network(str(path))
        if (model.card.architecture, model.card.scale) == (architecture, scale):  # type: ignore[union-attr]
            return model
    bundled = bundled_weights().get((architecture, scale))
    if bundled is not None:
        return load_network(str(bundled))
    torch.manual_seed(0)
    network = models.build(architecture, scale=scale).eval()
    describe(network, architecture)
    return network


def network_gflop(network: nn.Module, scale: int, lr_size: tuple[int, int]) -> float:
    """FLOPs of one frame / 1e9: 2 x MACs per output pixel x output pixels."""
    per_pixel = models.measure_complexity(network, channels=1).macs_per_pixel
    width, height = lr_size
    return 2 * per_pixel * (scale * width) * (scale * height) / 1e9


def _engine_call(engine: Callable[[np.ndarray], np.ndarray], y: np.ndarray) -> Callable[[], object]:
    return lambda: engine(y)


def _rgb_call(upscaler: Upscaler, rgb: np.ndarray) -> Callable[[], object]:
    return lambda: upscaler(rgb)


def precisions() -> tuple[str, ...]:
    """The arithmetic types worth timing here: bfloat16 and mixed (the first layer float32)
    only where the CPU has bfloat16 natively (elsewhere it is emulated, many times slower
    than float32, and never chosen)."""
    return ("float32", "bfloat16", "mixed") if native_bfloat16() else ("float32",)


#: Engines timed in mixed: the two whose reduced arithmetic differs (OpenVINO's kernels,
#: torch's autocast).
MIXED_ENGINES = ("torch-channels-last", "openvino")


def network_methods(
    network: nn.Module, y: np.ndarray, engines: Sequence[str], threads: int
) -> list[Method]:
    """The network alone in every engine, precision and (FSRCNN) form."""
    forms = {"": network}
    if isinstance(network, models.FSRCNN):
        forms["sub-pixel"] = models.fsrcnn_to_subpixel(network)
    methods = []
    for form, net in forms.items():
        for name in engines:
            for precision in precisions():
                if name == "onnxruntime" and precision != "float32":
                    continue  # ONNX Runtime's CPU kernels are float32
                if precision == "mixed" and name not in MIXED_ENGINES:
                    continue
                try:
                    engine = make_engine(net, name, precision=precision, threads=threads)
                except SubpixelError as error:
                    print(f"  skipped {name} {precision} {form}: {error}", file=sys.stderr)
                    continue
                label = f"{name} {precision}" + (f" {form}" if form else "")
                methods.append(
                    Method(label, Y, name, precision, _engine_call(engine, y), form=form)
                )
    return methods


def rgb_methods(
    network: nn.Module,
    architecture: str,
    scale: int,
    rgb: np.ndarray,
    engines: Sequence[str],
    threads: int,
) -> list[Method]:
    """The whole pipeline, ours and OpenCV's, uint8 RGB in and out."""
    methods = []
    card = card_of(network)
    default = precision_for_card(card)
    for precision in ("auto", *precisions()):
        if precision == default:
            continue  # the same as "auto"
        upscaler = Upscaler(network, card, precision=precision, threads=threads)
        engine = upscaler.engine_for(upscaler.precision_for(8))
        chosen = _engine_name(engine)
        label = f"subpixel default (auto: {chosen} {engine.precision})"
        if precision != "auto":  # the engine may still run float32 (onnxruntime)
            label = f"subpixel, {precision} (auto: {chosen} {engine.precision})"
        methods.append(Method(label, RGB, chosen, engine.precision, _rgb_call(upscaler, rgb)))
    if "torch-compile" in engines and "bfloat16" in precisions():
        compiled = Upscaler(network, card, engine="torch-compile", precision="bfloat16")
        methods.append(
            Method(
                "subpixel, torch-compile bf16",
                RGB,
                "torch-compile",
                "bfloat16",
                _rgb_call(compiled, rgb),
            )
        )
    peer = _opencv_dnn(architecture, scale)
    if peer is not None:
        methods.append(
            Method(
                "OpenCV dnn_superres", RGB, "opencv-dnn", "float32", lambda: peer(rgb), peer=True
            )
        )
    bicubic = _opencv_bicubic(scale)
    if bicubic is not None:
        methods.append(
            Method("OpenCV bicubic", RGB, "cv2.resize", "-", lambda: bicubic(rgb), peer=True)
        )
    return methods


def file_methods(
    architecture: str, scale: int, rgb: np.ndarray, folder: Path, threads: int
) -> list[Method]:
    """The CLI and the Python API on the same folder of ``FILE_IMAGES`` BMP files (read,
    upscaled by the bundled model with the defaults, written): the Python default path
    against ``subpixel upscale``, run in this process. BMP keeps the codec's share small.
    Each call writes new files into a folder of its own, as a user's run does (replacing a
    file costs more on some file systems: ext4 flushes the new data on such a rename).

    Both faces do the same work per call: load the model (its engine built from the
    cached export and engine choice) and upscale the folder. A model kept from call to
    call would skip its engine's first runs, which cost more than the later ones (memory
    the engine maps and touches for the first time: about 60-90 ms each for the first
    one or two frames on 2 cores), and the CLI cannot keep one between invocations."""
    from PIL import Image

    from subpixel import cli

    source = folder / "in"
    source.mkdir(parents=True, exist_ok=True)
    for i in range(FILE_IMAGES):
        Image.fromarray(np.roll(rgb, i, axis=1)).save(source / f"frame{i}.bmp")
    files = sorted(source.iterdir())
    calls = {"cli": 0, "python": 0}

    def fresh(face: str) -> Path:
        calls[face] += 1
        out = folder / face / str(calls[face])
        out.mkdir(parents=True)
        return out

    def run_cli() -> None:
        argv = ["upscale", str(source), "-o", str(fresh("cli")), "--model", architecture]
        argv += ["--scale", str(scale), "--threads", str(threads)]
        with open(os.devnull, "w") as quiet, contextlib.redirect_stderr(quiet):
            if cli.main(argv) != 0:
                raise SubpixelError(f"subpixel {' '.join(argv)} failed")

    upscaler = subpixel.load_model(architecture, scale=scale, threads=threads)

    def run_python() -> None:
        out = fresh("python")
        model = subpixel.load_model(architecture, scale=scale, threads=threads)
        for file in files:
            with Image.open(file) as image:
                subpixel.upscale_image(image, model).save(out / file.name)

    precision = upscaler.precision_for(8)
    engine = _engine_name(upscaler.engine_for(precision))
    return [
        Method("subpixel upscale (the CLI)", FILES, engine, precision, run_cli, images=FILE_IMAGES),
        Method(
            "Python: load_model, upscale_image, save",
            FILES,
            engine,
            precision,
            run_python,
            images=FILE_IMAGES,
        ),
    ]


def _check_same_files(folder: Path) -> None:
    """The CLI's and the Python loop's outputs in ``folder`` (``file_methods``) hold the
    same pixels: one path, whichever face runs it."""
    from PIL import Image

    by_cli = sorted((folder / "cli").glob("*/*.bmp"))
    if not by_cli:
        return
    for file in by_cli:
        twin = folder / "python" / file.parent.name / file.name
        with Image.open(file) as ours, Image.open(twin) as theirs:
            if not np.array_equal(np.asarray(ours), np.asarray(theirs)):
                raise SubpixelError(f"the CLI and upscale_image wrote different {file.name}")
    shutil.rmtree(folder / "cli")
    shutil.rmtree(folder / "python")


def _engine_name(engine: Engine) -> str:
    """An engine's name, the form (FSRCNN) it runs, and its fixed grid of tiles, if any."""
    name = f"{engine.name} sub-pixel" if engine.form else str(engine.name)
    return f"{name} on a grid" if isinstance(engine, GridEngine) else name


def _opencv_dnn(architecture: str, scale: int) -> Callable[[np.ndarray], np.ndarray] | None:
    from subpixel.peers import OPENCV_MODELS, opencv_upscaler

    if architecture not in OPENCV_MODELS:
        return None
    try:
        return opencv_upscaler(architecture, scale)
    except SubpixelError as error:
        print(f"  no OpenCV dnn_superres peer: {error}", file=sys.stderr)
        return None


def _opencv_bicubic(scale: int) -> Callable[[np.ndarray], np.ndarray] | None:
    try:
        import cv2
    except ImportError:
        return None

    def resize(rgb: np.ndarray) -> np.ndarray:
        height, width = rgb.shape[:2]
        return cv2.resize(rgb, (scale * width, scale * height), interpolation=cv2.INTER_CUBIC)

    return resize


def time_interleaved(methods: Sequence[Method], runs: int) -> dict[str, tuple[float, float]]:
    """label -> (median ms, first call s): one warm-up call each, then ``runs`` rounds."""
    first = {}
    for method in methods:
        start = time.perf_counter()
        method.call()
        first[method.label] = time.perf_counter() - start
    samples: dict[str, list[float]] = {m.label: [] for m in methods}
    for _ in range(runs):
        for method in methods:
            start = time.perf_counter()
            method.call()
            samples[method.label].append((time.perf_counter() - start) * 1e3)
    return {label: (statistics.median(ms), first[label]) for label, ms in samples.items()}


# --------------------------------------------------------------------------- #
# Quality of bfloat16
# --------------------------------------------------------------------------- #


def _loss_engine(engine: str) -> str:
    """The engine whose bfloat16 arithmetic a row's engine (``"openvino sub-pixel"`` on an
    end-to-end row, say) shares: OpenVINO's own kernels, or torch's autocast (eager,
    channels-last and compiled alike)."""
    return "openvino" if engine.startswith("openvino") else "torch-channels-last"


def weights_psnr_losses(
    networks: dict[str, nn.Module], engines: Sequence[str]
) -> dict[tuple[str, str, str], dict[str, float]]:
    """(network name, loss engine, precision) -> {dataset: float32 PSNR - PSNR in
    precision, bfloat16 or mixed} for the networks with trained weights (a card with
    training metrics)."""
    losses = {}
    loss_engines = sorted({_loss_engine(e) for e in engines if e != "onnxruntime"})
    for name, network in networks.items():
        if not getattr(network, "card", None) or not network.card.metrics:  # type: ignore[union-attr]
            continue
        for engine in loss_engines:
            try:
                measured = measure_losses(network, QUALITY_SETS, [engine])
                for precision, by_dataset in measured.items():
                    losses[name, engine, precision] = by_dataset
            except SubpixelError as error:  # the benchmark sets are missing, no openvino
                print(f"  no bf16 quality for {name} on {engine}: {error}", file=sys.stderr)
    return losses


# --------------------------------------------------------------------------- #
# Reports
# --------------------------------------------------------------------------- #


def _peer_fps(records: Sequence[Record], record: Record) -> float | None:
    for other in records:
        if (other.network, other.workload, other.engine) == (
            record.network,
            record.workload,
            "opencv-dnn",
        ):
            return other.fps
    return None


def _row(records: Sequence[Record], r: Record, peaks: dict[str, float]) -> list[str]:
    peer = _peer_fps(records, r) if r.path != FILES else None
    ratio = f"{r.fps / peer:.2f}x" if peer else "-"
    if r.engine == "cv2.resize":
        gflops = share = "-"
    else:
        peak = peaks.get("float32" if r.precision == "float32" else "bfloat16")
        gflops = f"{r.gflops:.0f}"
        share = f"{100 * r.gflops / peak:.0f}%" if peak else "-"
    loss = ", ".join(f"{name} {value:+.3f}" for name, value in r.psnr_loss.items()) or "-"
    width, height = r.lr_size
    return [
        r.network,
        f"{width}x{height}",
        r.path,
        r.label,
        f"{r.ms:.1f}",
        f"{r.fps:.1f}",
        ratio,
        gflops,
        share,
        f"{r.first_call_s:.1f}" if r.engine == "torch-compile" else "-",
        loss if r.precision in LOSS_KEYS else "-",
    ]


HEADER = [
    "network",
    "LR",
    "path",
    "method",
    "ms",
    "frames/s",
    "vs OpenCV dnn",
    "GFLOP/s",
    "of peak",
    "compile s",
    "bf16 / mixed PSNR loss (dB)",
]


def _table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def summary(records: Sequence[Record]) -> list[Record]:
    """Per network and workload: our default, the fastest of ours per path, the peers."""
    keep: list[Record] = []
    groups: dict[tuple[str, str], list[Record]] = {}
    for record in records:
        groups.setdefault((record.network, record.workload), []).append(record)
    for group in groups.values():
        picks = [r for r in group if r.label.startswith("subpixel default")]
        for path in (RGB, Y):
            for precision in ("float32", "bfloat16", "mixed"):
                ours = [r for r in group if r.path == path and r.precision == precision]
                ours = [r for r in ours if not r.peer]
                if ours:
                    best = min(ours, key=lambda r: r.ms)
                    if best not in picks:
                        picks.append(best)
        picks += [r for r in group if r.peer or r.path == FILES]
        keep += picks
    return keep


def write_markdown(
    path: Path,
    records: Sequence[Record],
    info: dict[str, Any],
    peaks: dict[str, float],
    args: argparse.Namespace,
    gpu_lines: Sequence[str] = (),
) -> None:
    flags = ", ".join(info["flags"]) or "none of avx2/avx512/amx"
    lines = [
        "# Speed",
        "",
        f"Measured by `{' '.join(['python', 'benchmarks/speed.py', *args.argv])}`.",
        "",
        f"- CPU: {info['cpu']}, with {flags}; {info['cores']} usable cores, {info['threads']} "
        f"threads; {info['platform']}",
        f"- Python {info['python']}, torch {info['torch']}, numpy {info['numpy']}, "
        f"onnxruntime {info['onnxruntime']}, OpenVINO {info['openvino']}, "
        f"OpenCV {info['opencv']}, subpixel {info['subpixel']}",
        f"- Matmul peak ({args.peak_size}^3, {info['threads']} threads, the fastest library): "
        f"**{peaks['float32']:.0f} GFLOP/s fp32**{_by_library(info['matmul'], 'float32')}, "
        + _bfloat16_peak(peaks)
        + _by_library(info["matmul"], "bfloat16"),
        f"- Median of {args.runs} interleaved calls after one warm-up; load average at the "
        f"start {info['load_average']}, at the end {info['load_average_end']}",
        "",
        "Frames/s are for one output frame (1080p, or 4K for the 1280x720 input). *RGB end "
        "to end* is a uint8 RGB array to a uint8 RGB array; *Y network* is the network alone "
        "on a float32 luminance frame. GFLOP/s counts the network's FLOPs only (2 x its "
        "multiply-accumulates as defined), also on the end-to-end rows; *of peak* is against "
        "the fp32 or bf16 matmul peak above. *vs OpenCV dnn* is frames/s over those of "
        "OpenCV's dnn_superres with its own model of the same architecture and scale, end "
        "to end. *mixed* runs the first layer in float32 and the rest in bfloat16 (its GFLOP/s "
        "are against the bf16 peak). bf16 / mixed PSNR loss: Set5/Set14 PSNR of float32 "
        "minus that in the row's arithmetic (torch autocast or OpenVINO), for networks with "
        'bundled weights or given by --weights ("-" otherwise: random weights). The default '
        "path runs bfloat16, or else mixed, only where that loss, recorded on the weights, "
        "is under 0.05 dB.",
        "",
        f"*{FILES}*: a folder of {FILE_IMAGES} BMP files of the same frame upscaled by the "
        "bundled model with the defaults, read and written, by `subpixel upscale` (run in "
        "this process) and by `subpixel.load_model` and a Python loop over "
        "`subpixel.upscale_image` and Pillow's `save`; ms per image, the model's loading and "
        "its engine's first runs included in both, as in a user's run.",
        "",
        "## Summary",
        "",
        _table([_row(records, r, peaks) for r in summary(records)]),
        "",
        *_cli_against_python(records),
        "## Everything",
        "",
        _table([_row(records, r, peaks) for r in records]),
        "",
    ]
    if args.skipped:
        lines += ["Not run: " + "; ".join(args.skipped) + ".", ""]
    lines += gpu_lines
    path.write_text("\n".join(lines))


def _cli_against_python(records: Sequence[Record]) -> list[str]:
    """One line per network: the Python loop's time per image over the CLI's."""
    lines = []
    for network in dict.fromkeys(r.network for r in records):
        rows = {r.label: r.ms for r in records if r.network == network and r.path == FILES}
        if len(rows) == 2:
            cli_ms, python_ms = (
                rows["subpixel upscale (the CLI)"],
                rows["Python: load_model, upscale_image, save"],
            )
            lines.append(
                f"- {network}, {FILES}: Python {python_ms:.1f} ms, the CLI {cli_ms:.1f} ms "
                f"(Python / CLI {python_ms / cli_ms:.2f})"
            )
    return [*lines, ""] if lines else []


def write_plot(path: Path, records: Sequence[Record]) -> bool:
    """Frames/s per network and workload for the summary's methods, log scale."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [r for r in summary(records) if r.path != FILES]
    groups = list(dict.fromkeys((r.network, r.workload) for r in rows))
    kinds = list(dict.fromkeys(_kind(r) for r in rows))
    kinds.sort(key=lambda kind: kind.startswith("OpenCV"))  # ours first, then the peers
    figure, axes = plt.subplots(figsize=(11, 1.5 + 0.25 * len(groups) * len(kinds)))
    height = 0.8 / max(1, len(kinds))
    for k, kind in enumerate(kinds):
        ys, xs = [], []
        for g, group in enumerate(groups):
            match = [r for r in rows if (r.network, r.workload) == group and _kind(r) == kind]
            if match:
                ys.append(g + k * height)
                xs.append(match[0].fps)
        axes.barh(ys, xs, height=height, label=kind)
    axes.set_yticks([g + 0.4 - height / 2 for g in range(len(groups))])
    axes.set_yticklabels([f"{n} {w}" for n, w in groups])
    axes.invert_yaxis()
    axes.set_xscale("log")
    axes.set_xlabel("frames/s (log scale)")
    axes.axvline(25, color="grey", linewidth=0.8, linestyle=":")
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes.set_title("subpixel vs OpenCV, one output frame")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def _kind(record: Record) -> str:
    if record.peer:
        return record.label
    if record.label.startswith("subpixel default"):
        return "subpixel default, RGB"
    return f"fastest {record.precision}, {'RGB' if record.path == RGB else 'Y network'}"


# --------------------------------------------------------------------------- #
# Main
# --------------------------------------------------------------------------- #


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", help=f"comma-separated, from {', '.join(NETWORKS)}")
    parser.add_argument(
        "--workloads", help="1080p, 4K and/or an LR size WxH (any scale); default 1080p,4K"
    )
    parser.add_argument("--engines", default=",".join(ENGINES), help="network engines to time")
    parser.add_argument("--runs", type=int, default=10, help="timed calls per method (10)")
    parser.add_argument("--threads", type=int, default=None, help="default: usable cores")
    parser.add_argument("--peak-size", type=int, default=4096, help="matmul side (4096)")
    parser.add_argument("--no-quality", action="store_true", help="skip the bf16 PSNR check")
    parser.add_argument(
        "--weights",
        type=Path,
        nargs="*",
        default=[],
        help="weights files to time and check bf16 quality with, instead of the bundled ones",
    )
    parser.add_argument(
        "--quick", action="store_true", help="2 networks, 1080p, 3 runs, no compile"
    )
    parser.add_argument("--out", type=Path, default=Path("docs"), help="output folder (docs)")
    parser.add_argument(
        "--gpu",
        default="auto",
        help="device for the GPU section: auto (CUDA when present), off, or a device name",
    )
    parser.add_argument("--gpu-batch", type=int, default=8, help="frames a call there (8)")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.quick:
        args.networks = args.networks or ",".join(QUICK_NETWORKS)
        args.workloads = args.workloads or "1080p"
        args.runs, args.peak_size = min(args.runs, 3), min(args.peak_size, 1024)
        args.engines = ",".join(e for e in args.engines.split(",") if e != "torch-compile")
        args.no_quality = True
    args.workloads = args.workloads or ",".join(WORKLOADS)
    for workload in args.workloads.split(","):
        if workload not in WORKLOADS and not re.fullmatch(r"[1-9][0-9]*x[1-9][0-9]*", workload):
            parser.error(f"a workload is 1080p, 4K or WxH, got {workload!r}")
    names = args.networks.split(",") if args.networks else list(NETWORKS)
    unknown = [n for n in names if n not in NETWORKS]
    if unknown:
        parser.error(f"unknown networks {unknown}; choose from {', '.join(NETWORKS)}")
    args.names = names
    args.engine_list = [e for e in args.engines.split(",") if e]
    if any(e not in ENGINES for e in args.engine_list):
        parser.error(f"engines must be among {', '.join(ENGINES)}")
    return args


def _by_library(rates: dict[str, dict[str, float]], precision: str) -> str:
    """`` (torch 227, OpenVINO 485)``: each library's rate, where there are several."""
    if len(rates.get(precision, {})) < 2:
        return ""
    return " (" + ", ".join(f"{k} {v:.0f}" for k, v in rates[precision].items()) + ")"


def _bfloat16_peak(peaks: dict[str, float]) -> str:
    if "bfloat16" in peaks:
        return f"**{peaks['bfloat16']:.0f} GFLOP/s bf16**"
    return "no native bfloat16 (bfloat16 rows left out)"


def device_section(
    args: argparse.Namespace, networks: dict[str, nn.Module]
) -> tuple[list[str], dict[str, Any]]:
    """The GPU section (``benchmarks/device_pipeline.section``) for the networks with
    bundled weights, at the first workload's frame size; nothing without a device for it."""
    if args.gpu == "off" or (args.gpu == "auto" and not torch.cuda.is_available()):
        return [], {}
    from device_pipeline import section  # a sibling script, as this one is run

    device = resolve_device("cuda" if args.gpu == "auto" else args.gpu)
    workload = args.workloads.split(",")[0]
    specs, lr_sizes, gflop = [], {}, {}
    for name in args.names:
        architecture, scale = NETWORKS[name]
        lr_size = _lr_size(workload, scale)
        if lr_size is None or (architecture, scale) not in bundled_weights():
            continue
        specs.append(name)
        lr_sizes[name] = lr_size
        gflop[name] = network_gflop(networks[name], scale, lr_size)
    print(f"GPU section on {device}: {', '.join(specs) or 'no bundled network'}", file=sys.stderr)
    if not specs:
        return [], {}
    lines, data = section(
        specs,
        device,
        lr_sizes=lr_sizes,
        gflop=gflop,
        batch=args.gpu_batch,
        repeats=args.runs,
        peak_size=args.peak_size,
    )
    return lines, {"workload": workload, **data}


def _lr_size(workload: str, scale: int) -> tuple[int, int] | None:
    """(width, height) of the LR frame of ``workload`` at ``scale``; None: not at this scale."""
    if workload in WORKLOADS:
        return WORKLOADS[workload].get(scale)
    width, _, height = workload.partition("x")
    return int(width), int(height)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    keep_freed_memory()  # as `subpixel upscale` does
    # Every compiled engine is another entry for the same forward(); the default limit of 8
    # would silently send the later ones back to eager.
    torch._dynamo.config.recompile_limit = 256
    threads = args.threads or (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    )
    set_threads(threads)
    info = machine()
    print(f"{info['cpu']}, {info['cores']} cores, {threads} threads", file=sys.stderr)
    info["matmul"] = {
        p: matmul_peak(getattr(torch, p), args.peak_size)
        for p in ("float32", "bfloat16")
        if p in precisions()
    }
    peaks = {p: max(rates.values()) for p, rates in info["matmul"].items()}
    print(
        f"matmul peak: {peaks['float32']:.0f} fp32 GFLOP/s; "
        + _bfloat16_peak(peaks).replace("**", ""),
        file=sys.stderr,
    )
    networks = {name: build_network(*NETWORKS[name], args.weights) for name in args.names}
    losses = (
        {}
        if args.no_quality or "bfloat16" not in precisions()
        else weights_psnr_losses(networks, args.engine_list)
    )
    records: list[Record] = []
    args.skipped = []
    rng = np.random.default_rng(0)
    scratch = tempfile.mkdtemp(prefix="subpixel-speed-")
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    for name in args.names:
        architecture, scale = NETWORKS[name]
        network = networks[name]
        for workload in args.workloads.split(","):
            lr_size = _lr_size(workload, scale)
            if lr_size is None:
                continue
            if (name, workload) in SKIP:
                args.skipped.append(f"{name} at {workload} (SRCNN works at the output size)")
                continue
            width, height = lr_size
            rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            y = rng.random((1, 1, height, width), dtype=np.float32)
            print(f"{name} {workload}: building engines", file=sys.stderr)
            methods = rgb_methods(network, architecture, scale, rgb, args.engine_list, threads)
            methods += network_methods(network, y, args.engine_list, threads)
            if not args.weights and workload != "4K":
                methods += file_methods(architecture, scale, rgb, Path(scratch) / name, threads)
            gflop = network_gflop(network, scale, lr_size)
            timings = time_interleaved(methods, args.runs)
            _check_same_files(Path(scratch) / name)
            for method in methods:
                ms, first = timings[method.label]
                ms /= method.images
                record = Record(
                    network=name,
                    workload=workload,
                    lr_size=lr_size,
                    path=method.path,
                    label=method.label,
                    engine=method.engine,
                    precision=method.precision,
                    form=method.form,
                    ms=ms,
                    runs=args.runs,
                    gflop=gflop,
                    first_call_s=first,
                    peer=method.peer,
                )
                if method.precision in LOSS_KEYS:
                    key = (name, _loss_engine(method.engine), method.precision)
                    record.psnr_loss = losses.get(key, {})
                records.append(record)
                print(f"  {method.label:48s} {ms:9.1f} ms {record.fps:7.1f} fps", file=sys.stderr)
    gpu_lines, gpu_data = device_section(args, networks)
    info["load_average_end"] = _load()
    args.out.mkdir(parents=True, exist_ok=True)
    write_markdown(args.out / "speed.md", records, info, peaks, args, gpu_lines)
    plotted = write_plot(args.out / "speed.png", records)
    data = {"machine": info, "peaks": peaks, "records": [asdict(r) for r in records]}
    if gpu_data:
        data["gpu"] = gpu_data
    (args.out / "speed.json").write_text(json.dumps(data, indent=1))
    written = ["speed.md", "speed.json"] + (["speed.png"] if plotted else [])
    print(f"wrote {', '.join(str(args.out / w) for w in written)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
