"""Host-to-host upscaling of RGB frames with the arithmetic on the network's device.

Times ``subpixel.pipeline.device.upscale_frames`` on 640x360 uint8 RGB frames upscaled x3 by
the bundled ESPCN x3 (its Y network): one upload of the frames, the split into Y and chroma,
the network, bicubic chroma and the output colours on the device, one download. Frames go
one at a time and in batches (``--batch``, default 8), in float32 and, on CUDA, with the
network under float16 and bfloat16 autocast (the arithmetic around it stays float32).
Beside it: the network alone on (B, 1, 360, 640) luminance already on the device, and
``subpixel.upscale_image`` (the same arithmetic on the CPU, the network on the device).

Prints ms/frame and frames/s (medians of ``--repeats`` timed calls after warm-up) with the
machine. Random pixels: speed does not depend on them.

Usage::

    python benchmarks/device_pipeline.py                      # CUDA when there is one
    python benchmarks/device_pipeline.py --device cpu --repeats 3
    python benchmarks/device_pipeline.py --tf32               # let the network use TF32
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

import subpixel
from subpixel.devices import processor_name, resolve_device
from subpixel.pipeline.device import tf32, upscale_frames

SCALE = 3


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(work: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall time of ``work`` after two warm-up calls (device work included)."""
    for _ in range(2):
        work()
    synchronize(device)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def with_precision(network: nn.Module, device: torch.device, precision: str) -> nn.Module:
    """``network`` called under autocast to ``precision`` (``float32``: as it is)."""
    if precision == "float32":
        return network
    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}[precision]

    class Autocast(nn.Module):
        def forward(self, lr: Tensor) -> Tensor:
            with torch.autocast(device.type, dtype=dtype):
                return network(lr)

    return Autocast()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", default=default, help=f"default: {default}")
    parser.add_argument("--batch", type=int, default=8, help="frames per batch (default 8)")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls (default 20)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--tf32", action="store_true", help="let the network use TF32")
    args = parser.parse_args()

    device = resolve_device(args.device)
    network = subpixel.load_model("espcn", scale=SCALE, device=device)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (args.batch, args.height, args.width, 3), dtype=np.uint8)
    precisions = ["float32"] + (["float16", "bfloat16"] if device.type == "cuda" else [])

    print(f"machine: {processor_name(device)} ({device}); torch {torch.__version__}")
    print(
        f"{args.width}x{args.height} uint8 RGB -> x{SCALE}, ESPCN x{SCALE}; network TF32: "
        f"{'allowed' if args.tf32 else 'off'}; median of {args.repeats} calls"
    )
    print(f"{'what':<38} {'precision':<9} {'batch':>5} {'ms/frame':>9} {'frames/s':>9}")

    def row(what: str, precision: str, batch: int, seconds: float) -> None:
        per_frame = 1000.0 * seconds / batch
        print(f"{what:<38} {precision:<9} {batch:>5} {per_frame:>9.2f} {1000 / per_frame:>9.1f}")

    for precision in precisions:
        net = with_precision(network, device, precision)
        for batch in (1, args.batch):
            host = frames[:batch]

            def host_to_host(host: np.ndarray = host, net: nn.Module = net) -> np.ndarray:
                on_device = torch.from_numpy(host).to(device)
                out = upscale_frames(
                    on_device, net, scale=SCALE, colour_space="y", peak=255, allow_tf32=args.tf32
                )
                return out.cpu().numpy()

            seconds = median_seconds(host_to_host, device, args.repeats)
            row("device pipeline, host to host", precision, batch, seconds)

            luma = torch.rand(batch, 1, args.height, args.width, device=device)

            def network_alone(luma: Tensor = luma, net: nn.Module = net) -> Tensor:
                with torch.inference_mode(), tf32(args.tf32):
                    return net(luma)

            row(
                "network alone",
                precision,
                batch,
                median_seconds(network_alone, device, args.repeats),
            )

    def cpu_arithmetic() -> np.ndarray:
        with tf32(args.tf32):
            return subpixel.upscale_image(frames[0], network)

    seconds = median_seconds(cpu_arithmetic, device, args.repeats)
    row("upscale_image (arithmetic on the CPU)", "float32", 1, seconds)


if __name__ == "__main__":
    main()
