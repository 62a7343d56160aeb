"""Host-to-host upscaling of RGB frames with the arithmetic on the network's device.

Times, for each network (``--networks``, bundled, default ESPCN x3, FSRCNN x3, FSRCNN-s x3)
on 640x360 uint8 RGB frames:

- **default**: ``Upscaler.upscale_batch`` on a list of numpy frames, what ``subpixel
  upscale --batch N`` runs: on a GPU one upload of the batch, the split into Y and chroma,
  the network, bicubic chroma and the output colours on the device, one download; on a CPU
  the image pipeline one frame at a time.
- **device pipeline**: ``subpixel.pipeline.device.upscale_frames`` host to host with the bare
  network in float32 and, on CUDA, under float16 and bfloat16 autocast (the arithmetic around
  it stays float32);
- **network alone** on (B, 1, H, W) luminance already on the device.

Frames go one at a time and in batches (``--batch``, default 8). Prints ms/frame and
frames/s (medians of ``--repeats`` timed calls after warm-up) with the machine. Random
pixels: speed does not depend on them.

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
    parser.add_argument(
        "--networks",
        default="espcn-x3,fsrcnn-x3,fsrcnn-s-x3",
        help="bundled NAME-xR, comma-separated",
    )
    parser.add_argument("--batch", type=int, default=8, help="frames per batch (default 8)")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls (default 20)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--tf32", action="store_true", help="let the network use TF32")
    args = parser.parse_args()

    device = resolve_device(args.device)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (args.batch, args.height, args.width, 3), dtype=np.uint8)
    precisions = ["float32"] + (["float16", "bfloat16"] if device.type == "cuda" else [])

    print(f"machine: {processor_name(device)} ({device}); torch {torch.__version__}")
    print(
        f"{args.width}x{args.height} uint8 RGB; network TF32: "
        f"{'allowed' if args.tf32 else 'off'}; median of {args.repeats} calls"
    )
    print(
        f"{'network':<12} {'what':<32} {'precision':<9} {'batch':>5} {'ms/frame':>9} "
        f"{'frames/s':>9}"
    )

    for spec in args.networks.split(","):
        name, _, factor = spec.rpartition("-x")
        upscaler = subpixel.load_model(name, scale=int(factor), device=device)
        scale = upscaler.scale

        def row(what: str, precision: str, batch: int, seconds: float, spec: str = spec) -> None:
            per_frame = 1000.0 * seconds / batch
            print(
                f"{spec:<12} {what:<32} {precision:<9} {batch:>5} {per_frame:>9.2f} "
                f"{1000 / per_frame:>9.1f}",
                flush=True,
            )

        for batch in (1, args.batch):
            listed = list(frames[:batch])

            def default_path(
                listed: list[np.ndarray] = listed, up: subpixel.Upscaler = upscaler
            ) -> object:
                return up.upscale_batch(listed)

            seconds = median_seconds(default_path, device, args.repeats)
            row("default (upscale_batch)", upscaler.precision_for(8), batch, seconds)

        for precision in precisions:
            net = with_precision(upscaler.network, device, precision)
            for batch in (1, args.batch):
                host = frames[:batch]

                def host_to_host(
                    host: np.ndarray = host, net: nn.Module = net, scale: int = scale
                ) -> np.ndarray:
                    on_device = torch.from_numpy(host).to(device)
                    out = upscale_frames(
                        on_device,
                        net,
                        scale=scale,
                        colour_space="y",
                        peak=255,
                        allow_tf32=args.tf32,
                    )
                    return out.cpu().numpy()

                seconds = median_seconds(host_to_host, device, args.repeats)
                row("device pipeline, host to host", precision, batch, seconds)

                luma = torch.rand(batch, 1, args.height, args.width, device=device)

                def network_alone(luma: Tensor = luma, net: nn.Module = net) -> Tensor:
                    with torch.inference_mode(), tf32(args.tf32):
                        return net(luma)

                seconds = median_seconds(network_alone, device, args.repeats)
                row("network alone", precision, batch, seconds)


if __name__ == "__main__":
    main()
