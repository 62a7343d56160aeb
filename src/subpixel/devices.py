"""Which device a network runs on: a name checked against what this machine has.

``resolve_device`` turns ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` into a
``torch.device`` that exists here, or raises ``DeviceError`` saying why not, before any file is
read or written: a CPU build of torch asked for CUDA fails in one clear line, not deep inside
a weights loader or after a run folder was made.

Example:
    >>> resolve_device("cpu")
    device(type='cpu')
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Iterator
from pathlib import Path

import torch

from subpixel.errors import DeviceError

__all__ = ["DEVICE_NAMES", "DeviceError", "processor_name", "resolve_device", "tf32"]

#: The names ``resolve_device`` takes, as shown to users.
DEVICE_NAMES = "auto, cpu, cuda, cuda:N or mps"


def _cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str | torch.device) -> torch.device:
    """The ``torch.device`` for ``name``, checked to exist on this machine.

    ``"auto"`` is the first CUDA device when there is one, else the CPU. ``"cuda"`` means
    ``cuda:0``'s device type (torch's current CUDA device); ``"cuda:N"`` must be below the
    number of CUDA devices.

    Raises:
        DeviceError: an unknown name, or a device this machine (or this build of torch)
            does not have. The message starts with the name given.

    Example:
        >>> resolve_device("auto").type in ("cpu", "cuda")
        True
    """
    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if _cuda_count() else "cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps") or text.endswith(":"):
        raise DeviceError(f"{name}: unknown device; choose {DEVICE_NAMES}")
    if device.type == "cpu":
        return torch.device("cpu")  # "cpu:0" and "cpu" are one device
    if device.type == "mps":
        if not _mps_available():
            raise DeviceError(f"{name}: no MPS device is available (Apple silicon with macOS only)")
        return device
    count = _cuda_count()
    if count == 0:
        if torch.version.cuda is None and torch.version.hip is None:
            reason = f"torch {torch.__version__} is a CPU build"
        else:
            reason = f"torch {torch.__version__} found no GPU or no working driver"
        raise DeviceError(f"{name}: no CUDA device is available ({reason})")
    if device.index is not None and device.index >= count:
        have = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
        raise DeviceError(f"{name}: no such CUDA device; this machine has {have}")
    return device


def processor_name(device: str | torch.device = "cpu") -> str:
    """What computes on ``device``, for records, caches and benchmark headers: the GPU's
    name on CUDA; otherwise the CPU's model name from ``/proc/cpuinfo`` with its family and
    model numbers (a hypervisor may show only "AMD EPYC": the numbers tell the generation),
    or what ``platform`` says where that file is missing."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if not key.strip():  # the first processor ends here
            break
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields:
        name += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    return name


@contextlib.contextmanager
def tf32(allowed: bool) -> Iterator[None]:
    """Allow (or forbid) TF32 in CUDA matrix products and cuDNN convolutions for a block.

    Sets ``torch.backends.cuda.matmul.allow_tf32`` and ``torch.backends.cudnn.allow_tf32``
    and restores both on the way out. TF32 is 2-3 times faster for float32 convolutions on
    Ampere and later GPUs, with a 10-bit mantissa (relative error about 1e-3). No effect
    on the CPU.
    """
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allowed
    torch.backends.cudnn.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn
