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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor, nn

import subpixel
from subpixel.devices import processor_name, resolve_device, tf32
from subpixel.pipeline.device import upscale_frames

#: The rows that time the network alone (their share of the device's peak is meaningful).
NETWORK_ALONE = "network alone"


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


@dataclass(frozen=True)
class DeviceRow:
    """One measurement: ``what`` ran ``network`` on batches of ``batch`` frames."""

    network: str
    what: str
    precision: str
    batch: int
    ms_per_frame: float

    @property
    def fps(self) -> float:
        return 1000.0 / self.ms_per_frame


def measure(
    specs: Sequence[str],
    device: torch.device,
    *,
    batch: int = 8,
    repeats: int = 20,
    width: int = 640,
    height: int = 360,
    allow_tf32: bool = False,
    report: Callable[[DeviceRow], None] = lambda row: None,
) -> list[DeviceRow]:
    """The default path, the device pipeline in each precision and the network alone, for
    each bundled network ``NAME-xR`` of ``specs``, at batch 1 and ``batch``; each row is
    also handed to ``report`` as it is measured."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
    precisions = precisions_on(device)
    rows: list[DeviceRow] = []

    def add(spec: str, what: str, precision: str, size: int, seconds: float) -> None:
        row = DeviceRow(spec, what, precision, size, 1000.0 * seconds / size)
        rows.append(row)
        report(row)

    for spec in specs:
        name, _, factor = spec.rpartition("-x")
        upscaler = subpixel.load_model(name, scale=int(factor), device=device)
        scale = upscaler.scale
        for size in (1, batch):
            listed = list(frames[:size])

            def default_path(
                listed: list[np.ndarray] = listed, up: subpixel.Upscaler = upscaler
            ) -> object:
                return up.upscale_batch(listed)

            seconds = median_seconds(default_path, device, repeats)
            add(spec, "default (upscale_batch)", upscaler.precision_for(8), size, seconds)

        for precision in precisions:
            net = with_precision(upscaler.network, device, precision)
            for size in (1, batch):
                host = frames[:size]

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
                        allow_tf32=allow_tf32,
                    )
                    return out.cpu().numpy()

                seconds = median_seconds(host_to_host, device, repeats)
                add(spec, "device pipeline, host to host", precision, size, seconds)

                luma = torch.rand(size, 1, height, width, device=device)

                def network_alone(luma: Tensor = luma, net: nn.Module = net) -> Tensor:
                    with torch.inference_mode(), tf32(allow_tf32):
                        return net(luma)

                seconds = median_seconds(network_alone, device, repeats)
                add(spec, NETWORK_ALONE, precision, size, seconds)
    return rows


def precisions_on(device: torch.device) -> list[str]:
    """The precisions the device pipeline is timed in on ``device``."""
    return ["float32"] + (["float16", "bfloat16"] if device.type == "cuda" else [])


def matmul_peaks(device: torch.device, size: int = 4096, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s of a ``size``^3 ``torch.mm`` on ``device`` in each of ``precisions_on`` (float32
    with TF32 off: the network's own arithmetic), median of ``repeats`` after a warm-up."""
    peaks = {}
    for precision in precisions_on(device):
        dtype = getattr(torch, precision)
        a, b = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))
        with tf32(False):
            seconds = median_seconds(lambda a=a, b=b: torch.mm(a, b), device, repeats)
        peaks[precision] = 2 * size**3 / seconds / 1e9
    return peaks


def section(
    specs: Sequence[str],
    device: torch.device,
    *,
    lr_sizes: dict[str, tuple[int, int]],
    gflop: dict[str, float],
    batch: int,
    repeats: int,
    peak_size: int = 4096,
) -> tuple[list[str], dict[str, object]]:
    """``benchmarks/speed.py``'s section for a GPU: ``measure`` for each network at its LR
    frame size (``lr_sizes``, (width, height)), and the network-alone rows as GFLOP/s
    (``gflop``: the network's GFLOP a frame) and shares of the device's matmul peaks.
    Returns the Markdown lines and the data for speed.json."""
    peaks = matmul_peaks(device, peak_size)
    rows = []
    for spec in specs:
        width, height = lr_sizes[spec]
        rows += measure([spec], device, batch=batch, repeats=repeats, width=width, height=height)
    name = processor_name(device)
    lines = [
        f"## On {name}",
        "",
        f"`benchmarks/device_pipeline.py`'s measurements on {device}: uint8 RGB frames host "
        "to host by the default path (`Upscaler.upscale_batch`) and by the device pipeline "
        "under each precision, and the network alone on luminance already on the device; "
        f"one frame a call and {batch}; median of {repeats} calls after two warm-ups, to the "
        "device's synchronisation; TF32 off. Matmul peak "
        f"({peak_size}^3, torch): "
        + ", ".join(f"**{v:.0f} GFLOP/s {k}**" for k, v in peaks.items())
        + ".",
        "",
        "| network | LR frame | what | precision | batch | ms/frame | frames/s | GFLOP/s "
        "| of peak |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    data = []
    for row in rows:
        width, height = lr_sizes[row.network]
        rate = share = "-"
        if row.what == NETWORK_ALONE:
            gflops = gflop[row.network] / (row.ms_per_frame / 1e3)
            rate, share = f"{gflops:.0f}", f"{gflops / peaks[row.precision]:.1%}"
        lines.append(
            f"| {row.network} | {width}x{height} | {row.what} | {row.precision} | {row.batch} "
            f"| {row.ms_per_frame:.3f} | {row.fps:.1f} | {rate} | {share} |"
        )
        data.append({**asdict(row), "fps": row.fps, "lr_size": [width, height]})
    lines.append("")
    return lines, {"device": name, "peaks": peaks, "rows": data}


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
    print(f"machine: {processor_name(device)} ({device}); torch {torch.__version__}")
    print(
        f"{args.width}x{args.height} uint8 RGB; network TF32: "
        f"{'allowed' if args.tf32 else 'off'}; median of {args.repeats} calls"
    )
    print(
        f"{'network':<12} {'what':<32} {'precision':<9} {'batch':>5} {'ms/frame':>9} "
        f"{'frames/s':>9}"
    )

    def show(row: DeviceRow) -> None:
        print(
            f"{row.network:<12} {row.what:<32} {row.precision:<9} {row.batch:>5} "
            f"{row.ms_per_frame:>9.2f} {row.fps:>9.1f}",
            flush=True,
        )

    measure(
        args.networks.split(","),
        device,
        batch=args.batch,
        repeats=args.repeats,
        width=args.width,
        height=args.height,
        allow_tf32=args.tf32,
        report=show,
    )


if __name__ == "__main__":
    main()
