"""Weights as safetensors files with a model card in the metadata; loading never unpickles.

A file holds the network's state dict and one metadata entry, ``subpixel.card``: a JSON
``ModelCard`` (architecture, config, scale, channels, colour space, degradation, training
record, metrics). ``load_network`` builds the architecture from the card and loads the tensors.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save
from torch import nn

from subpixel import models
from subpixel.devices import resolve_device
from subpixel.errors import ModelError, ScaleError
from subpixel.files import atomic_write
from subpixel.limits import MAX_SCALE
from subpixel.reparam import Collapsible

__all__ = [
    "ModelCard",
    "attached_card",
    "bundled_weights",
    "card_of",
    "load_network",
    "load_weights",
    "save_weights",
]

CARD_KEY = "subpixel.card"
FORMAT_KEY = "format"
FORMAT = "subpixel-weights/1"
COLOUR_SPACES = ("y", "rgb")
_CARD_ATTR = "card"  # the attribute a loaded or described model carries its card in


@dataclass(frozen=True)
class ModelCard:
    """What a network is and how it was made; travels inside every weights file.

    ``colour_space`` says what the network sees: ``"y"`` (BT.601 studio-swing luminance,
    chroma upscaled by bicubic) or ``"rgb"``.
    """

    architecture: str
    scale: int
    channels: int
    colour_space: str = "y"
    config: dict[str, Any] = field(default_factory=dict)
    degradation: str = "matlab-bicubic"
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Keep the JSON form (lists, not tuples), so a card equals itself after a round trip.
        for name in ("config", "training", "metrics"):
            object.__setattr__(self, name, json.loads(json.dumps(getattr(self, name))))
        if self.architecture not in models.BUILDERS:
            raise ValueError(f"unknown architecture {self.architecture!r}")
        if self.colour_space not in COLOUR_SPACES:
            raise ValueError(f"colour_space must be one of {COLOUR_SPACES}")
        expected = 1 if self.colour_space == "y" else 3
        if self.channels != expected:
            raise ValueError(f"{self.colour_space} networks take {expected} channel(s)")

    @property
    def name(self) -> str:
        """The model's name as ``models.BUILDERS`` and bundled files know it: the network it
        was trained as (``training["collapsed_from"]``; for a training form of another
        model, ``models.TRAINING_FORMS``, that model), else ``architecture``."""
        trained_as = self.training.get("collapsed_from")
        if trained_as is None:
            return self.architecture
        return models.TRAINING_FORMS.get(str(trained_as), str(trained_as))

    def build(self) -> nn.Module:
        """A fresh network of this card's architecture and configuration."""
        options = {k: tuple(v) if isinstance(v, list) else v for k, v in self.config.items()}
        return models.build(self.architecture, scale=self.scale, channels=self.channels, **options)

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        raw = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown model-card keys: {sorted(unknown)}")
        return cls(**raw)


def attached_card(model: nn.Module) -> ModelCard | None:
    """The card a loaded or described model carries, or None."""
    card = getattr(model, _CARD_ATTR, None)
    return card if isinstance(card, ModelCard) else None


def card_of(model: nn.Module) -> ModelCard:
    """The card attached to a loaded or described model, or one describing a bare network
    of a known class from its config (ESPCN, FSRCNN, SRCNN, ReparamSR, Bicubic).

    Raises:
        ModelError: a network of another class without a card.
    """
    card = attached_card(model)
    if card is not None:
        return card
    architecture = models.architecture_of(model)
    if architecture is None:
        raise ModelError(
            f"a {type(model).__name__} has no card: attach one with describe() "
            "or load it with subpixel.weights.load_network()"
        )
    return _card_from_config(model, architecture)


def _card_from_config(model: nn.Module, architecture: str, **card_fields: Any) -> ModelCard:
    config = models.settings_of(model)
    scale, channels = config.pop("scale"), config.pop("channels")
    colour_space = card_fields.pop("colour_space", "y" if channels == 1 else "rgb")
    return ModelCard(
        architecture=architecture,
        scale=int(scale),
        channels=int(channels),
        colour_space=colour_space,
        config=config,
        **card_fields,
    )


def describe(model: nn.Module, architecture: str, **card_fields: Any) -> ModelCard:
    """Make a card for ``model`` (built by ``models.build(architecture, ...)``) and attach it."""
    card = _card_from_config(model, architecture, **card_fields)
    setattr(model, _CARD_ATTR, card)
    return card


def save_weights(model: nn.Module, path: str | Path, card: ModelCard | None = None) -> Path:
    """Write ``model``'s weights and card to a safetensors file (atomically).

    A network trained in a re-parameterised form (``models.Collapsible``: ecbsr, sesr) is
    written collapsed, as the ESPCN it equals, so loading it needs nothing of its training
    form; the card's ``training`` records the form it was trained in (``collapsed_from``).
    """
    card = card or card_of(model)
    if isinstance(model, Collapsible):
        model, card = _collapsed(model, card)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {FORMAT_KEY: FORMAT, CARD_KEY: json.dumps(asdict(card), sort_keys=True)}
    path = Path(path)
    # Through a temporary file and a rename: a reader never sees half a file. As bytes:
    # safetensors' save_file replaces the file it is given with one of mode 0o600.
    data = _with_sorted_header(save(state, metadata))
    return atomic_write(path, lambda temporary: temporary.write_bytes(data))


def _with_sorted_header(data: bytes) -> bytes:
    """``data`` (a safetensors file) with its JSON header's keys in sorted order.

    safetensors writes the metadata entries in a hash map's order, which changes from one
    call to the next; sorted, the same network and card always give the same bytes.
    """
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    encoded = text.encode()
    encoded += b" " * (-len(encoded) % 8)  # the tensors start 8-byte aligned, as safetensors'
    return len(encoded).to_bytes(8, "little") + encoded + data[8 + length :]


def _collapsed(model: Collapsible, card: ModelCard) -> tuple[nn.Module, ModelCard]:
    """The plain network ``model`` collapses into, and its card."""
    plain = model.collapse()
    architecture = models.architecture_of(plain)
    if architecture is None:
        raise ModelError(f"cannot write a {type(model).__name__}: it collapses into no network")
    config = models.settings_of(plain)
    if (config.pop("scale"), config.pop("channels")) != (card.scale, card.channels):
        raise ModelError("the card's scale or channels differ from the network's")
    training = {
        **card.training,
        "collapsed_from": card.architecture,
        "collapsed_from_config": card.config,
    }
    card = dataclasses.replace(card, architecture=architecture, config=config, training=training)
    return plain, card


def _read_card(path: Path) -> ModelCard:
    return _read_header(path)[0]


def _read_header(path: Path) -> tuple[ModelCard, dict[str, tuple[int, ...]]]:
    """The card and the tensor shapes by name, from the file's header (no tensor is read)."""
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            names: list[str] = handle.keys()  # safe_open's handle is not iterable
            shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in names}
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelError(f"not a safetensors weights file: {path} ({error})") from error
    if metadata.get(FORMAT_KEY) != FORMAT or CARD_KEY not in metadata:
        raise ModelError(f"not a subpixel weights file (no model card): {path}")
    try:
        return ModelCard.from_json(metadata[CARD_KEY]), shapes
    except (ValueError, TypeError) as error:
        raise ModelError(f"bad model card in {path}: {error}") from error


def _check_against_header(path: Path, card: ModelCard, shapes: dict[str, tuple[int, ...]]) -> None:
    """Refuse a card that does not describe the file's tensors, before anything is allocated.

    A card is only words: ``features=[12000, 12000]`` would cost gigabytes to build. So every
    number in it is first bounded by the file's size (no width, depth or scale can exceed the
    number of values the file holds, nor a list be longer than its tensor count), then the
    network is built on the ``meta`` device (shapes, no memory) and its state dict compared
    with the header, name by name and shape by shape.
    """
    values = sum(math.prod(shape) for shape in shapes.values())
    if values > path.stat().st_size:  # no dtype takes less than a byte a value
        raise ModelError(f"weights file {path} declares {values:,} values in fewer bytes")
    for key, value in [("scale", card.scale), *card.config.items()]:
        numbers = value if isinstance(value, list) else [value]
        too_long = isinstance(value, list) and len(value) > len(shapes)
        too_big = any(type(n) is int and n > values for n in numbers)  # bool is no size
        if too_long or too_big:
            raise ModelError(
                f"weights file {path} does not match its model card: {key}={value} is larger "
                f"than its {len(shapes)} tensors of {values:,} values allow"
            )
    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in card.build().state_dict().items()}
    except (ValueError, KeyError, TypeError, RuntimeError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelError(f"bad model card in {path}: {reason}") from error
    # In the network's order, so the first layer that differs is named.
    missing = [k for k in expected if k not in shapes]
    unexpected = [k for k in shapes if k not in expected]
    wrong = [k for k in expected if k in shapes and expected[k] != shapes[k]]
    if missing or unexpected or wrong:
        if wrong:
            k = wrong[0]
            reason = f"{k} is {list(shapes[k])} in the file, {list(expected[k])} by the card"
        elif missing:
            reason = f"{len(missing)} tensor(s) missing, e.g. {missing[0]}"
        else:
            reason = f"{len(unexpected)} unexpected tensor(s), e.g. {unexpected[0]}"
        raise ModelError(f"weights file {path} does not match its model card: {reason}")


def load_weights(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Build the network a weights file describes and load its tensors (no code runs).

    The card is checked against the tensor shapes in the file's header before anything is
    built or read, and every value must be finite.

    Raises:
        ModelError: a missing or invalid file, a card that does not match the tensors, a
            NaN or infinite value.
        DeviceError: an unknown device, or one this machine does not have.
    """
    device = resolve_device(device)
    path = Path(path)
    card, shapes = _read_header(path)
    _check_against_header(path, card, shapes)
    try:
        state = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelError(f"not a safetensors weights file: {path} ({error})") from error
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ModelError(f"weights file {path} holds NaN or infinite values (in {name})")
    try:
        model = card.build()
        model.load_state_dict(state, strict=True)
    except (ValueError, KeyError, TypeError, RuntimeError) as error:
        reason = str(error).splitlines()[0]
        raise ModelError(f"weights file {path} does not match its model card: {reason}") from error
    setattr(model, _CARD_ATTR, card)
    return model.to(device).eval()


def _single_head(model: nn.Module, scale: int) -> nn.Module:
    """The x``scale`` network of a multi-scale FSRCNN file, with a card for that scale."""
    if not isinstance(model, models.MultiScaleFSRCNN):
        raise ModelError("only multi-scale FSRCNN files hold several scales")
    card = card_of(model)
    single = model.at_scale(scale).eval()
    config = {k: v for k, v in card.config.items() if k != "scales"}
    single_card = dataclasses.replace(card, architecture="fsrcnn", scale=scale, config=config)
    setattr(single, _CARD_ATTR, single_card)
    return single


def bundled_weights() -> dict[tuple[str, int], Path]:
    """The pretrained weights shipped in the package, by (architecture, scale)."""
    found: dict[tuple[str, int], Path] = {}
    folder = resources.files("subpixel") / "weights"
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".safetensors") and "_x" in name:
            architecture, _, scale = name.removesuffix(".safetensors").rpartition("_x")
            if scale.isdigit():
                found[(architecture, int(scale))] = Path(str(entry))
    return found


DEFAULT_MODEL = "ecbsr"
DEFAULT_SCALE = 3
BICUBIC_SCALES = tuple(range(2, MAX_SCALE + 1))


def _weights_path(name_or_path: str | Path) -> Path | None:
    """The weights file ``name_or_path`` gives, or None when it is a model's name.

    A path is a path by its spelling, never by what the working directory holds: a
    ``pathlib.Path``, or a string with a path separator or ending in ``.safetensors``
    (``./espcn``, ``runs/a/best.safetensors``). Any other string is a name: a bundled
    model's or ``"bicubic"``, so a file called ``espcn`` beside the user cannot stand in for
    the bundled ESPCN.
    """
    if isinstance(name_or_path, Path):
        return name_or_path
    separators = {os.sep, os.altsep or os.sep, "/"}
    if name_or_path.endswith(".safetensors") or any(s in name_or_path for s in separators):
        return Path(name_or_path)
    return None


def native_scales(name_or_path: str | Path) -> list[int]:
    """The scales a model name or weights file has networks for (reads only the card)."""
    text = str(name_or_path)
    path = _weights_path(name_or_path)
    if path is not None:
        card = _read_card(path)
        return sorted(card.config.get("scales") or [card.scale])
    scales = sorted(s for (arch, s) in bundled_weights() if arch == text)
    if scales:
        return scales
    if text == "bicubic":
        return list(BICUBIC_SCALES)
    load_network(text)  # raises the right error for an unknown or weightless name
    return []


def choose_native_scale(scales: list[int], requested: float) -> int:
    """The network scale for a requested total factor: that scale itself if there is one,
    else the largest below it (bicubic enlarges the rest), else the smallest above it
    (bicubic reduces; antialiased)."""
    if not scales:
        raise ScaleError("the model has no scales")
    if requested in scales:
        return int(requested)
    below = [s for s in scales if s < requested]
    return max(below) if below else min(scales)


def network_scale(name_or_path: str | Path, scale: float | None = None) -> int:
    """The scale of the network to load for a total factor ``scale`` (None: the default,
    ``DEFAULT_SCALE``): ``choose_native_scale`` among the model's ``native_scales``.

    Raises:
        ScaleError: ``scale`` is not above 1 and at most ``MAX_SCALE`` (the message starts
            with "scale").
        ModelError: an unknown name, or a missing or invalid weights file.
    """
    if scale is not None and not 1 < scale <= MAX_SCALE:
        raise ScaleError(f"scale must be above 1 and at most {MAX_SCALE}, got {scale:g}")
    return choose_native_scale(native_scales(name_or_path), scale or DEFAULT_SCALE)


def load_network(
    name_or_path: str | Path = DEFAULT_MODEL,
    scale: int | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """The network (eval mode, card attached as ``.card``) of a bundled name or weights file:
    what training, export and ``subpixel.load_model`` (the ready ``Upscaler``) start from.

    Args:
        name_or_path: a weights file, a bundled model's name (``subpixel models`` lists
            them) or ``"bicubic"``. A file is given as a path: a ``pathlib.Path``, or a
            string with a separator or a ``.safetensors`` suffix (``./espcn``); any other
            string is a name, whatever files the working directory holds.
        scale: the upscaling factor; for a file it must match the file's, for a name it picks
            the weights (default: 3, or the one scale bundled).
        device: where the network runs (``subpixel.devices.resolve_device``: ``"auto"``,
            ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or a ``torch.device``).

    Raises:
        ModelError: unknown name, missing or invalid weights file.
        DeviceError: an unknown device, or one this machine does not have.
        ScaleError: a scale the model does not support.

    Example:
        >>> load_network("bicubic", scale=2).card.scale
        2
    """
    device = resolve_device(device)
    text = str(name_or_path)
    path = _weights_path(name_or_path)
    if path is not None:
        model = load_weights(path, device)
        heads = card_of(model).config.get("scales")
        if heads and scale is not None and scale in heads:
            return _single_head(model, scale)
        file_scale = card_of(model).scale
        if scale is not None and scale != file_scale:
            raise ScaleError(f"{text} is a x{file_scale} model; x{scale} was asked for")
        return model
    bundled = bundled_weights()
    scales = sorted(s for (arch, s) in bundled if arch == text)
    if scales:
        chosen = scale or (DEFAULT_SCALE if DEFAULT_SCALE in scales else scales[0])
        if chosen not in scales:
            listed = ", ".join(f"x{s}" for s in scales)
            raise ScaleError(f"model {text!r} has no x{chosen} weights (bundled: {listed})")
        return load_weights(bundled[(text, chosen)], device)
    if text == "bicubic":
        chosen = scale or DEFAULT_SCALE
        if chosen < 2:
            raise ScaleError(f"scale must be an integer >= 2, got {chosen}")
        model = models.build("bicubic", scale=chosen, channels=1)
        describe(model, "bicubic", training={"note": "no learned weights"})
        return model.to(device).eval()
    if text in models.BUILDERS:
        raise ModelError(
            f"no pretrained weights are bundled for {text!r}; "
            "train it (or pass a .safetensors file) — see `subpixel models`"
        )
    example = f"./{text}" if Path(text).exists() else f"./{text}.safetensors"
    raise ModelError(
        f"unknown model {text!r} (no bundled model of that name, see `subpixel models`; "
        f"a weights file is given as a path like {example})"
    )
