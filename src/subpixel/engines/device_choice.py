"""Choosing how a model on a GPU runs: which of its equal forms, in which memory layout.

On a GPU the engine is always eager torch on the device (ONNX Runtime and OpenVINO are CPU
engines here), but what it runs still matters: FSRCNN's transposed convolution in half
precision ran 2-3 times slower than in float32 on an H200, where its exact sub-pixel form
(``models.fsrcnn_to_subpixel``) is a plain convolution; and cuDNN's kernels prefer one
layout or the other by network and precision. So each form of the network
(``SRNetwork.fast_form``) runs in both layouts (``DEVICE_ENGINES``) on a batch of
``DEVICE_CALIBRATION_BATCH`` random frames already on the device, the calls interleaved and
each timed to the device's synchronisation; the fastest is kept. That is a few calls of
each candidate, a small cost beside loading a model, so the choice is remembered for the
process only (the CPU's choices, which take seconds, go to a cache file).

No tile probe here: on a GPU the image pipeline runs a whole image on the device whatever
tile size is asked for (``subpixel.upscaler``), so a caller's tiles do not change the
output. Only an image too big for half the device's free memory is tiled, through the host
pipeline; whether cuDNN's kernels give its tiles the whole's bits is not probed.

Example:
    >>> from subpixel import models
    >>> forms = {"": models.build("espcn", scale=2)}
    >>> choice, engine, milliseconds = choose_on_device(forms, "float32", 1, size=16, runs=1)
    >>> choice in milliseconds and engine.name in DEVICE_ENGINES
    True
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import torch
from torch import nn

from subpixel.engines.torch_engine import TorchEngine

__all__ = ["DEVICE_CALIBRATION_BATCH", "DEVICE_ENGINES", "choose_on_device", "fastest_calls"]

#: The engines a model on a GPU is timed in: eager torch in the model's layout and in
#: channels-last.
DEVICE_ENGINES = ("torch", "torch-channels-last")
#: Frames per calibration call on a GPU: a GPU's ranking at one small frame is that of its
#: launch overheads; at a batch it is that of the arithmetic, as in batched video.
DEVICE_CALIBRATION_BATCH = 8


def fastest_calls(
    calls: Mapping[str, Callable[[], object]],
    runs: int,
    *,
    synchronize: Callable[[], None] | None = None,
) -> dict[str, float]:
    """The fastest of ``runs`` timed calls of each, in milliseconds, after one warm-up each.

    The rounds interleave the calls (one of each per round), and each keeps its fastest:
    another job on the machine only ever adds time. ``synchronize`` waits for queued device
    work, before a clock starts and before it stops.
    """
    wait = synchronize or (lambda: None)
    for call in calls.values():
        call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(runs):
        for name, call in calls.items():
            wait()
            start = time.perf_counter()
            call()
            wait()
            samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: min(times) for name, times in samples.items()}


def choose_on_device(
    forms: Mapping[str, nn.Module],
    precision: str,
    channels: int,
    *,
    size: int,
    runs: int,
) -> tuple[str, TorchEngine, dict[str, float]]:
    """Time every form of a network in each of ``DEVICE_ENGINES`` where its weights are.

    Args:
        forms: the network's equal forms by suffix (``""`` for the model as loaded,
            ``"+subpixel"`` for FSRCNN's sub-pixel form), all on one device.
        precision: ``"float32"``, ``"bfloat16"`` or ``"mixed"``.
        channels: the networks' input channels.
        size: side of the square random frames.
        runs: timed rounds.

    Returns:
        The fastest candidate's name (``"torch-channels-last+subpixel"``), its engine, and
        every candidate's milliseconds per batch.
    """
    engines: dict[str, TorchEngine] = {}
    for form, network in forms.items():
        for name in DEVICE_ENGINES:
            engine = TorchEngine(
                network, channels_last=name == "torch-channels-last", precision=precision
            )
            if network is not forms[""]:
                engine.form = "sub-pixel"
            engines[name + form] = engine
    device = next(iter(engines.values())).device
    frames = torch.rand(
        (DEVICE_CALIBRATION_BATCH, channels, size, size),
        generator=torch.Generator().manual_seed(0),
    ).to(device)

    def call(engine: TorchEngine) -> Callable[[], object]:
        return lambda: engine.run_tensor(frames)

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    calls = {name: call(engine) for name, engine in engines.items()}
    milliseconds = fastest_calls(calls, runs, synchronize=synchronize)
    choice = min(milliseconds, key=milliseconds.__getitem__)
    return choice, engines[choice], milliseconds
