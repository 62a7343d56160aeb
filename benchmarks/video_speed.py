"""Video end to end: decode + upscale + encode frames/s, and where the time goes.

For each network (default: FSRCNN-s x3 and ESPCN x3, as ``subpixel upscale`` runs them:
the engine and precision chosen by ``"auto"``) and x264 preset, ``subpixel.upscale_video``
upscales ``$SUBPIXEL_DATA/video/slow_traffic_small.mp4`` (640x360, 914 frames, 29.97 fps)
to 1920x1080 and the table gives frames/s of the whole job. Beside it, on the same frames:

- **decode**: the input decoded and nothing else;
- **network**: the network alone on one 640x360 luminance frame (median of 20 calls);
- **bicubic pipeline**: the whole job with the bicubic model, the floor that decoding,
  chroma upsampling and encoding set whatever the network.

Weights are the bundled ones where the package ships them, random otherwise (speed does not
depend on them). On a CUDA machine the networks run there (``--device``, default: CUDA
when present) and frames go through them in batches (``--batch``, default 8 on a GPU, 1 on
a CPU), as ``subpixel upscale --batch N`` runs them; decoding and encoding stay on the CPU.
Writes ``OUT/video-speed.md`` and ``OUT/video-speed.json``.

Usage::

    python benchmarks/video_speed.py                       # about 10 min on 2 cores
    python benchmarks/video_speed.py --frames 120 --presets veryfast --out /tmp/v
    python benchmarks/video_speed.py --device cuda --batch 32 --presets ultrafast
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from device_pipeline import median_seconds
from speed import _engine_name, machine
from torch import nn

import subpixel
from subpixel import models
from subpixel.allocator import keep_freed_memory
from subpixel.devices import processor_name, resolve_device
from subpixel.engines import set_threads
from subpixel.paths import data_root
from subpixel.pipeline.video import upscale_video
from subpixel.upscaler import Upscaler
from subpixel.weights import bundled_weights, card_of, describe

NETWORKS = ("fsrcnn-s-x3", "espcn-x3")
PRESETS = ("ultrafast", "veryfast", "medium")
VIDEO = "video/slow_traffic_small.mp4"


def load_upscaler(name: str, device: torch.device) -> tuple[Upscaler, str]:
    """(the Python default path for ``name`` on ``device``, where its weights came from)."""
    architecture, _, scale_text = name.rpartition("-x")
    scale = int(scale_text)
    if architecture == "bicubic":
        return subpixel.load_model("bicubic", scale=scale, device=device), "none (fixed)"
    if (architecture, scale) in bundled_weights():
        return subpixel.load_model(architecture, scale=scale, device=device), "bundled"
    torch.manual_seed(0)
    network: nn.Module = models.build(architecture, scale=scale).eval()
    describe(network, architecture)
    return Upscaler(network.to(device), card_of(network)), "random"


def _engine_label(upscaler: Upscaler) -> str:
    """The engine, form and precision ``"auto"`` chose for 8-bit frames."""
    engine = upscaler.engine_for(upscaler.precision_for(8))
    return f"{_engine_name(engine)} {engine.precision}"


def decode_fps(source: Path, frames: int) -> float:
    started, count = time.perf_counter(), 0
    with av.open(str(source)) as container:
        for _ in container.decode(video=0):
            count += 1
            if count == frames:
                break
    return count / (time.perf_counter() - started)


def network_ms(model: Upscaler, size: tuple[int, int], batch: int = 1, runs: int = 20) -> float:
    """Median ms per frame of the network alone on ``batch`` luminance frames already where
    it runs (to the device's synchronisation on a GPU: ``device_pipeline.median_seconds``)."""
    width, height = size
    y = torch.rand((batch, 1, height, width), generator=torch.Generator().manual_seed(0))
    y = y.to(model.device)
    return 1000 * median_seconds(lambda: model.run_tensor(y), model.device, runs) / batch


def job_fps(source: Path, model: Upscaler, preset: str, frames: int | None, batch: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        report = upscale_video(
            source, Path(folder) / "out.mp4", model, preset=preset, max_frames=frames, batch=batch
        )
    return report.fps


def write_markdown(path: Path, rows: list[dict[str, Any]], facts: dict[str, Any]) -> None:
    header = "| network | weights | engine | preset | frames/s | network alone (ms/frame, fps) |"
    lines = [
        "# Video end to end: decode + upscale + encode",
        "",
        f"`python benchmarks/video_speed.py`: {facts['video']} ({facts['input']}, "
        f"{facts['frames']} frames) to {facts['output']}, x264 at CRF 18, yuv420p, "
        "luminance through the network, chroma bicubic; the networks on "
        f"{facts['device']}, {facts['batch']} frame(s) a call.",
        "",
        f"Decode alone: {facts['decode_fps']:.0f} frames/s.",
        "",
        header,
        "|---|---|---|---|---:|---:|",
    ]
    for row in rows:
        alone = (
            "-"
            if row["network_ms"] is None
            else f"{row['network_ms']:.1f} ms, {1000 / row['network_ms']:.0f} fps"
        )
        lines.append(
            f"| {row['network']} | {row['weights']} | {row['engine']} | {row['preset']} | "
            f"{row['fps']:.1f} | {alone} |"
        )
    m = facts["machine"]
    lines += [
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['threads']} threads), "
        f"load {m['load_average']}; Python {m['python']}, torch {m['torch']}, "
        f"PyAV {facts['pyav']}, subpixel {m['subpixel']}; device: {facts['device_name']}.",
        "",
    ]
    path.write_text("\n".join(lines))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default=",".join(NETWORKS), help="comma-separated")
    parser.add_argument("--presets", default=",".join(PRESETS), help="x264 presets")
    parser.add_argument("--frames", type=int, default=None, help="default: the whole video")
    parser.add_argument("--threads", type=int, default=None, help="default: usable cores")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="output folder (docs)")
    default = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", default=default, help=f"where the networks run ({default})")
    parser.add_argument("--batch", type=int, default=None, help="frames a call (GPU 8, CPU 1)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    keep_freed_memory()  # as `subpixel upscale` does
    if args.threads:
        set_threads(args.threads)
    device = resolve_device(args.device)
    batch = args.batch or (1 if device.type == "cpu" else 8)
    source = data_root() / VIDEO
    if not source.is_file():
        print(f"video_speed: {source} not found (set SUBPIXEL_DATA)", file=sys.stderr)
        return 1
    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        size, total = (stream.width, stream.height), stream.frames
    frames = min(args.frames or total, total)
    presets = args.presets.split(",")
    facts: dict[str, Any] = {
        "video": VIDEO,
        "input": f"{size[0]}x{size[1]}",
        "output": f"{3 * size[0]}x{3 * size[1]}",
        "frames": frames,
        "decode_fps": decode_fps(source, frames),
        "pyav": av.__version__,
        "machine": machine(),
        "device": str(device),
        "device_name": processor_name(device),
        "batch": batch,
    }
    print(f"decode alone: {facts['decode_fps']:.0f} frames/s", file=sys.stderr)
    rows: list[dict[str, Any]] = []
    for name in [*args.networks.split(","), "bicubic-x3"]:
        model, weights = load_upscaler(name, device)
        alone = None if name.startswith("bicubic") else network_ms(model, size, batch)
        for preset in presets:
            fps = job_fps(source, model, preset, frames, batch)
            rows.append(
                {
                    "network": name,
                    "weights": weights,
                    "engine": _engine_label(model),
                    "preset": preset,
                    "fps": fps,
                    "network_ms": alone,
                }
            )
            print(f"{name:12s} {preset:10s} {fps:6.1f} frames/s", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    write_markdown(args.out / "video-speed.md", rows, facts)
    (args.out / "video-speed.json").write_text(
        json.dumps({"facts": facts, "rows": rows}, indent=1, default=str)
    )
    print((args.out / "video-speed.md").read_text())
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
