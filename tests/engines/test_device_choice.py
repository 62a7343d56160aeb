"""The engine of a model on a GPU (subpixel.engines.device_choice and auto's GPU branch).

No test may need a GPU: the choice's code runs here on CPU tensors, with ``auto._on_gpu``
patched where the branch is taken by device. What a GPU adds (its timings, synchronisation)
is the same code with ``torch.cuda.synchronize`` between the clocks.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import subpixel
from subpixel.devices import tf32
from subpixel.engines import TorchEngine, auto, clear_engine_cache, device_choice, make_engine
from subpixel.engines.auto import auto_choice
from subpixel.engines.device_choice import DEVICE_ENGINES, choose_on_device, fastest_calls

SUBPIXEL = "+subpixel"


def _fsrcnn() -> nn.Module:
    return subpixel.load_model("fsrcnn", scale=3).network


def test_fastest_calls_interleaves_the_calls_and_keeps_each_ones_fastest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A scripted clock: each call advances it by its next duration (ms; the first is the
    # warm-up, not timed).
    now = [0.0]
    monkeypatch.setattr(device_choice.time, "perf_counter", lambda: now[0])
    durations = {"a": iter([9.0, 4.0, 1.0, 3.0]), "b": iter([9.0, 2.0, 2.5, 2.0])}
    order: list[str] = []
    waits: list[str] = []

    def call(name: str) -> None:
        order.append(name)
        now[0] += next(durations[name]) / 1e3

    milliseconds = fastest_calls(
        {"a": lambda: call("a"), "b": lambda: call("b")},
        3,
        synchronize=lambda: waits.append(order[-1]),
    )
    assert order == ["a", "b"] + ["a", "b"] * 3  # one warm-up each, then rounds
    assert len(waits) == 2 * 6  # before and after every timed call
    assert milliseconds == pytest.approx({"a": 1.0, "b": 2.0})


def test_each_form_runs_in_each_layout_and_the_fastest_is_kept() -> None:
    network = _fsrcnn()
    forms = auto._forms(network)
    choice, engine, milliseconds = choose_on_device(forms, "float32", 1, size=24, runs=1)
    assert set(milliseconds) == {name + form for form in ("", SUBPIXEL) for name in DEVICE_ENGINES}
    assert milliseconds[choice] == min(milliseconds.values())
    assert engine.name == choice.removesuffix(SUBPIXEL)
    assert engine.form == ("sub-pixel" if choice.endswith(SUBPIXEL) else "")
    lr = torch.rand((2, 1, 13, 17), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = network(lr)
    torch.testing.assert_close(engine.run_tensor(lr), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("fastest", ["torch", "torch-channels-last+subpixel"])
def test_a_model_on_a_gpu_runs_the_form_and_layout_timed_fastest(
    monkeypatch: pytest.MonkeyPatch, fastest: str
) -> None:
    # auto's GPU branch with scripted timings: the choice follows them, is remembered for the
    # process (no second calibration), is what auto_choice names, and that name builds the
    # same engine; no CPU engine (ONNX Runtime, OpenVINO) is among the candidates.
    network = _fsrcnn()
    calibrations: list[set[str]] = []

    def scripted(calls: dict[str, object], runs: int, **_: object) -> dict[str, float]:
        calibrations.append(set(calls))
        return {name: (1.0 if name == fastest else 2.0) for name in calls}

    monkeypatch.setattr(auto, "_on_gpu", lambda model: True)
    monkeypatch.setattr(device_choice, "fastest_calls", scripted)
    clear_engine_cache()
    try:
        engine = make_engine(network, "auto", precision="float32")
        assert isinstance(engine, TorchEngine)
        assert engine.name == fastest.removesuffix(SUBPIXEL)
        assert engine.form == ("sub-pixel" if fastest.endswith(SUBPIXEL) else "")
        assert auto_choice(network, "float32") == fastest
        again = make_engine(network, "auto", precision="float32")
        assert (again.name, again.form) == (engine.name, engine.form)
        assert calibrations == [{n + f for f in ("", SUBPIXEL) for n in DEVICE_ENGINES}]
        named = make_engine(network, fastest, precision="float32")
        lr = np.random.default_rng(2).random((1, 1, 11, 9), dtype=np.float32)
        np.testing.assert_allclose(named(lr), engine(lr), rtol=0, atol=1e-5)
    finally:
        clear_engine_cache()


def test_the_engines_numpy_call_is_plain_float32_whatever_the_flags() -> None:
    # The host pipeline's call of a GPU network must not run TF32 (10-bit mantissas) because
    # the process allows it; run_tensor leaves the flags to its caller (the device pipeline's
    # allow_tf32).
    seen: list[bool] = []

    class Spy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 1)
            self.shuffle = nn.PixelShuffle(2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32)
            return self.shuffle(self.conv(x))

    engine = TorchEngine(Spy())
    lr = np.zeros((1, 1, 4, 4), np.float32)
    with tf32(True):
        engine(lr)
        engine.run_tensor(torch.from_numpy(lr))
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    assert seen == [False, True]
