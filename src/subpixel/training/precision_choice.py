"""The training precision of ``precision="auto"``: bfloat16 where it pays on this machine.

What bfloat16 autocast (the loss and the optimiser in float32) gains depends on network
and shape: on 2 Zen 4 cores (AVX-512 BF16) at 64 patches of 17x17 a step of ESPCN x3 was
1.87x faster, of FSRCNN x3 1.17x and of FSRCNN-s x3 1.12x; on a CPU without native bfloat16
it is emulated and slower. Set5 after the same 3,000 steps of ESPCN x3 differed by 0.003 dB. So
the choice is measured: on a device with native bfloat16 (``subpixel.precision
.native_bfloat16``), a copy of the network takes whole training steps (forward, loss,
backward, Adam) on random patches of the run's shape in each precision, interleaved, and
bfloat16 is chosen when its fastest step is at least ``BFLOAT16_PAYS`` times faster than
float32's. Elsewhere the choice is float32 without measuring.

The choice is kept per machine, torch version, threads and step shape in
``$XDG_CACHE_HOME/subpixel/training-precision.json``, so every run of one shape on one
machine trains in the same arithmetic; the run's ``config.json`` records the precision it
used, and a resumed run keeps it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from subpixel.devices import processor_name
from subpixel.files import read_json_cache, write_cache
from subpixel.paths import cache_root
from subpixel.precision import native_bfloat16
from subpixel.training.config import TrainConfig

__all__ = ["BFLOAT16_PAYS", "StepTimer", "choose_training_precision", "default_cache_file"]

#: How much faster a bfloat16 step must be than a float32 one to train in bfloat16.
BFLOAT16_PAYS = 1.25
_ROUNDS = 5

#: ``(config, precision) -> seconds of one training step``.
StepTimer = Callable[[TrainConfig, str], float]


def default_cache_file() -> Path:
    """``$XDG_CACHE_HOME/subpixel/training-precision.json`` (by default under ``~/.cache``)."""
    return cache_root() / "training-precision.json"


def _key(config: TrainConfig, device: torch.device, share: int) -> str:
    """What decides a step's speed: network, step shape, device, threads, torch."""
    machine = processor_name(device)
    options = json.dumps(config.model_options, sort_keys=True)
    return (
        f"{config.model}{options}/x{config.scale}/c{config.channels}"
        f"/{share}x{config.patch_size}/{'phases' if config.unshuffled_targets else 'image'}"
        f"/{device.type}:{machine}/t{torch.get_num_threads()}/torch {torch.__version__}"
    )


def choose_training_precision(
    config: TrainConfig,
    device: str | torch.device,
    timer: StepTimer,
    *,
    share: int | None = None,
    cache_file: Path | None = None,
) -> str:
    """``"bfloat16"`` or ``"float32"`` for a run of ``config`` on ``device`` (see the module
    docstring); ``share`` is one process's part of the batch (default all of it).

    ``timer(config, precision)`` times one training step (``subpixel.training.loop`` times
    the run's own network); it is called only on a device with native bfloat16 and when
    ``cache_file`` (default :func:`default_cache_file`) holds no choice for the run's shape.
    """
    device = torch.device(device)
    if not native_bfloat16(device):
        return "float32"
    share = share or config.batch_size
    path = cache_file or default_cache_file()
    key = _key(config, device, share)
    entry = read_json_cache(path).get(key)
    if isinstance(entry, dict) and entry.get("precision") in ("float32", "bfloat16"):
        return str(entry["precision"])
    samples: dict[str, list[float]] = {"float32": [], "bfloat16": []}
    for _ in range(_ROUNDS):
        for precision, times in samples.items():
            times.append(timer(config, precision))
    fastest = {precision: min(times) for precision, times in samples.items()}
    speedup = fastest["float32"] / fastest["bfloat16"]
    choice = "bfloat16" if speedup >= BFLOAT16_PAYS else "float32"
    cache = read_json_cache(path)
    cache[key] = {
        "precision": choice,
        "step_ms": {p: round(s * 1e3, 3) for p, s in fastest.items()},
        "speedup": round(speedup, 3),
    }
    write_cache(path, json.dumps(cache, indent=1, sort_keys=True).encode())
    return choice
