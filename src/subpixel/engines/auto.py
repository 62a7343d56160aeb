"""Making an engine by name, and choosing one: ``make_engine``, ``engine_module``.

``make_engine(model, "auto")`` times the candidates (``AUTO_ENGINES``: torch,
torch-channels-last, onnxruntime and openvino, each where installed; in bfloat16 the same,
onnxruntime staying float32) interleaved on a 384x384 input, then keeps the fastest whose
tiles match the whole image bit for bit; for FSRCNN it tries both forms of its last layer,
the transposed convolution and its exact sub-pixel form (``models.fsrcnn_to_subpixel``),
since which is faster depends on the engine (see PERF-NOTES.md). ``torch-compile`` is not
among the candidates: its compile time would dominate a calibration, and in float32 it did
not beat ONNX Runtime here.

Tiled upscaling equals untiled on the default path because of that probe
(``subpixel.engines.tile_probe``): some engines' kernels compute a pixel differently by the
input's shape, so their tiles can differ from the whole by a level at a few pixels along the
seams. The candidates are probed fastest first on a random 192x192 input, tiled at 17, 37
and 97 pixels as ``subpixel.pipeline.tiling.run_tiled`` tiles it; the first whose every tile
interior equals the whole is kept -- unless it is more than ``GRID_GAIN`` times slower than
the fastest: then the fastest is kept and run on a fixed grid of tiles
(``subpixel.engines.grid``, a choice named ``"...+grid"``), where every image is cut into the
same crops however it is tiled, once a second probe has found it repeats itself there. If
nothing is exact either way, the exact fallback (``EXACT_FALLBACKS``: in float32, eager
torch with oneDNN off, ``torch-native``) is timed and probed in its turn; if that too
differs, the fastest is kept and a warning logged. It was made for a base install (torch
alone): there oneDNN's float32 tiles differed from the whole for ESPCN x3 and ECBSR x3 in
both layouts (2 Zen 3 cores; on 2 Intel AMX cores at 15,200-831,534 of the probe's values),
and ``torch-native`` matched at 2-8 times the time; since the grid's probe, channels-last
torch repeats itself on the grid on both machines and runs there. On 2 Zen 4 cores
(2 threads, bfloat16), ECBSR x3 kept OpenVINO (probe 95 ms); for FSRCNN x3 OpenVINO's
sub-pixel form (22 ms a 384x384 call) differed at 3 values and eager torch's sub-pixel form
(57 ms) was kept (probe 537 ms), before the grid. On 2 Intel cores with AMX (bfloat16),
OpenVINO failed the probe for ESPCN x3 (12 ms; ONNX Runtime, the fastest exact, 30 ms) and
its sub-pixel form for FSRCNN x3 (19 ms; 41-92 ms for the others): both now run on the grid.
An engine named by the user is not probed. A model on a GPU runs in eager torch, its forms
and layouts timed on the device (``subpixel.engines.device_choice``).

The choice is remembered per network kind (architecture, FSRCNN's form, scale, channels,
precision) and thread count for the process, and, given ``cache_file``
(``default_cache_file()`` is ``~/.cache/subpixel/engines.json``), on disk: one small JSON
object mapping that kind to the chosen engine, the milliseconds of each candidate, what the
probe found (``tile_exact``: the chosen one matched, on its grid or not, or ``null`` for a
network that cannot be tiled; ``probe_failed``: the faster candidates that did not;
``probe_ms``; ``grid_gain``, the rule it was chosen by), and the core
and thread counts, library versions and input size it was measured with (an entry measured
with others, or written before the probe, is measured again). The same folder keeps the
exports and OpenVINO's compiled models (``subpixel.engines.exports``).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from subpixel.engines.base import (
    ENGINES,
    Engine,
    EngineError,
    _check_precision,
    _cores,
    _network_kind,
)
from subpixel.engines.device_choice import (
    DEVICE_CALIBRATION_BATCH,
    choose_on_device,
    fastest_calls,
)
from subpixel.engines.grid import GRID_SUFFIX, GridEngine
from subpixel.engines.onnxruntime_engine import OnnxRuntimeEngine
from subpixel.engines.openvino_engine import OpenVinoEngine
from subpixel.engines.tile_probe import grid_mismatches, tile_mismatches
from subpixel.engines.torch_engine import TorchEngine
from subpixel.errors import ModelError, SubpixelError
from subpixel.files import read_json_cache, write_cache
from subpixel.models import SUBPIXEL_FORM
from subpixel.paths import cache_root
from subpixel.pipeline.tiling import TilingError
from subpixel.precision import resolve_precision
from subpixel.weights import card_of

logger = logging.getLogger(__name__)

#: The engines ``"auto"`` chooses from, by precision (onnxruntime always runs float32).
AUTO_ENGINES = {
    "float32": ("torch", "torch-channels-last", "onnxruntime", "openvino"),
    "bfloat16": ("torch", "torch-channels-last", "onnxruntime", "openvino"),
    "mixed": ("torch", "torch-channels-last", "onnxruntime", "openvino"),
}
# Square input side for calibration: large enough that the ranking is the one at video
# sizes, small enough to take 1-3 s once per network. Small inputs favour eager torch (its
# per-call overheads are small, its working set fits the caches): at 128x128 it looked
# fastest for FSRCNN and was 2x slower at 640x360; on Zen 5, at 256x256, channels-last
# torch ran FSRCNN x3's sub-pixel form within 10% of OpenVINO and 3.6x slower at 640x360,
# where 384x384 ranks them as 640x360 does.
#: Timed and probed only when no engine of ``AUTO_ENGINES`` is tile-exact, on its own or on
#: the grid: slower, and exact where those were not (``torch_engine.TorchEngine(onednn=...)``).
EXACT_FALLBACKS = {"float32": ("torch-native",)}
CALIBRATION_SIZE = 384
CALIBRATION_RUNS = 5
#: The fastest engine, when its tiles differ from its whole image, runs on the fixed grid
#: of tiles (``subpixel.engines.grid``) rather than giving way to a tile-exact engine this
#: many times slower or more: the grid's margins and calls cost about 1.1 times (1080p).
GRID_GAIN = 1.25


@dataclass(frozen=True)
class Calibration:
    """Milliseconds per call (the fastest of a few) of each candidate, and the fastest.

    Candidates are engine names, with ``"+subpixel"`` for FSRCNN in its sub-pixel form.
    """

    kind: str
    milliseconds: dict[str, float]

    @property
    def fastest(self) -> str:
        return min(self.milliseconds, key=self.milliseconds.__getitem__)

    @property
    def ranked(self) -> list[str]:
        """The candidates, fastest first."""
        return sorted(self.milliseconds, key=self.milliseconds.__getitem__)


@dataclass(frozen=True)
class TileProbe:
    """What the tile probe (``subpixel.engines.tile_probe``) found for a calibration.

    ``choice`` is the fastest candidate whose tiles matched the whole image bit for bit
    (``exact``), or the fastest of all when none did (``exact`` False) or when the network
    has no receptive radius to tile by (``exact`` None, nothing probed). ``failed`` lists
    the candidates probed before it whose tiles differed.
    """

    choice: str
    exact: bool | None
    failed: tuple[str, ...]
    milliseconds: float


_CHOICES: dict[str, str] = {}  # network kind -> candidate name, for this process


def clear_engine_cache() -> None:
    """Forget the engine choices made in this process (the disk cache is left alone)."""
    _CHOICES.clear()


def default_cache_file() -> Path:
    """``$XDG_CACHE_HOME/subpixel/engines.json``, by default ``~/.cache/subpixel/engines.json``."""
    return cache_root() / "engines.json"


def _channels(model: nn.Module) -> int:
    """The channels the network takes, from its card (or its class and config); 1 for a
    network of another class without one."""
    try:
        return card_of(model).channels
    except ModelError:
        return 1


def _versions() -> str:
    """The libraries a choice depends on, by version: from the installed distribution's
    metadata, without importing an engine the choice may not use (a few tenths of a second
    each); by import where the module comes from a distribution of another name
    (onnxruntime-gpu)."""
    versions = [f"torch {torch.__version__}"]
    for package in ("onnxruntime", "openvino"):
        try:
            version = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            try:
                version = importlib.import_module(package).__version__
            except ImportError:
                version = "none"
        versions.append(f"{package} {version}")
    return ", ".join(versions)


def calibrate(
    engines: dict[str, Engine],
    channels: int,
    *,
    kind: str = "",
    size: int = CALIBRATION_SIZE,
    runs: int = CALIBRATION_RUNS,
) -> Calibration:
    """Time each engine on a (1, C, size, size) input: one warm-up call, then ``runs`` rounds.

    The rounds interleave the engines (one call each per round) and each keeps its fastest
    call (``device_choice.fastest_calls``): another job on the machine only ever adds time,
    and a median of a few calls on a busy 2-core machine still picked a 3x slower engine now
    and then.
    """
    lr = np.random.default_rng(0).random((1, channels, size, size), dtype=np.float32)

    def call(engine: Engine) -> Callable[[], object]:
        return lambda: engine(lr)

    return Calibration(kind, fastest_calls({n: call(e) for n, e in engines.items()}, runs))


def _valid_candidate(name: object) -> bool:
    return isinstance(name, str) and _engine_name(name) in ENGINES


def _engine_name(candidate: str) -> str:
    """The engine of ``"name[+subpixel][+grid]"``."""
    return candidate.removesuffix(GRID_SUFFIX).removesuffix(SUBPIXEL_FORM)


def _choice_kind(model: nn.Module, precision: str, threads: int) -> str:
    """The key of a choice: ``{network kind}/{precision}/t{threads}``. The thread count is
    part of it because the ranking changes with it, and one machine runs both ways (one
    process on every core, or several with ``--threads 1``)."""
    return f"{_network_kind(model)}/{precision}/t{threads}"


def _cached_choice(path: Path, kind: str, threads: int | None = None) -> str | None:
    """The choice recorded for ``kind`` if it was measured as things are now, with
    ``threads`` threads (default ``torch.get_num_threads()``), and probed for tiling.
    Entries written before the tile probe (no ``tile_exact``), or before the key held the
    thread count (``.../{precision}``), are measured again."""
    threads = threads or torch.get_num_threads()
    entry = read_json_cache(path).get(kind)
    if (
        isinstance(entry, dict)
        and _valid_candidate(entry.get("engine"))
        and entry.get("cores") == _cores()
        and entry.get("threads") == threads
        and entry.get("versions") == _versions()
        and entry.get("size") == CALIBRATION_SIZE
        and entry.get("tile_exact", "missing") in (True, False, None)
        and entry.get("grid_gain") == GRID_GAIN
        and isinstance(entry.get("probe_failed"), list)
    ):
        return str(entry["engine"])
    return None


def _store_choice(path: Path, calibration: Calibration, probe: TileProbe, threads: int) -> None:
    """Record a choice in the cache file (temp file + rename); failures are only logged.

    An entry of the same kind and thread count written with the older key (no thread count
    in it) is dropped: the new entry replaces it.
    """
    cache = read_json_cache(path)
    older = calibration.kind.removesuffix(f"/t{threads}")
    superseded = cache.get(older) if older != calibration.kind else None
    if isinstance(superseded, dict) and superseded.get("threads") == threads:
        del cache[older]
    cache[calibration.kind] = {
        "engine": probe.choice,
        "milliseconds": {k: round(v, 3) for k, v in calibration.milliseconds.items()},
        "tile_exact": probe.exact,
        "probe_failed": list(probe.failed),
        "probe_ms": round(probe.milliseconds, 1),
        "grid_gain": GRID_GAIN,
        "cores": _cores(),
        "threads": threads,
        "versions": _versions(),
        "size": CALIBRATION_SIZE,
    }
    write_cache(path, json.dumps(cache, indent=1, sort_keys=True).encode())


def _build(
    model: nn.Module, name: str, precision: str, threads: int | None, cache_dir: Path | None
) -> Engine:
    """One engine by name (no ``"auto"``); ``threads`` and ``cache_dir`` reach ONNX Runtime
    and OpenVINO only."""
    if name == "torch":
        return TorchEngine(model, precision=precision)
    if name == "torch-channels-last":
        return TorchEngine(model, channels_last=True, precision=precision)
    if name == "torch-native":
        return TorchEngine(model, onednn=False, precision=precision)
    if name == "torch-compile":
        return TorchEngine(model, compiled=True, precision=precision)
    if name == "onnxruntime":
        if precision != "float32":
            raise EngineError("the onnxruntime engine runs float32 only")
        return OnnxRuntimeEngine(model, threads=threads, cache_dir=cache_dir)
    if name == "openvino":
        return OpenVinoEngine(model, precision=precision, threads=threads, cache_dir=cache_dir)
    choices = ", ".join(("auto", *ENGINES))
    raise EngineError(f"unknown engine {name!r}; choose from {choices}")


def make_engine(
    model: nn.Module,
    name: str = "auto",
    *,
    precision: str = "auto",
    threads: int | None = None,
    cache_file: str | Path | None = None,
) -> Engine:
    """An engine running ``model``: one of ``ENGINES``, or ``"auto"``.

    ``"auto"`` uses the choice remembered for this kind of network (in this process, then
    in ``cache_file`` if given), else times the candidates of ``AUTO_ENGINES`` on a 384x384
    input, interleaved, and keeps the fastest whose tiles matched the whole image bit for bit
    in the tile probe, or the fastest on its fixed grid of tiles (a ``GridEngine``) when that
    one is ``GRID_GAIN`` times slower; if nothing matched, on a grid or not, the fastest
    exact fallback (``EXACT_FALLBACKS``), else the fastest of all with a warning. For FSRCNN
    each candidate also runs in the sub-pixel form of the last layer. Candidates that cannot run
    are left out: onnxruntime or openvino when it is not installed or cannot take the
    network. A model on a GPU runs in eager torch, in the form and memory layout timed
    fastest there (``subpixel.engines.device_choice``), not probed.

    Args:
        model: the network (a ``subpixel`` model, card attached or not).
        name: ``"auto"`` or one of ``ENGINES``; for FSRCNN, with ``"+subpixel"`` for its
            sub-pixel form (as ``auto_choice`` names a choice).
        precision: ``"float32"``; ``"bfloat16"`` for the torch and OpenVINO engines
            (engine ``"auto"`` then also considers onnxruntime in float32); or ``"auto"``:
            ``subpixel.precision.resolve_precision`` (bfloat16 only for weights whose
            recorded loss allows it, on hardware that has it).
        threads: threads for ONNX Runtime or OpenVINO (default: ``torch.get_num_threads()``).
            PyTorch's and OpenCV's are process-wide: ``set_threads``.
        cache_file: a JSON file to read and record ``"auto"`` choices in, for example
            ``default_cache_file()``; ``None`` remembers them for this process only. Its
            folder also keeps the ONNX exports and OpenVINO's compiled models, so that a
            later process building the same engine skips the export (a second or two)
            and the compilation.

    Raises:
        EngineError: an unknown name or precision, onnxruntime asked for and not installed
            or asked for in bfloat16, ``"+subpixel"`` for a network without that form.
        subpixel.export.ExportError: ``"onnxruntime"`` asked for and the network cannot be
            exported.

    Example:
        >>> from subpixel import models
        >>> make_engine(models.build("fsrcnn", scale=3), "torch").name
        'torch'
    """
    if precision == "auto" and _engine_name(name) == "onnxruntime":
        precision = "float32"  # the only arithmetic it has
    precision = resolve_precision(model, precision)
    _check_precision(precision)
    cache = None if cache_file is None else Path(cache_file)
    if name != "auto":
        return _named(model, name, precision, threads, None if cache is None else cache.parent)
    return _auto_engine(model, precision, threads, cache)


def auto_choice(
    model: nn.Module,
    precision: str = "auto",
    *,
    threads: int | None = None,
    cache_file: str | Path | None = None,
) -> str:
    """The candidate ``make_engine(model, "auto", ...)`` runs, by name: an engine of
    ``ENGINES``, with ``"+subpixel"`` for FSRCNN in its sub-pixel form and ``"+grid"`` for
    an engine run on the fixed grid of tiles. The remembered choice, else one measured now
    (and remembered); nothing is built for a remembered one. Keywords as for
    :func:`make_engine`.

    A choice made in one process can be handed to others, so that processes with other
    thread counts, or on other machines of the same kind, run the same engine and write
    the same bytes (a Ray job's actors run their driver's: ``subpixel.pipeline.cluster``):
    :func:`chosen_engine` builds it there (ONNX Runtime, chosen for bfloat16, in float32).
    """
    precision = resolve_precision(model, precision)
    _check_precision(precision)
    if _on_gpu(model):
        return _on_device(model, precision)[0]
    count = threads or torch.get_num_threads()
    cache = None if cache_file is None else Path(cache_file)
    choice = _remembered(model, precision, count, cache)
    if choice is None:
        choice, _ = _measured(model, precision, threads, cache)
    return choice


def chosen_engine(
    model: nn.Module,
    choice: str,
    precision: str,
    *,
    threads: int | None = None,
    cache_file: str | Path | None = None,
) -> Engine:
    """The engine of ``choice``, a candidate ``auto_choice`` chose for ``precision`` (here or
    in another process), built as ``make_engine(model, "auto")`` builds it: ONNX Runtime,
    whose kernels are float32 only, is a candidate in every precision and runs float32.

    Raises:
        EngineError: as for ``make_engine`` (the engine is not installed here, say).
    """
    arithmetic = _arithmetic(_engine_name(choice), precision)
    return make_engine(model, choice, precision=arithmetic, threads=threads, cache_file=cache_file)


def _arithmetic(name: str, precision: str) -> str:
    """The precision engine ``name`` runs as a candidate for ``precision``."""
    return "float32" if name == "onnxruntime" else precision


def _forms(model: nn.Module) -> dict[str, nn.Module]:
    """The model, and the faster equal form its class declares (``SRNetwork.fast_form``:
    FSRCNN's sub-pixel form), if any."""
    from subpixel.models import SRNetwork

    forms = {"": model}
    fast = model.fast_form() if isinstance(model, SRNetwork) else None
    if fast is not None:
        forms[fast.form_name] = fast  # a deep copy: the card comes along
    return forms


def _form(candidate: str) -> str:
    """The form a candidate runs: ``SUBPIXEL_FORM`` or ``""``."""
    return SUBPIXEL_FORM if candidate.removesuffix(GRID_SUFFIX).endswith(SUBPIXEL_FORM) else ""


def _in_grid(engine: Engine, model: nn.Module) -> GridEngine:
    """``engine`` run on the fixed grid of tiles (``subpixel.engines.grid``), with the
    margin the image pipeline gives ``model`` (the network as loaded, whatever form the
    engine runs)."""
    return engine if isinstance(engine, GridEngine) else GridEngine(engine, model)


def _candidate(
    model: nn.Module,
    candidate: str,
    precision: str,
    threads: int | None,
    cache_dir: Path | None,
    forms: dict[str, nn.Module] | None = None,
) -> Engine | None:
    """The engine for ``"name[+subpixel][+grid]"``, or ``None`` when it cannot run here.
    ``forms``: the model's forms (``_forms``) when already made."""
    name = _engine_name(candidate)
    network = (forms or _forms(model))[_form(candidate)]
    try:
        engine = _build(network, name, _arithmetic(name, precision), threads, cache_dir)
    except SubpixelError as error:  # not installed, or not exportable
        logger.info("auto engine: %s unavailable (%s)", candidate, error)
        return None
    if network is not model:
        engine.form = "sub-pixel"
    return _in_grid(engine, model) if candidate.endswith(GRID_SUFFIX) else engine


def _named(
    model: nn.Module, name: str, precision: str, threads: int | None, cache_dir: Path | None
) -> Engine:
    """The engine ``name`` (no ``"auto"``): ``"+subpixel"`` runs FSRCNN's sub-pixel form,
    ``"+grid"`` the engine on the fixed grid of tiles (``subpixel.engines.grid``)."""
    if name.endswith(GRID_SUFFIX):
        base = name.removesuffix(GRID_SUFFIX)
        return _in_grid(_named(model, base, precision, threads, cache_dir), model)
    if not name.endswith(SUBPIXEL_FORM):
        return _build(model, name, precision, threads, cache_dir)
    forms = _forms(model)
    if SUBPIXEL_FORM not in forms:
        raise EngineError(f"{name}: only FSRCNN with a transposed convolution has a sub-pixel form")
    base = name.removesuffix(SUBPIXEL_FORM)
    engine = _build(forms[SUBPIXEL_FORM], base, precision, threads, cache_dir)
    engine.form = "sub-pixel"
    return engine


def _on_gpu(model: nn.Module) -> bool:
    first = next(model.parameters(), None)
    return first is not None and first.device.type != "cpu"


def _on_device(model: nn.Module, precision: str) -> tuple[str, Engine]:
    """The choice and engine for a model on a GPU (``subpixel.engines.device_choice``):
    eager torch, the form and layout measured fastest there, remembered for the process."""
    first = next(model.parameters())
    where = first.device
    name = torch.cuda.get_device_name(where) if where.type == "cuda" else str(where)
    kind = f"{_network_kind(model)}/{precision}/{name}"
    choice = _CHOICES.get(kind)
    if choice is not None:
        return choice, _named(model, choice, precision, None, None)
    choice, engine, milliseconds = choose_on_device(
        _forms(model), precision, _channels(model), size=CALIBRATION_SIZE, runs=CALIBRATION_RUNS
    )
    logger.info(
        "auto engine for %s: %s (ms for %d frames: %s)",
        kind,
        choice,
        DEVICE_CALIBRATION_BATCH,
        {k: round(v, 3) for k, v in milliseconds.items()},
    )
    _CHOICES[kind] = choice
    return choice, engine


def _remembered(
    model: nn.Module, precision: str, count: int, cache_file: Path | None
) -> str | None:
    """The choice remembered for this kind of network at ``count`` threads: in this process,
    then in ``cache_file``."""
    kind = _choice_kind(model, precision, count)
    choice = _CHOICES.get(kind)
    if choice is None and cache_file is not None:
        choice = _cached_choice(cache_file, kind, count)
    return choice


def _auto_engine(
    model: nn.Module, precision: str, threads: int | None, cache_file: Path | None
) -> Engine:
    if _on_gpu(model):
        return _on_device(model, precision)[1]
    count = threads or torch.get_num_threads()
    choice = _remembered(model, precision, count, cache_file)
    if choice is not None:
        cache_dir = None if cache_file is None else cache_file.parent
        engine = _candidate(model, choice, precision, threads, cache_dir)
        if engine is not None:
            _CHOICES[_choice_kind(model, precision, count)] = choice
            return engine
    return _measured(model, precision, threads, cache_file)[1]


def _measured(
    model: nn.Module, precision: str, threads: int | None, cache_file: Path | None
) -> tuple[str, Engine]:
    """Calibrate the candidates, probe their tiles, remember the choice; the choice and its
    engine."""
    count = threads or torch.get_num_threads()
    kind = _choice_kind(model, precision, count)
    cache_dir = None if cache_file is None else cache_file.parent
    forms = _forms(model)
    engines: dict[str, Engine] = {}
    for form in forms:
        for name in AUTO_ENGINES[precision]:
            engine = _candidate(model, name + form, precision, threads, cache_dir, forms)
            if engine is not None:
                engines[name + form] = engine
    channels = _channels(model)
    calibration = calibrate(engines, channels, kind=kind)
    probe = _probe_tiles(engines, forms, calibration, channels)
    if probe.exact is False:
        fallbacks = {
            name + form: engine
            for form in forms
            for name in EXACT_FALLBACKS.get(precision, ())
            if (engine := _candidate(model, name + form, precision, threads, cache_dir, forms))
        }
        calibration, probe = _probe_fallbacks(fallbacks, forms, calibration, probe, channels)
        engines.update(fallbacks)
    if probe.exact is False:
        logger.warning(
            "no engine ran %s tile-exact; the fastest, %s, may differ along tile seams",
            kind,
            probe.choice,
        )
    choice = probe.choice
    logger.info(
        "auto engine for %s: %s (ms: %s; tile probe %.0f ms: exact %s, failed %s)",
        kind,
        choice,
        {k: round(v, 2) for k, v in calibration.milliseconds.items()},
        probe.milliseconds,
        probe.exact,
        list(probe.failed),
    )
    if cache_file is not None:
        _store_choice(cache_file, calibration, probe, count)
    _CHOICES[kind] = choice
    engine = engines[choice.removesuffix(GRID_SUFFIX)]
    if choice.endswith(GRID_SUFFIX):
        engine = _in_grid(engine, model)
    return choice, engine


def _probe_tiles(
    engines: dict[str, Engine],
    forms: dict[str, nn.Module],
    calibration: Calibration,
    channels: int,
) -> TileProbe:
    """Probe the calibrated candidates fastest first and keep the first whose tiles match
    the whole image bit for bit (``tile_probe.tile_mismatches``) -- unless the fastest is
    more than ``GRID_GAIN`` times faster than it: then the fastest runs on the fixed grid
    of tiles (``subpixel.engines.grid``), once the grid probe
    (``tile_probe.grid_mismatches``) has found its tiles the same bit for bit from call to
    call. The fastest of all when nothing is exact (``exact`` False: the caller tries
    ``EXACT_FALLBACKS``) or when the network cannot be tiled.

    Args:
        engines: the candidates by name (``"name[+subpixel]"``).
        forms: the networks they run, by form (``""``, ``"+subpixel"``).
        calibration: their timings.
        channels: the networks' input channels.
    """
    start = time.perf_counter()
    failed: list[str] = []

    def done(choice: str, exact: bool | None) -> TileProbe:
        return TileProbe(choice, exact, tuple(failed), (time.perf_counter() - start) * 1e3)

    fastest = calibration.fastest
    in_grid: bool | None = None  # whether the fastest runs tile-exact on the grid

    def grid_exact() -> bool:
        nonlocal in_grid
        if in_grid is None:
            grid = _in_grid(engines[fastest], forms[""])
            mismatches = grid_mismatches(grid, channels)
            in_grid = mismatches == 0
            if not in_grid:
                logger.info(
                    "auto engine: %s failed the grid probe (%d values differ)", fastest, mismatches
                )
        return in_grid

    for candidate in calibration.ranked:
        slower = calibration.milliseconds[candidate] > GRID_GAIN * calibration.milliseconds[fastest]
        if failed and slower and grid_exact():
            return done(fastest + GRID_SUFFIX, True)
        try:
            mismatches = tile_mismatches(engines[candidate], forms[_form(candidate)], channels)
        except TilingError as error:  # no receptive radius: the network is never tiled
            logger.info("auto engine: no tile probe for %s (%s)", calibration.kind, error)
            return done(fastest, None)
        if mismatches == 0:
            return done(candidate, True)
        logger.info(
            "auto engine: %s failed the tile probe (%d values differ)", candidate, mismatches
        )
        failed.append(candidate)
    if grid_exact():
        return done(fastest + GRID_SUFFIX, True)
    return done(calibration.fastest, False)


def _probe_fallbacks(
    fallbacks: dict[str, Engine],
    forms: dict[str, nn.Module],
    calibration: Calibration,
    probe: TileProbe,
    channels: int,
) -> tuple[Calibration, TileProbe]:
    """After a probe that found nothing exact: time ``fallbacks`` (``EXACT_FALLBACKS`` by
    candidate name) and keep the fastest whose tiles match the whole. The calibration with
    their timings added, and the probe's result (still the fastest candidate, ``exact``
    False, when none of them matched either)."""
    start = time.perf_counter()
    failed = list(probe.failed)
    timed = calibrate(fallbacks, channels, kind=calibration.kind) if fallbacks else None
    ranked = [] if timed is None else timed.ranked
    milliseconds = {**calibration.milliseconds, **(timed.milliseconds if timed else {})}
    choice, exact = probe.choice, probe.exact
    for candidate in ranked:
        if tile_mismatches(fallbacks[candidate], forms[_form(candidate)], channels) == 0:
            choice, exact = candidate, True
            break
        logger.info("auto engine: the fallback %s failed the tile probe too", candidate)
        failed.append(candidate)
    spent = probe.milliseconds + (time.perf_counter() - start) * 1e3
    return Calibration(calibration.kind, milliseconds), TileProbe(
        choice, exact, tuple(failed), spent
    )


class EngineModule(nn.Module):
    """An engine behind the ``nn.Module`` call contract, so the image and video pipelines
    (tiling included) use it like the network it was made from.

    The network stays attached as ``.network`` (its layers tell the tiler how much context
    a tile needs) and its card as ``.card``.
    """

    def __init__(self, engine: Engine, network: nn.Module) -> None:
        super().__init__()
        self.engine = engine
        self.network = network
        card = getattr(network, "card", None)
        if card is not None:
            self.card = card
        self.config = getattr(network, "config", None)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        sr = self.engine(lr.detach().float().cpu().numpy())
        return torch.from_numpy(np.ascontiguousarray(sr)).to(lr.device)


def engine_module(
    model: nn.Module,
    name: str = "auto",
    *,
    precision: str = "auto",
    threads: int | None = None,
    cache_file: str | Path | None = None,
) -> nn.Module:
    """``model`` run by the engine ``name`` (see :func:`make_engine` for the keywords).

    Eager float32 torch returns the model itself; any other engine is wrapped in an
    ``EngineModule``, which the image and video pipelines use like the network.

    Example:
        >>> import subpixel
        >>> model = subpixel.load_model("bicubic", scale=2)
        >>> engine_module(model, "torch") is model
        True
    """
    engine = make_engine(model, name, precision=precision, threads=threads, cache_file=cache_file)
    if (
        isinstance(engine, TorchEngine)
        and (engine.name, engine.precision) == ("torch", "float32")
        and engine.model is model
    ):
        return model
    return EngineModule(engine, model)
