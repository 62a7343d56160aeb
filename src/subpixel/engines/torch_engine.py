"""The PyTorch engines: ``torch`` (eager, as the model is), ``torch-channels-last`` (eager on a
channels-last copy, oneDNN's preferred layout on CPU), ``torch-native`` (eager with oneDNN
off: ATen's own convolution, slower, and on the CPUs measured the same from one input shape
to another where oneDNN's kernels were not) and ``torch-compile``
(``torch.compile`` with inductor's ``freezing``: weights folded into the graph as
constants, convolutions prepacked). The first call of ``torch-compile`` compiles (15 s on 2
cores, a few seconds for each later input shape), so it pays off on video, not on one image.

``precision="bfloat16"`` runs under autocast: convolutions in bfloat16 on CPUs with native
bfloat16 (AVX-512 BF16 or AMX), outputs back in float32; ``"mixed"`` leaves the first
convolution in float32 (``subpixel.precision.first_layer_in_float32``).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np
import torch
from torch import nn

from subpixel.devices import tf32
from subpixel.engines.base import EngineError, _check_input, _check_precision
from subpixel.precision import first_layer_in_float32


class TorchEngine:
    """PyTorch under ``inference_mode`` on the model's own device.

    Args:
        model: the network; it is put in eval mode, and run as is unless ``channels_last``
            or ``compiled``.
        channels_last: run a copy of the model with channels-last weights and input, which
            is faster for eager convolutions on CPU (same outputs, to float rounding).
        compiled: run ``torch.compile(model, options={"freezing": True})``: the weights are
            frozen into the graph when the first call compiles it, so later changes to the
            model are not seen (as with an ONNX export).
        onednn: ``False`` turns oneDNN off for each call (``torch-native``). oneDNN picks
            its convolution kernels by the input's shape, so a tile can differ from the
            whole image in the last bit; ATen's own convolution did not, on 2 Zen 3 and 2
            Intel AMX cores (ESPCN x3 and ECBSR x3, float32), at 2-8 times the time. The
            switch is process-wide, so such a call and the other torch engines' calls in
            other threads wait for each other (``_onednn_gate``).
        precision: ``"float32"``, ``"bfloat16"`` (autocast on the model's device type) or
            ``"mixed"`` (autocast, the first layer left in float32).

    Raises:
        EngineError: an unknown precision; a failed compilation (at the first call).
    """

    form = ""  # "sub-pixel" when "auto" chose FSRCNN in its sub-pixel form

    def __init__(
        self,
        model: nn.Module,
        *,
        channels_last: bool = False,
        compiled: bool = False,
        precision: str = "float32",
        onednn: bool = True,
    ) -> None:
        _check_precision(precision)
        if channels_last:
            model = copy.deepcopy(model).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if precision == "mixed":
            model = first_layer_in_float32(model)
        self.model = model.eval()
        self.channels_last = channels_last
        self.compiled = compiled
        self.precision = precision
        self.onednn = onednn
        first = next(model.parameters(), None)
        self.device = first.device if first is not None else torch.device("cpu")
        # A network in float64 (a reference in a test) runs in float64, as it is.
        self.dtype = torch.float64 if first is not None and first.dtype == torch.float64 else None
        self._run: Any = torch.compile(model, options={"freezing": True}) if compiled else model
        self.name = (
            "torch-compile"
            if compiled
            else "torch-channels-last"
            if channels_last
            else "torch"
            if onednn
            else "torch-native"
        )

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        """(B, C, H, W) float32 array -> (B, C, rH, rW) float32 array. Float32 means float32
        here: TF32 is off for the call on a GPU (``run_tensor`` leaves the flags as the
        caller set them: the device pipeline's ``allow_tf32``)."""
        with tf32(False):
            sr = self.run_tensor(torch.from_numpy(_check_input(lr)))
        return np.ascontiguousarray(sr.cpu().numpy())

    def run_tensor(self, lr: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) float tensor -> (B, C, rH, rW) float32 on the engine's device, with
        no trip through the host (a GPU pipeline keeps its frames where they are)."""
        x = lr.to(self.device, self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        bf16 = self.precision != "float32"
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16),
            _onednn_gate(self.onednn) if self.device.type == "cpu" else nullcontext(),
        ):
            try:
                sr = self._run(x)  # (B, C, rH, rW)
            except Exception as error:  # inductor raises many kinds; re-raised with the cause
                if not self.compiled:
                    raise
                raise EngineError(f"torch.compile failed: {error}") from error
        return sr.float()


class _OneDnnGate:
    """Who may run torch convolutions on the CPU now: calls with oneDNN as the process has it,
    or calls with oneDNN off (``torch-native``), never both at once.

    oneDNN's switch is one flag for the whole process; turned off for one thread's call, it
    would turn off another thread's convolutions midway, and their bytes would change. Calls
    of one kind run together; the first ``torch-native`` call of a group turns oneDNN off and
    the last one puts the switch back as it was. (``torch.backends.mkldnn.flags`` would set
    oneDNN's TF32 flag too, which warns on a build without Intel GPU support.)
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._running = 0
        self._off = False  # the kind of call running: True for oneDNN off
        self._waiting = {False: 0, True: 0}  # calls waiting, by kind
        self._before = True  # the switch before the first oneDNN-off call of the group

    def _may_start(self, off: bool) -> bool:
        """Nothing runs, or calls of this kind run and none of the other kind waits (so
        neither kind keeps the other out for long)."""
        return self._running == 0 or (self._off == off and self._waiting[not off] == 0)

    @contextmanager
    def __call__(self, onednn: bool) -> Iterator[None]:
        switch = torch.backends.mkldnn  # its ``enabled`` is a property of the module
        off = not onednn
        with self._changed:
            self._waiting[off] += 1
            self._changed.wait_for(lambda: self._may_start(off))
            self._waiting[off] -= 1
            if self._running == 0 and off:
                self._before = bool(switch.enabled)
                setattr(switch, "enabled", False)  # noqa: B010 (typed as the property object)
            self._off = off
            self._running += 1
        try:
            yield
        finally:
            with self._changed:
                self._running -= 1
                if self._running == 0 and self._off:
                    setattr(switch, "enabled", self._before)  # noqa: B010
                self._changed.notify_all()


_onednn_gate = _OneDnnGate()
