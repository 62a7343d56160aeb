"""The Ray Data backend (subpixel.pipeline.cluster) on a local Ray cluster of 2 CPUs started
here: its outputs are the single-process CLI's byte for byte, a re-run writes nothing, a
corrupt file is reported while the others are written, and ``--ray`` sets the exit code.

One cluster serves the module (Ray takes seconds to start); each run starts two actors of
one thread, where the CLI in this process runs on every core.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from subpixel.cli import main
from subpixel.engines import default_cache_file
from subpixel.errors import DeviceError, MissingExtraError, SubpixelError
from subpixel.pipeline.cluster import ActorPlan, FileResult, plan_actors, upscale_on_ray

Capsys = pytest.CaptureFixture[str]
MODEL = "espcn"  # a network (bfloat16 for 8 bits on CPUs that have it), small and quick
EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.fixture(scope="module")
def ray(private_cache_home: Path) -> Iterator[ModuleType]:
    """A local cluster of 2 CPUs for the module (started after the private engine cache is
    set, so its workers use it too)."""
    ray = pytest.importorskip("ray", reason="needs ray: pip install 'subpixel[ray]'")
    pytest.importorskip("ray.data", reason="the Ray backend needs ray[data]")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8-bit RGB, RGBA, 16-bit RGB PNGs and a JPEG with an ICC profile, small and odd-sized;
    and the example video where PyAV is installed."""
    import png

    root = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (23, 17, 3), dtype=np.uint8)).save(root / "rgb.png")
    rgba = rng.integers(0, 256, (19, 21, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(root / "rgba.png")
    deep = rng.integers(0, 65536, (15, 13, 3), dtype=np.uint16)
    with (root / "deep.png").open("wb") as file:
        png.Writer(13, 15, greyscale=False, bitdepth=16).write(file, deep.reshape(15, 39).tolist())
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    photo = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    photo.save(root / "photo.jpg", quality=90, icc_profile=icc)
    if importlib.util.find_spec("av") is not None:
        (root / "cat.mp4").write_bytes((EXAMPLES / "cat.mp4").read_bytes())
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))}


def _difference(
    by_cli: Path, by_ray: Path, written: dict[str, bytes], expected: dict[str, bytes]
) -> str:
    """What differs, to tell an engine's values from the colour work's: for a video, the
    first decoded frame that differs and its largest difference in Y (the network) and in
    U/V (chroma bicubic); and the process's state that both depend on."""
    lines = [f"oneDNN enabled here: {torch.backends.mkldnn.enabled}"]
    cache = default_cache_file()
    if cache.exists():
        lines.append(f"engine choices: {cache.read_text()}")
    for name in sorted(expected):
        if written.get(name) == expected[name]:
            continue
        if not name.endswith(".mp4"):
            lines.append(f"{name}: bytes differ")
            continue
        import av

        with av.open(str(by_cli / name)) as cli, av.open(str(by_ray / name)) as ray:
            pairs = zip(cli.decode(video=0), ray.decode(video=0), strict=False)
            for index, (a, b) in enumerate(pairs):
                # yuv420p as one array: the Y rows, then the U and V planes' rows.
                diff = np.abs(a.to_ndarray().astype(int) - b.to_ndarray().astype(int))
                luma, chroma = int(diff[: a.height].max()), int(diff[a.height :].max())
                if luma or chroma:
                    lines.append(f"{name}: frame {index} differs by {luma} in Y, {chroma} in UV")
                    break
            else:
                lines.append(f"{name}: every decoded frame equal, the container differs")
    return "\n".join(lines)


def _seed_other_choices_for_one_thread() -> None:
    """Record, for one thread, another engine than the one chosen on every core: an actor
    (one thread) choosing for itself would take it and write other bytes; actors running
    the driver's choice do not."""
    cache = default_cache_file()
    entries = json.loads(cache.read_text())
    threads = torch.get_num_threads()
    for kind, entry in list(entries.items()):
        if kind.startswith(f"{MODEL}/") and kind.endswith(f"/t{threads}"):
            other = "torch" if entry["engine"] != "torch" else "torch-channels-last"
            one = kind.removesuffix(f"/t{threads}") + "/t1"
            entries[one] = {**entry, "engine": other, "threads": 1}
    cache.write_text(json.dumps(entries))


def test_outputs_are_the_clis_byte_for_byte_and_a_rerun_writes_nothing(
    ray: ModuleType, folder: Path, tmp_path: Path
) -> None:
    by_cli, by_ray = tmp_path / "cli", tmp_path / "ray"
    assert main(["upscale", str(folder), "-o", str(by_cli), "--model", MODEL]) == 0
    if torch.get_num_threads() > 1:
        _seed_other_choices_for_one_thread()
    results: list[FileResult] = []
    summary = upscale_on_ray([folder], by_ray, model=MODEL, progress=results.append)
    names = sorted(p.name for p in folder.iterdir())  # the video, one task, where PyAV is
    assert (len(summary.written), summary.skipped, summary.failed) == (len(names), [], [])
    assert sorted(r.status for r in results) == ["written"] * len(names)
    expected = _files(by_cli)
    assert sorted(expected) == names
    written = _files(by_ray)
    assert written == expected, _difference(by_cli, by_ray, written, expected)

    # A re-run finds every output and starts nothing.
    stamps = {p: p.stat().st_mtime_ns for p in by_ray.iterdir()}
    again = upscale_on_ray([folder], by_ray, model=MODEL)
    assert (again.written, len(again.skipped), again.failed) == ([], len(names), [])
    assert {p: p.stat().st_mtime_ns for p in by_ray.iterdir()} == stamps
    assert ray.is_initialized()  # the caller's cluster is left running


def test_a_corrupt_file_is_reported_and_the_others_written_and_the_exit_code_says_so(
    ray: ModuleType, folder: Path, tmp_path: Path, capsys: Capsys
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("rgb.png", "photo.jpg"):
        (inputs / name).write_bytes((folder / name).read_bytes())
    whole = (folder / "rgba.png").read_bytes()
    (inputs / "cut.png").write_bytes(whole[: len(whole) // 2])
    out = tmp_path / "out"
    argv = ["upscale", str(inputs), "-o", str(out), "--model", MODEL, "--scale", "2"]
    assert main([*argv, "--ray"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("subpixel: error:")]
    assert len(errors) == 1 and str(inputs / "cut.png") in errors[0]
    assert err[-1] == "subpixel: 2 written, 0 skipped (output exists), 1 failed"
    assert sorted(p.name for p in out.iterdir()) == ["photo.jpg", "rgb.png"]  # no temporaries
    assert Image.open(out / "rgb.png").size == (34, 46)

    (inputs / "cut.png").unlink()
    assert main([*argv, "--ray"]) == 0  # what is left was done: nothing to do
    assert (
        capsys.readouterr().err.strip().endswith("0 written, 2 skipped (output exists), 0 failed")
    )
    assert ray.is_initialized()


def test_ray_addresses_and_streams_are_checked_before_any_work(
    folder: Path, tmp_path: Path, capsys: Capsys
) -> None:
    out = tmp_path / "out"
    for argv in (
        ["upscale", str(folder), "-o", str(out), "--ray=photos/"],
        ["upscale", "-", "-o", str(out / "x.png"), "--ray"],
        ["upscale", str(folder), "-o", str(out), "--ray", "--scale", "40"],
    ):
        assert main(argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("subpixel: error: "), err
    assert not out.exists()


def test_without_ray_installed_the_error_names_the_extra(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capsys
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'subpixel\[ray\]'"):
        upscale_on_ray([folder], tmp_path / "out")
    assert main(["upscale", str(folder), "-o", str(tmp_path / "out"), "--ray"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["subpixel: error: the Ray backend needs Ray Data: pip install 'subpixel[ray]'"]


def test_actors_come_from_the_clusters_resources() -> None:
    assert plan_actors({"CPU": 2.0}, 10) == ActorPlan(actors=2, cpus=1, gpus=0)
    assert plan_actors({"CPU": 8.0}, 10, threads=2) == ActorPlan(actors=4, cpus=2, gpus=0)
    assert plan_actors({"CPU": 8.0}, 3) == ActorPlan(actors=3, cpus=1, gpus=0)  # <= files
    assert plan_actors({"CPU": 16.0, "GPU": 4.0}, 10) == ActorPlan(actors=4, cpus=4, gpus=1)
    assert plan_actors({"CPU": 16.0, "GPU": 4.0}, 10, device="cpu").gpus == 0
    assert plan_actors({"CPU": 4.0}, 10, actors=1, threads=4) == ActorPlan(1, 4, 0)
    with pytest.raises(DeviceError, match="no GPUs"):
        plan_actors({"CPU": 4.0}, 10, device="cuda")
    with pytest.raises(DeviceError, match="auto, cpu or cuda"):
        plan_actors({"CPU": 4.0, "GPU": 1.0}, 10, device="cuda:1")
    with pytest.raises(SubpixelError, match="has 4 CPUs"):
        plan_actors({"CPU": 4.0}, 10, threads=8)
