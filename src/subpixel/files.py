"""Writing files so that no reader ever sees half of one: a temporary beside, then a rename.

Every file subpixel writes (images, weights, checkpoints, ONNX models, training logs, the
engine cache) goes through :func:`atomic_path` or :func:`atomic_write`; folders built whole
(the patch cache) start as :func:`folder_beside`. The temporary is a
hidden file in the target's folder, ``.<name>.<8 hex digits>.tmp`` plus an optional suffix
(FFmpeg picks a muxer by the extension), matched by ``TEMPORARY_NAME``. It is created like an
ordinary file, mode 0o666 less the umask, not 0o600 as ``tempfile.mkstemp`` would make it,
so the renamed result has the permissions the user expects. On any exception,
``KeyboardInterrupt`` included, the temporary is removed and the target is left as it was.

Example:
    >>> from subpixel.files import atomic_write
    >>> atomic_write("notes.txt", lambda temporary: temporary.write_text("hi"))  # doctest: +SKIP
    PosixPath('notes.txt')
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = [
    "TEMPORARY_NAME",
    "atomic_path",
    "atomic_write",
    "folder_beside",
    "is_temporary",
    "temporary_beside",
    "temporary_name",
]

TEMPORARY_NAME = re.compile(r"\.(?P<target>.+)\.[0-9a-f]{8}\.tmp(?P<suffix>\.[^.]*)?")
"""A temporary's file name; ``target`` is the name of the file it was to become."""


def temporary_name(path: str | Path, suffix: str = "") -> str:
    """A fresh temporary's name for ``path``: ``.<name>.<8 hex digits>.tmp<suffix>``."""
    return f".{Path(path).name}.{secrets.token_hex(4)}.tmp{suffix}"


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
        candidate = path.with_name(temporary_name(path, suffix))
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
