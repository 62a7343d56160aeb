from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from subpixel.files import (
    STALE_AFTER,
    _host_tag,
    is_stale_temporary,
    remove_stale_temporaries,
    temporary_beside,
    temporary_name,
)
from subpixel.images import write_image
from subpixel.pipeline.batch import Job, run_jobs


def _dead_pid() -> int:
    """The id of a process that has ended (and been reaped)."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                           capture_output=True, text=True)  # fmt: skip
    pid = int(child.stdout)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    return pid


def _plant(folder: Path, name: str, *, age: float = 0.0) -> Path:
    path = folder / name
    path.write_bytes(b"partial")
    if age:
        then = time.time() - age
        os.utime(path, (then, then))
    return path


def test_temporaries_are_hidden_beside_the_target_and_name_their_process(tmp_path: Path) -> None:
    target = tmp_path / "img_03.png"
    made = temporary_beside(target)
    assert made.parent == tmp_path and made.exists()
    assert made.name.startswith(".img_03.png.") and made.name.endswith(".tmp")
    assert f".{os.getpid()}-{_host_tag()}-" in made.name
    video = temporary_name(tmp_path / "v.mp4", ".mp4")
    assert video.name.startswith(".v.mp4.") and video.name.endswith(".tmp.mp4")
    # Our own, fresh: not stale.
    assert not is_stale_temporary(made)


@pytest.mark.skipif(os.name == "nt", reason="process checks need POSIX signals")
def test_stale_temporaries_are_removed_and_nothing_else(tmp_path: Path) -> None:
    host, dead = _host_tag(), _dead_pid()
    other = "000000" if host != "000000" else "111111"  # another machine
    live = os.getppid()  # pytest's parent: alive, and not this process
    stale = [
        _plant(tmp_path, f".a.png.{dead}-{host}-0123abcd.tmp"),  # its process is gone
        _plant(tmp_path, f".v.mp4.{dead}-{host}-89abcdef.tmp.mp4"),
        _plant(tmp_path, ".b.png.0123abcd.tmp", age=STALE_AFTER + 60),  # earlier naming, old
        _plant(tmp_path, f".c.png.{live}-{other}-0123abcd.tmp", age=STALE_AFTER + 60),  # old
        _plant(tmp_path, f".d.png.{live}-{host}-0123abce.tmp", age=STALE_AFTER + 60),  # old too
    ]
    kept = [
        _plant(tmp_path, f".d.png.{live}-{host}-0123abcd.tmp"),  # a live writer's
        _plant(tmp_path, f".e.png.{dead}-{other}-0123abcd.tmp"),  # another machine's, fresh
        _plant(tmp_path, ".f.png.0123abcd.tmp"),  # earlier naming, fresh
        _plant(tmp_path, f".g.png.{dead}-{host}-0123abcd.tmp.mp4"),  # suffix not the target's
        _plant(tmp_path, f".h.png.{dead}-{host}-0123abcd.tmpx"),
        _plant(tmp_path, f"i.png.{dead}-{host}-0123abcd.tmp"),  # not hidden
        _plant(tmp_path, ".notes.tmp", age=STALE_AFTER + 60),
        _plant(tmp_path, "a.png", age=STALE_AFTER + 60),
    ]
    (tmp_path / f".j.png.{dead}-{host}-0123abcd.tmp").mkdir()  # not a file
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(stale)
    assert all(path.exists() for path in kept)
    assert not any(path.exists() for path in stale)
    assert remove_stale_temporaries(tmp_path / "missing") == []


@pytest.mark.skipif(os.name == "nt", reason="process checks need POSIX signals")
def test_run_jobs_clears_stale_temporaries_from_its_output_folders(tmp_path: Path) -> None:
    from PIL import Image

    host, dead = _host_tag(), _dead_pid()
    source = tmp_path / "a.png"
    Image.new("RGB", (2, 2)).save(source)
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    stale = _plant(out / "sub", f".a.png.{dead}-{host}-0123abcd.tmp")
    live = _plant(out / "sub", f".a.png.{os.getppid()}-{host}-0123abcd.tmp")
    elsewhere = _plant(tmp_path, f".x.png.{dead}-{host}-0123abcd.tmp")  # not an output folder
    job = Job(source, out / "sub" / "a.png", "a.png")
    summary = run_jobs([job], lambda j: write_image(Image.open(j.source), j.target))
    assert summary.written == [job.target]
    assert not stale.exists()
    assert live.exists() and elsewhere.exists()
