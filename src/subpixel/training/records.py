"""The run's records: its CSV log, the PNG plot of loss and validation PSNR, and the
sessions that trained it (``sessions.json``: the command, machine and time of each)."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from subpixel.files import atomic_path, atomic_write


@dataclass(frozen=True)
class LogRow:
    """One logged point: mean training loss since the last row, and validation if measured."""

    iteration: int
    loss: float
    lr: float
    val_psnr: float | None
    val_ssim: float | None
    seconds: float


COLUMNS = [f.name for f in fields(LogRow)]


def read_log(path: Path) -> list[LogRow]:
    if not path.exists():
        return []
    rows = []
    with path.open(newline="") as stream:
        for raw in csv.DictReader(stream):
            rows.append(
                LogRow(
                    iteration=int(raw["iteration"]),
                    loss=float(raw["loss"]),
                    lr=float(raw["lr"]),
                    val_psnr=float(raw["val_psnr"]) if raw["val_psnr"] else None,
                    val_ssim=float(raw["val_ssim"]) if raw["val_ssim"] else None,
                    seconds=float(raw["seconds"]),
                )
            )
    return rows


def write_log(path: Path, rows: list[LogRow]) -> None:
    """Rewrite the whole log (it is small); used on resume to drop rows past the checkpoint."""
    with atomic_path(path) as temporary, temporary.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in asdict(row).items()})


@dataclass(frozen=True)
class Session:
    """One process's share of a run (a new run, or a ``--resume``): what it was started
    with, where it ran, and the iterations and seconds it added, to its last checkpoint.

    ``command`` is the ``subpixel train`` command line (``None`` when ``train`` was called
    from Python); ``machine`` the processor (``subpixel.devices.processor_name``).
    """

    command: str | None
    machine: str
    device: str
    threads: int
    processes: int
    torch: str
    first_iteration: int
    last_iteration: int
    seconds: float


def read_sessions(path: Path, iteration: int | None = None) -> list[Session]:
    """The sessions recorded in ``path`` (none when it is missing). With ``iteration`` (a
    checkpoint's), only what that checkpoint holds: a session that checkpointed nothing is
    left out and one recorded past it is cut there.

    Raises:
        ValueError: the file is not such a record (its message names the file).
    """
    if not path.exists():
        return []
    try:
        sessions = [Session(**entry) for entry in json.loads(path.read_text())]
    except (ValueError, TypeError) as error:  # JSONDecodeError is a ValueError
        raise ValueError(f"{path} is not a record of training sessions ({error})") from error
    if iteration is None:
        return sessions
    return [
        replace(s, last_iteration=min(s.last_iteration, iteration))
        for s in sessions
        if s.first_iteration < iteration
    ]


def write_sessions(path: Path, sessions: list[Session]) -> None:
    text = json.dumps([asdict(s) for s in sessions], indent=1)
    atomic_write(path, lambda temporary: temporary.write_text(text + "\n"))


def plot_curves(rows: list[LogRow], path: Path, title: str) -> bool:
    """Draw training loss and validation PSNR against iterations; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, (loss_axis, psnr_axis) = plt.subplots(1, 2, figsize=(10, 3.6))
    loss_axis.plot([r.iteration for r in rows], [r.loss for r in rows], lw=1)
    loss_axis.set(xlabel="iteration", ylabel="training loss", yscale="log", title=title)
    validated = [r for r in rows if r.val_psnr is not None]
    psnr_axis.plot([r.iteration for r in validated], [r.val_psnr for r in validated], marker=".")
    psnr_axis.set(xlabel="iteration", ylabel="validation PSNR (dB)")
    for axis in (loss_axis, psnr_axis):
        axis.grid(alpha=0.3)
    figure.tight_layout()
    try:
        atomic_write(path, lambda temporary: figure.savefig(temporary, dpi=100, format="png"))
    finally:
        plt.close(figure)
    return True
