"""What building an ONNX Runtime or OpenVINO engine costs a process, kept: the network
exported to ONNX (``subpixel.export.onnx_bytes``), remembered in the process by a hash of the
weights and, given a cache folder, in ``onnx/`` (by a hash of the weights and the exporter),
beside OpenVINO's compiled models (``openvino/<precision>/``, its ``CACHE_DIR``). A later
process then makes the remembered engine without exporting or compiling (OpenVINO, ESPCN x3:
130-220 ms on the 2-core test machine, against seconds). Either folder may be deleted at any
time; a cache that cannot be written is only logged.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import logging
import os
from pathlib import Path

import torch
from torch import nn

from subpixel.engines.base import _network_kind
from subpixel.files import write_cache

logger = logging.getLogger(__name__)

_EXPORTS: dict[str, bytes] = {}  # weights digest -> ONNX bytes, the last few exports
_EXPORTS_KEPT = 8


@functools.cache
def _exporter_digest() -> bytes:
    """What an export depends on besides the network: the exporter's versions and the
    source of subpixel's modules that make the graph (export, layers, models)."""
    digest = hashlib.sha256(f"torch {torch.__version__}".encode())
    for package in ("onnx", "onnxscript"):  # by their metadata: importing them takes seconds
        try:
            digest.update(f"{package} {importlib.metadata.version(package)}".encode())
        except importlib.metadata.PackageNotFoundError:
            digest.update(f"{package} none".encode())
    package_root = Path(__file__).parents[1]  # src/subpixel
    sources = [package_root / "export.py", package_root / "layers.py"]
    for source in sorted([*sources, *(package_root / "models").glob("*.py")]):
        with contextlib.suppress(OSError):
            digest.update(source.name.encode() + source.read_bytes())
    return digest.digest()


def _exported(model: nn.Module, cache_dir: Path | None = None) -> bytes:
    """``export.onnx_bytes(model)``, remembered by the model's class, card and weights.

    An export takes a second or two; ``"auto"`` and a benchmark ask for the same network
    several times. The key hashes every parameter and buffer, so a model whose weights
    changed since (a training run evaluating as it goes) is exported again. Given
    ``cache_dir``, the export is also kept in ``cache_dir/onnx/<key>.onnx`` for later
    processes (the key also covers the exporter's versions and subpixel's export code).
    """
    digest = hashlib.sha256(_network_kind(model).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    key = digest.hexdigest()
    stored = None
    if cache_dir is not None:
        digest.update(_exporter_digest())
        stored = cache_dir / "onnx" / f"{digest.hexdigest()[:32]}.onnx"
    data = _EXPORTS.get(key)
    if data is None and stored is not None:
        data = _read_bytes(stored)
    if data is None:
        from subpixel.export import onnx_bytes

        data = onnx_bytes(model)
    if stored is not None and not stored.exists():
        write_cache(stored, data)
    if key not in _EXPORTS:
        while len(_EXPORTS) >= _EXPORTS_KEPT:
            del _EXPORTS[next(iter(_EXPORTS))]
        _EXPORTS[key] = data
    return data


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes() or None
    except OSError:  # not there yet, or unreadable: made again
        return None


def _writable_folder(root: Path | None, *parts: str) -> Path | None:
    """``root/parts...``, made if need be, or ``None`` when there is no root or it cannot be
    written (a read-only cache must not stop an engine)."""
    if root is None:
        return None
    folder = root.joinpath(*parts)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        logger.warning("could not make the cache folder %s: %s", folder, error)
        return None
    return folder if os.access(folder, os.W_OK) else None
