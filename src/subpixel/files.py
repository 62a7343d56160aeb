"""Writing files so that no reader ever sees half of one: a temporary beside, then a rename.

Every file subpixel writes (images, weights, checkpoints, ONNX models, training logs, the
engine cache) goes through :func:`atomic_path` or :func:`atomic_write`; folders built whole
(the patch cache) start as :func:`folder_beside`. The temporary is a hidden file in the
target's folder, ``.<name>.<pid>-<host>-<8 hex digits>.tmp`` plus an optional suffix (FFmpeg
picks a muxer by the extension), matched by ``TEMPORARY_NAME``: the process that writes it and
a tag of its machine's name. It is created like an
ordinary file, mode 0o666 less the umask, not 0o600 as ``tempfile.mkstemp`` would make it,
so the renamed result has the permissions the user expects. On any exception,
``KeyboardInterrupt`` included, the temporary is removed and the target is left as it was.

SIGKILL (or a power cut) gives the writer no chance to remove its temporary, and a video's can
take gigabytes, so :func:`remove_stale_temporaries` clears a folder of subpixel's temporaries
whose process is gone (checked only for this machine: an output folder may be shared by many)
and of any untouched for :data:`STALE_AFTER` seconds (a writer adds to its temporary
continuously, whatever machine it is on; this also clears temporaries of earlier versions,
named ``.<name>.<8 hex digits>.tmp[<suffix>]``). Nothing else is touched.

Example:
    >>> from subpixel.files import atomic_write
    >>> atomic_write("notes.txt", lambda temporary: temporary.write_text("hi"))  # doctest: +SKIP
    PosixPath('notes.txt')
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "STALE_AFTER",
    "TEMPORARY_NAME",
    "atomic_path",
    "atomic_write",
    "folder_beside",
    "is_stale_temporary",
    "is_temporary",
    "read_json_cache",
    "remove_stale_temporaries",
    "temporary_beside",
    "temporary_name",
    "write_cache",
]

TEMPORARY_NAME = re.compile(
    r"\.(?P<target>.+)\.(?:(?P<pid>[0-9]+)-(?P<host>[0-9a-f]{6})-)?[0-9a-f]{8}\.tmp"
    r"(?P<suffix>\.[^.]*)?"
)
"""A temporary's file name; ``target`` is the name of the file it was to become."""

#: Seconds after which a temporary nobody has written to is taken as abandoned.
STALE_AFTER = 3600.0


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def temporary_name(path: str | Path, suffix: str = "") -> Path:
    """A fresh hidden name beside ``path`` for its temporary (``suffix``: e.g. ``.mp4``, for
    writers that pick the format by the extension); the caller creates the file."""
    path = Path(path)
    token = f"{os.getpid()}-{_host_tag()}-{secrets.token_hex(4)}"
    return path.with_name(f".{path.name}.{token}.tmp{suffix}")


def is_temporary(path: str | Path) -> bool:
    """Whether ``path``'s name is that of a temporary made here."""
    return TEMPORARY_NAME.fullmatch(Path(path).name) is not None


def temporary_beside(path: str | Path, suffix: str = "") -> Path:
    """A new empty file beside ``path``, named by :func:`temporary_name`, mode 0o666 less the
    umask.

    Raises:
        OSError: the folder is missing or not writable.
    """
    path = Path(path)
    while True:
        candidate = temporary_name(path, suffix)
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return candidate


def folder_beside(path: str | Path, suffix: str) -> Path:
    """A new empty hidden folder beside ``path``, ``.<name>.<8 hex digits><suffix>``, mode
    0o777 less the umask (``tempfile.mkdtemp`` makes 0o700), to fill and rename onto ``path``.

    Raises:
        OSError: the parent folder is missing or not writable.
    """
    path = Path(path)
    while True:
        candidate = path.with_name(f".{path.name}.{secrets.token_hex(4)}{suffix}")
        try:
            candidate.mkdir(0o777)
        except FileExistsError:
            continue
        return candidate


@contextlib.contextmanager
def atomic_path(path: str | Path, *, suffix: str = "", fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary beside ``path`` to write; on success it is renamed over ``path``.

    ``fsync`` flushes the data to disk before the rename (for files that are expensive to
    remake, such as checkpoints). On any exception the temporary is removed and re-raised.

    Raises:
        OSError: the temporary cannot be created, or the rename fails.
    """
    path = Path(path)
    temporary = temporary_beside(path, suffix)
    try:
        yield temporary
        if fsync:
            with open(temporary, "rb+") as stream:
                os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def atomic_write(
    path: str | Path, write: Callable[[Path], object], *, suffix: str = "", fsync: bool = False
) -> Path:
    """Call ``write`` with a temporary path, then rename it over ``path`` (see :func:`atomic_path`).

    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    with atomic_path(path, suffix=suffix, fsync=fsync) as temporary:
        write(temporary)
    return path


def write_cache(path: str | Path, data: bytes) -> None:
    """Write a cache file atomically, making its folder; a failure is only logged: a cache
    saves time, nothing depends on it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda temporary: temporary.write_bytes(data))
    except OSError as error:
        logging.getLogger(__name__).warning("could not write the cache file %s: %s", path, error)


def read_json_cache(path: str | Path) -> dict[str, Any]:
    """The JSON object in a cache file; empty when it is missing, unreadable, corrupt or
    not an object (what it held is then measured again)."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def _process_gone(pid: int) -> bool:
    if os.name == "nt":  # os.kill ends the process there; rely on the age
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: it exists, as another user
        return False
    return False


def is_stale_temporary(path: Path, *, now: float | None = None) -> bool:
    """Whether ``path`` is one of subpixel's temporaries that nobody will finish: its process
    (on this machine) is gone, or nothing has written to it for :data:`STALE_AFTER` seconds."""
    match = TEMPORARY_NAME.fullmatch(path.name)
    if match is None or match["suffix"] not in (None, Path(match["target"]).suffix):
        return False
    pid, host = match["pid"], match["host"]
    if pid is not None and host == _host_tag():
        if int(pid) == os.getpid():
            return False
        if _process_gone(int(pid)):
            return True
    try:
        modified = path.stat(follow_symlinks=False).st_mtime
    except OSError:
        return False
    return (time.time() if now is None else now) - modified > STALE_AFTER


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the stale temporaries (see :func:`is_stale_temporary`) in ``folder``, not below
    it; returns those removed. Files that are not subpixel's temporaries are never touched."""
    removed = []
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for entry in entries:
        if not (entry.name.startswith(".") and ".tmp" in entry.name):
            continue
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False) and is_stale_temporary(Path(entry), now=now):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed
