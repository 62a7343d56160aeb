"""Ctrl-C and SIGTERM stop `subpixel upscale` cleanly: real processes, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX signals")

# Runs `subpixel upscale ARGS` after making one step block (with its temporary written)
# until a signal comes: the step's target name holds MARKER's text, or, for a video, the
# third frame. The marker file says the step has been reached.
_CHILD = """
import signal, sys, time
from pathlib import Path
import PIL.Image

# As in a terminal, even where the test runner was started with SIGINT ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)

marker, block_on, *args = sys.argv[1:]

def block() -> None:
    Path(marker).write_text("reached")
    for _ in range(600):
        time.sleep(0.1)
    raise SystemExit("no signal came")

save = PIL.Image.Image.save
def save_then_block(self, fp, *a, **k):
    save(self, fp, *a, **k)
    if block_on in str(getattr(fp, "name", fp)):
        block()
PIL.Image.Image.save = save_then_block

if block_on == "frame":
    import subpixel.pipeline.video as video
    upscale_frame, calls = video._upscale_frames, []
    def frame_then_block(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            block()
        return upscale_frame(*a, **k)
    video._upscale_frames = frame_then_block

from subpixel.cli import main
sys.exit(main(["upscale", *args, "--engine", "torch", "--model", "bicubic", "--scale", "2"]))
"""


def _run_until_blocked(tmp_path: Path, block_on: str, args: list[str]) -> subprocess.Popen[str]:
    marker = tmp_path / "reached"
    command = [sys.executable, "-c", _CHILD, str(marker), block_on, *args]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120  # a hung child fails the test, it is not timed
    while not marker.exists():
        if child.poll() is not None or time.monotonic() > deadline:
            child.kill()
            pytest.fail(f"the child never reached the blocking step: {child.communicate()}")
        time.sleep(0.05)
    return child


def _write_images(folder: Path, names: list[str]) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).save(folder / name)


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*"))


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_mid_folder_removes_the_temporary_and_says_what_was_done(
    signum: int, code: int, tmp_path: Path
) -> None:
    source, out = tmp_path / "in", tmp_path / "out"
    _write_images(source, ["a.png", "b.png", "c.png", "d.png"])
    out.mkdir()
    Image.new("RGB", (16, 12)).save(out / "b.png")  # done by an earlier run: skipped
    child = _run_until_blocked(tmp_path, ".c.png.", [str(source), "-o", str(out)])
    assert len(_hidden(out)) == 1  # c.png's temporary, written and waiting for its rename
    child.send_signal(signum)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == code, stderr
    assert stderr.strip().splitlines()[-1] == (
        "subpixel: interrupted: 1 written, 1 skipped (output exists), 0 failed; "
        "the rest not started"
    )
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    assert _hidden(out) == []


def test_sigterm_mid_video_removes_its_temporary(tmp_path: Path) -> None:
    av = pytest.importorskip("av")
    source = tmp_path / "clip.mp4"
    with av.open(str(source), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 16, 12, "yuv420p"
        for i in range(6):
            frame = av.VideoFrame.from_ndarray(np.full((12, 16, 3), i * 40, np.uint8), "rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    out = tmp_path / "out"
    out.mkdir()
    target = out / "clip_x2.mp4"
    child = _run_until_blocked(tmp_path, "frame", [str(source), "-o", str(target)])
    [temporary] = _hidden(out)
    assert temporary.startswith(".clip_x2.mp4.") and temporary.endswith(".tmp.mp4")
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 143, stderr
    assert stderr.strip().splitlines()[-1] == f"subpixel: interrupted: {target} not written"
    assert list(out.iterdir()) == []


def test_a_later_run_removes_a_killed_runs_temporary(tmp_path: Path) -> None:
    source, out = tmp_path / "in", tmp_path / "out"
    _write_images(source, ["a.png", "b.png"])
    child = _run_until_blocked(tmp_path, ".b.png.", [str(source), "-o", str(out)])
    child.kill()  # SIGKILL: no clean-up possible
    child.communicate(timeout=120)
    [left] = _hidden(out)
    assert left.startswith(".b.png.")
    # A temporary of a process that is still running is left alone.
    live = out / f".z.png.{os.getpid()}-{left.split('-')[1]}-0123abcd.tmp"
    live.write_bytes(b"being written")
    options = ["--engine", "torch", "--model", "bicubic", "--scale", "2"]
    again = subprocess.run(
        [sys.executable, "-m", "subpixel.cli", "upscale", str(source), "-o", str(out), *options],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr
    assert "1 written, 1 skipped" in again.stderr
    assert _hidden(out) == [live.name]
