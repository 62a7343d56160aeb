"""Temporary files beside their targets, and removing the ones a killed run left behind.

Every output is written to a hidden temporary file beside its target and renamed onto it,
so a crash never leaves a partial output. A temporary is named
``.<target name>.<pid>-<host>-<random>.tmp[<suffix>]``: the process that writes it and a tag
of its machine's name. SIGKILL (or a power cut) gives the writer no chance to remove it, and
a video's can take gigabytes, so :func:`remove_stale_temporaries` clears a folder of
subpixel's temporaries whose process is gone (checked only for this machine: an output folder
may be shared by many) and of any untouched for :data:`STALE_AFTER` seconds (a writer adds to
its temporary continuously, whatever machine it is on; this also clears temporaries of earlier
versions, named ``.<target name>.<random>.tmp[<suffix>]``). Nothing else is touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import socket
import time
from pathlib import Path

__all__ = ["STALE_AFTER", "is_stale_temporary", "remove_stale_temporaries", "temporary_name"]

#: Seconds after which a temporary nobody has written to is taken as abandoned.
STALE_AFTER = 3600.0

_PATTERN = re.compile(
    r"\.(?P<name>.+)\.(?:(?P<pid>[0-9]+)-(?P<host>[0-9a-f]{6})-)?[0-9a-f]{8}\.tmp(?P<suffix>\.[^.]+)?"
)


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def temporary_name(path: Path, suffix: str = "") -> Path:
    """A fresh hidden name beside ``path`` for its temporary (``suffix``: e.g. ``.mp4``, for
    writers that pick the format by the extension); the caller creates the file."""
    token = f"{os.getpid()}-{_host_tag()}-{secrets.token_hex(4)}"
    return path.with_name(f".{path.name}.{token}.tmp{suffix}")


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
    match = _PATTERN.fullmatch(path.name)
    if match is None or match["suffix"] not in (None, Path(match["name"]).suffix):
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
