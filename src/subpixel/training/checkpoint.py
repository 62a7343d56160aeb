"""Training checkpoints as safetensors: model, optimizer, weight-average and RNG tensors; the
rest as JSON.

Nothing is pickled. A checkpoint is written to a temporary file and renamed, so a run killed
while writing still has its previous checkpoint intact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, safe_open, save
from torch import nn

from subpixel.files import atomic_write

STATE_KEY = "subpixel.training"


@dataclass(frozen=True)
class TrainingState:
    """What a run needs besides tensors to continue exactly where it stopped."""

    iteration: int
    schedule: dict[str, Any]
    best_psnr: float | None
    best_iteration: int | None
    seconds: float


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _tensors(prefix: str, model: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def _loaded(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    start = f"{prefix}."
    return {k.removeprefix(start): v for k, v in tensors.items() if k.startswith(start)}


def save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainingState,
    average: nn.Module | None = None,
) -> None:
    """Write model, optimizer, RNG state, ``state`` and the weight average (if any; the
    network of a ``WeightAverage``) to ``path`` atomically."""
    tensors = _tensors("model", model)
    if average is not None:
        tensors.update(_tensors("average", average))
    optimizer_tensors, optimizer_meta = _optimizer_tensors(optimizer)
    tensors.update(optimizer_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    metadata = {
        STATE_KEY: json.dumps(state.__dict__),
        "optimizer": json.dumps(optimizer_meta),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    # As bytes: safetensors' save_file replaces the file it is given with one of mode 0o600.
    data = save(tensors, metadata)
    atomic_write(path, lambda temporary: temporary.write_bytes(data), fsync=True)


def _lay_out_like_parameters(optimizer: torch.optim.Optimizer) -> None:
    """Give each parameter's state tensors (Adam's moments) its memory layout. A checkpoint
    holds them contiguous; a channels-last parameter (FSRCNN on CPU) needs channels-last
    moments, since the fused Adam kernel walks a parameter and its moments in memory order
    and would pair each value with another position's moments."""
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            values = optimizer.state.get(parameter, {})
            for name, value in values.items():
                mismatched = (
                    isinstance(value, torch.Tensor) and value.stride() != parameter.stride()
                )
                if mismatched and value.shape == parameter.shape:
                    values[name] = torch.empty_like(parameter, dtype=value.dtype).copy_(value)


def load_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    average: nn.Module | None = None,
) -> TrainingState:
    """Restore model, optimizer, RNG state and the weight average (when ``average`` is given)
    from ``path``; return the training state."""
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    model.load_state_dict(_loaded("model", tensors))
    if average is not None:
        average.load_state_dict(_loaded("average", tensors))
    optimizer_meta = json.loads(metadata["optimizer"])
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, values in optimizer_meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": optimizer_meta["param_groups"]})
    _lay_out_like_parameters(optimizer)
    torch.set_rng_state(tensors["rng.torch"])
    return TrainingState(**json.loads(metadata[STATE_KEY]))
