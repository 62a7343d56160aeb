"""Exactness of the default path on a device: a batch against its frames, tiles against the
whole image, and the device against the CPU, counted in output bytes.

For each bundled network (``--networks``, default ECBSR x3, ESPCN x3, FSRCNN x3) on random
uint8 RGB frames (``--width`` x ``--height``), with this machine's default engine and
precision on ``--device`` (CUDA when there is one):

- **batch vs frames**: ``Upscaler.upscale_frames`` on a batch of ``--batch`` frames against
  each frame alone (the README promises equal bytes on a CPU; on a GPU it is measured here);
- **tiles vs whole**: ``upscaler(image, tile=T)`` for each ``--tiles`` size against
  ``upscaler(image)``;
- **device vs CPU**: the device's whole-image bytes against a CPU Upscaler's (different
  engines and kernels: a level apart at some pixels is expected, more is not).

Prints, per row, how many output values differ, their share and the largest difference in
levels, with the machine. Nothing is timed.

Usage::

    python benchmarks/device_exactness.py                  # CUDA when there is one
    python benchmarks/device_exactness.py --device cpu --width 96 --height 64
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

import subpixel
from subpixel.devices import processor_name, resolve_device


@dataclass(frozen=True)
class Difference:
    network: str
    check: str
    values: int
    differing: int
    largest: int

    def row(self) -> str:
        share = self.differing / self.values if self.values else 0.0
        return (
            f"| {self.network} | {self.check} | {self.differing:,} | {share:.2e} | {self.largest} |"
        )


def difference(network: str, check: str, a: np.ndarray, b: np.ndarray) -> Difference:
    apart = np.abs(a.astype(np.int64) - b.astype(np.int64))
    return Difference(network, check, apart.size, int((apart > 0).sum()), int(apart.max()))


def check_network(
    name: str,
    scale: int,
    device: torch.device,
    frames: np.ndarray,
    tiles: Sequence[int],
) -> list[Difference]:
    label = f"{name} x{scale}"
    upscaler = subpixel.load_model(name, scale=scale, device=device)
    on_device = torch.from_numpy(frames).to(device)
    together = upscaler.upscale_frames(on_device).cpu().numpy()
    alone = np.stack([upscaler.upscale_frames(on_device[k : k + 1])[0].cpu().numpy()
                      for k in range(len(frames))])  # fmt: skip
    rows = [difference(label, f"batch of {len(frames)} vs frames alone", together, alone)]
    image = frames[0]
    whole = upscaler(image)
    rows += [difference(label, f"tile {tile} vs whole", upscaler(image, tile=tile), whole)
             for tile in tiles]  # fmt: skip
    if device.type != "cpu":
        cpu = subpixel.load_model(name, scale=scale, device="cpu")
        rows.append(difference(label, "device vs CPU (whole image)", whole, cpu(image)))
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--networks", default="ecbsr-x3,espcn-x3,fsrcnn-x3")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--tiles", type=int, nargs="*", default=[17, 37, 97])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    rng = np.random.default_rng(args.seed)
    frames = rng.integers(0, 256, (args.batch, args.height, args.width, 3), dtype=np.uint8)
    print(f"machine: {processor_name(device)}; torch {torch.__version__}; device {device}")
    print(f"{args.batch} random {args.width}x{args.height} uint8 RGB frames, default engine")
    print("\n| network | check | values differing | share | largest (levels) |")
    print("|---|---|---|---|---|")
    for network in args.networks.split(","):
        name, _, scale = network.rpartition("-x")
        for row in check_network(name, int(scale), device, frames, args.tiles):
            print(row.row(), flush=True)


if __name__ == "__main__":
    main()
