"""ONNX export with dynamic batch, height and width, the model card inside the file.

The exported graph takes ``lr`` (B, C, H, W) float32 and returns ``sr`` (B, C, rH, rW) for
any B, H and W, whatever size the export traced; the weights are embedded (one file) and the
model card is stored as JSON in the ONNX ``metadata_props`` under ``subpixel.card``, as in
the safetensors weights files.

We use torch's ``torch.export``-based exporter (``dynamo=True``, the default since torch
2.9; it needs the ``onnxscript`` package): the output size is a symbolic expression of the
input's (``3*height``), and the graph of a network is just its layers (Conv, PRelu,
ConvTranspose, DepthToSpace, Tanh). The legacy TorchScript exporter also gives dynamic
sizes here but is deprecated.

``Bicubic`` (the model, and the upscaling inside SRCNN) computes its gather indices from the
input size in numpy, which an exporter can only freeze at the traced size. At an integer
scale MATLAB bicubic is periodic, though: LR pixel q's r output phases each take the same
4 weights from rows q-2 .. q+2, with indices clamped at the borders. So for export it is
rewritten as edge padding by 2, a depthwise 5x5 convolution with C r^2 outputs (the outer
products of the row and column phase weights) and a depth-to-space shuffle; equal to
``Bicubic`` up to float rounding (a test holds it to 1e-6).

Example:
    >>> from subpixel import models
    >>> from subpixel.export import export_onnx, read_card
    >>> path = export_onnx(models.build("espcn", scale=3), "espcn_x3.onnx")  # doctest: +SKIP
    >>> read_card(path).architecture  # doctest: +SKIP
    'espcn'
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import warnings
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from subpixel.errors import ModelError, SubpixelError
from subpixel.files import atomic_write
from subpixel.models import SRNetwork
from subpixel.weights import CARD_KEY, ModelCard, card_of

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAME",
    "TRACE_SIZE",
    "ExportError",
    "export_onnx",
    "onnx_bytes",
    "read_card",
]

INPUT_NAME = "lr"
OUTPUT_NAME = "sr"
TRACE_SIZE = (2, 13, 17)  # (B, H, W)
_MIN_OPSET = 17  # below 18 the exporter converts down from 18 through the onnx C API


class ExportError(SubpixelError):
    """A network cannot be exported, or a file is not a subpixel ONNX model."""


# --------------------------------------------------------------------------- #
# Networks in their exportable form
# --------------------------------------------------------------------------- #


def _exportable(model: nn.Module) -> nn.Module:
    """A float32 CPU copy of ``model`` in eval mode, every network in it in its ONNX form."""
    return _onnx_form(copy.deepcopy(model).float().cpu().eval())


def _onnx_form(module: nn.Module) -> nn.Module:
    """``module`` with itself or each network inside it replaced by its ``onnx_form()``."""
    if isinstance(module, SRNetwork):
        form = module.onnx_form()
        if form is not module:
            return form
    for name, child in list(module.named_children()):
        setattr(module, name, _onnx_form(child))
    return module


# --------------------------------------------------------------------------- #
# Export
# --------------------------------------------------------------------------- #


def _card_for(model: nn.Module) -> ModelCard:
    """The card attached to ``model``, or one describing a bare network by its class."""
    try:
        return card_of(model)
    except ModelError as error:
        raise ExportError(
            f"cannot describe a {type(model).__name__} for the ONNX metadata: "
            "attach a card (subpixel.weights.describe) or pass card="
        ) from error


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's chatter (deprecations, missing torchvision ops, opset notes).

    Library code never prints; real failures still raise.
    """
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _require_onnx() -> Any:
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch's exporter imports it; fail early and clearly)
    except ImportError as error:
        raise ExportError(
            f"ONNX export needs the onnx and onnxscript packages ({error.name} is missing): "
            "pip install 'subpixel[onnx]'"
        ) from error
    return onnx


def onnx_bytes(
    model: nn.Module,
    *,
    opset: int = 18,
    dynamic: bool = True,
    card: ModelCard | None = None,
    trace_size: tuple[int, int, int] = TRACE_SIZE,
) -> bytes:
    """The serialized ONNX model of ``model``; see :func:`export_onnx`."""
    if opset < _MIN_OPSET:
        raise ExportError(f"opset must be >= {_MIN_OPSET}, got {opset}")
    card = card or _card_for(model)
    onnx = _require_onnx()
    net = _exportable(model)
    batch, height, width = trace_size
    # Random, not zeros, and from a private generator (the caller's RNG state is untouched).
    generator = torch.Generator().manual_seed(0)
    example = torch.rand(batch, card.channels, height, width, generator=generator)
    dynamic_shapes = None
    if dynamic:
        dims = [torch.export.Dim(n, min=1) for n in ("batch", "height", "width")]
        dynamic_shapes = ({0: dims[0], 2: dims[1], 3: dims[2]},)
    try:
        with _quiet_exporter():
            program = torch.onnx.export(
                net,
                (example,),
                None,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=opset,
                dynamo=True,
                dynamic_shapes=dynamic_shapes,
                external_data=False,
                verbose=False,
            )
    except Exception as error:  # the exporter raises many kinds; re-raised with the cause
        reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise ExportError(f"cannot export {type(model).__name__} to ONNX: {reason}") from error
    if program is None:  # only when given a file name; typed Optional by torch
        raise ExportError("the ONNX exporter returned no program")
    proto = program.model_proto
    written = {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")}
    if written != {opset}:
        raise ExportError(f"asked for opset {opset}, the exporter wrote {sorted(written)}")
    entry = proto.metadata_props.add()
    entry.key, entry.value = CARD_KEY, json.dumps(asdict(card), sort_keys=True)
    onnx.checker.check_model(proto)
    data: bytes = proto.SerializeToString()
    return data


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    opset: int = 18,
    dynamic: bool = True,
    card: ModelCard | None = None,
    trace_size: tuple[int, int, int] = TRACE_SIZE,
) -> Path:
    """Export ``model`` to one ONNX file (weights embedded, model card in the metadata).

    The graph's input is ``lr`` (B, C, H, W) float32 and its output ``sr`` (B, C, rH, rW).
    The file is written to a temporary name beside ``path`` and renamed, so a failed export
    never leaves a partial file or replaces an existing one; missing folders above ``path``
    are created (as ``subpixel upscale`` does for its outputs).

    Args:
        model: a network (espcn, espcn-7, fsrcnn, fsrcnn-s in either form, srcnn, srcnn-915,
            bicubic); exported as a float32 CPU copy, the model itself is not changed.
        path: the ``.onnx`` file to write.
        opset: the ONNX opset (18 or newer is native; 17 is converted down from 18).
        dynamic: dynamic batch, height and width; ``False`` fixes them to ``trace_size``.
        card: the model card to store; default: the model's own (``model.card``), else
            one describing the bare network.
        trace_size: (B, H, W) of the input the exporter traces. The default is odd and
            non-square with a batch of 2, so nothing can specialise on a square or a batch
            of one; with ``dynamic`` the sizes stay symbolic whatever it is.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ExportError: onnx/onnxscript missing, a network the exporter cannot handle, a
            model without a card whose class is not one of subpixel's networks, or a path
            that cannot be written (the message names it and says why).

    Example:
        >>> from subpixel import models
        >>> export_onnx(models.build("fsrcnn", scale=2), "fsrcnn_x2.onnx")  # doctest: +SKIP
        PosixPath('fsrcnn_x2.onnx')
    """
    path = Path(path)
    data = onnx_bytes(model, opset=opset, dynamic=dynamic, card=card, trace_size=trace_size)
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError as error:  # a file where the folder should be
        raise ExportError(f"cannot write {path}: {folder} is not a folder") from error
    except OSError as error:
        raise ExportError(f"cannot create the folder {folder}: {error.strerror}") from error
    try:
        atomic_write(path, lambda temporary: temporary.write_bytes(data), fsync=True)
    except OSError as error:
        raise ExportError(f"cannot write {path}: {error.strerror or error}") from error
    return path


def _describe(source: str | Path | bytes) -> str:
    return f"{len(source)} bytes" if isinstance(source, bytes) else str(source)


def read_card(source: str | Path | bytes) -> ModelCard:
    """The model card stored in an ONNX file (or its bytes) by :func:`export_onnx`.

    Raises:
        ExportError: not an ONNX model, or one without a subpixel card.
    """
    onnx = _require_onnx()
    try:
        if isinstance(source, bytes):
            proto = onnx.load_from_string(source)
        else:
            proto = onnx.load(str(source), load_external_data=False)
    except Exception as error:  # OSError, protobuf's DecodeError, ...; re-raised with the cause
        raise ExportError(f"cannot read an ONNX model from {_describe(source)}: {error}") from error
    metadata = {entry.key: entry.value for entry in proto.metadata_props}
    if CARD_KEY not in metadata:
        raise ExportError(f"ONNX model has no {CARD_KEY} metadata: {_describe(source)}")
    try:
        return ModelCard.from_json(metadata[CARD_KEY])
    except (ValueError, TypeError) as error:
        raise ExportError(f"bad model card in ONNX metadata: {error}") from error
