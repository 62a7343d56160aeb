"""Limits that more than one part of subpixel enforces, defined once."""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = [
    "DEFAULT_TILE_WORK",
    "MAX_SCALE",
    "MEMORY_SHARE",
    "device_memory_budget",
    "memory_budget",
    "resident_memory",
]

#: The largest total scale accepted (``upscale_image``, ``--scale``, bicubic models); beyond
#: it almost all of the output is interpolation.
MAX_SCALE = 16

#: The share of the memory available when a call starts that an image may take by default.
MEMORY_SHARE = 0.5

#: The most memory the network's work on one tile takes by default (1 GiB): a tile of about
#: 1000x1000 LR pixels, whose halo costs 2-3% more arithmetic than the whole image; bigger
#: tiles save no time, only hold more memory.
DEFAULT_TILE_WORK = 2**30


def memory_budget() -> int | None:
    """Bytes an upscale may use by default: ``MEMORY_SHARE`` of ``MemAvailable`` (Linux's
    estimate of what can be allocated without swapping), or None where it cannot be read."""
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            return int(int(line.split()[1]) * 1024 * MEMORY_SHARE)
    return None


def device_memory_budget(device: torch.device) -> int | None:
    """Bytes a batch on a GPU may use: ``MEMORY_SHARE`` of what is free on the device now
    (``torch.cuda.mem_get_info``; torch's own cached blocks counted as free), or None for
    the CPU and devices that cannot say (their memory is the host's: ``memory_budget``)."""
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int((free + cached) * MEMORY_SHARE)


def resident_memory() -> int | None:
    """Bytes of this process resident in memory now (Linux's ``/proc/self/statm``), or None
    where it cannot be read."""
    try:
        fields = Path("/proc/self/statm").read_text().split()
    except OSError:
        return None
    return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")
