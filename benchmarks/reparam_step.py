"""The cost of one training step of the re-parameterised networks, in their three forms.

A forward and backward pass of a 16x1x32x32 batch through ecbsr and sesr at x2/x3/x4 with the
blocks run branch by branch, with each block's merged kernel computed from its branches (the
default), and through the plain ESPCN they collapse into. CPU time of one thread, the median
of the rounds; the three forms take turns, so load on the machine falls on all alike.

    OMP_NUM_THREADS=1 python benchmarks/reparam_step.py
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch
from torch import nn

from subpixel import models
from subpixel.reparam import CollapsibleLinearBlock, EdgeOrientedBlock


def _step(net: nn.Module, lr: torch.Tensor) -> None:
    net.zero_grad()
    net(lr).square().mean().backward()


def measure(
    name: str, scale: int, rounds: int, batch: int = 16, side: int = 32
) -> dict[str, float]:
    """Median milliseconds of one step for each form of ``name`` at ``scale``."""
    torch.manual_seed(0)
    lr = torch.rand(batch, 1, 32, 32)
    merged = models.build(name, scale=scale).train()
    branches = models.build(name, scale=scale).train()
    branches.load_state_dict(merged.state_dict())
    for block in branches.modules():
        if isinstance(block, EdgeOrientedBlock | CollapsibleLinearBlock):
            block.merged = False
    plain = merged.collapse().train()  # type: ignore[operator]
    forms = {"branches": branches, "merged": merged, "plain": plain}
    times: dict[str, list[float]] = {form: [] for form in forms}
    for net in forms.values():
        for _ in range(5):  # oneDNN builds its kernels on the first calls
            _step(net, lr)
    for _ in range(rounds):
        for form, net in forms.items():
            start = time.thread_time()
            _step(net, lr)
            times[form].append(time.thread_time() - start)
    return {form: 1e3 * sorted(t)[len(t) // 2] for form, t in times.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=25)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print("| network | branches (ms) | merged kernel (ms) | plain ESPCN (ms) |")
    print("|---|---|---|---|")
    for name in ("ecbsr", "sesr"):
        for scale in (2, 3, 4):
            ms = measure(name, scale, args.rounds)
            print(
                f"| {name} x{scale} | {ms['branches']:.1f} | {ms['merged']:.1f} "
                f"| {ms['plain']:.1f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
