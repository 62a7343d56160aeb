from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, features

from subpixel import models
from subpixel.cli import build_parser, main
from subpixel.engines import set_threads
from subpixel.pipeline.batch import Job
from subpixel.precision import resolve_precision
from subpixel.weights import describe, load_network, save_weights

Capsys = pytest.CaptureFixture[str]


@pytest.fixture
def image_file(tmp_path: Path) -> Path:
    path = tmp_path / "in.png"
    rgb = np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return path


def _error_line(capsys: Capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_upscale_writes_the_output(image_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    assert main(["upscale", str(image_file), "-o", str(out), "--scale", "2"]) == 0
    assert Image.open(out).size == (20, 24)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_upscale_with_a_weights_file(image_file: Path, tmp_path: Path) -> None:
    net = models.build("fsrcnn-s", scale=4)
    describe(net, "fsrcnn-s")
    weights = save_weights(net, tmp_path / "fsrcnn-s_x4.safetensors")
    out = tmp_path / "out.jpg"
    assert main(["upscale", str(image_file), "-o", str(out), "--model", str(weights)]) == 0
    assert Image.open(out).size == (40, 48)


def test_upscale_engine_precision_and_threads_options(
    image_file: Path, tmp_path: Path, private_cache_home: Path
) -> None:
    outputs = {}
    threads = torch.get_num_threads()
    try:
        for engine, precision in (("torch", "float32"), ("torch", "bfloat16"), ("auto", "auto")):
            out = tmp_path / f"{engine}-{precision}.png"
            argv = ["upscale", str(image_file), "-o", str(out), "--scale", "2"]
            argv += ["--engine", engine, "--precision", precision, "--threads", "1"]
            assert main(argv) == 0
            outputs[engine, precision] = np.asarray(Image.open(out), dtype=np.int16)
            assert torch.get_num_threads() == 1
    finally:
        set_threads(threads)
    reference = outputs["torch", "float32"]
    # "auto" precision is mixed for the bundled ESPCN x2 on CPUs with native bfloat16.
    automatic = resolve_precision(load_network("espcn", scale=2), "auto")
    tolerance = 1 if automatic == "float32" else 4
    assert np.abs(outputs["auto", "auto"] - reference).max() <= tolerance
    assert np.abs(outputs["torch", "bfloat16"] - reference).max() <= 4
    cached = json.loads((private_cache_home / "subpixel" / "engines.json").read_text())
    assert any(kind.startswith("espcn/") for kind in cached), cached


def test_upscale_rejects_bad_threads_and_engines(image_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    for flags in (["--threads", "0"], ["--engine", "tensorrt"], ["--precision", "float16"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["upscale", str(image_file), "-o", str(out), *flags])
        assert exit_info.value.code == 2
    assert not out.exists()


def _broken_inputs(tmp_path: Path, image_file: Path) -> dict[str, Path]:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(image_file.read_bytes()[:120])
    empty_folder = tmp_path / "nothing-here"
    empty_folder.mkdir()
    return {
        "missing": tmp_path / "missing.png",
        "empty": empty,
        "not an image": text,
        "truncated": truncated,
        "empty folder": empty_folder,
    }


@pytest.mark.parametrize("kind", ["missing", "empty", "not an image", "truncated", "empty folder"])
def test_bad_input_gives_one_line_and_no_output(
    kind: str, image_file: Path, tmp_path: Path, capsys: Capsys
) -> None:
    source = _broken_inputs(tmp_path, image_file)[kind]
    out = tmp_path / "out.png"
    assert main(["upscale", str(source), "-o", str(out)]) == 1
    assert _error_line(capsys).startswith("subpixel: error: ")
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "no-such-model"], "unknown model"),
        (["--model", "espcn-7"], "no pretrained weights"),
    ],
)
def test_bad_model_or_scale_gives_one_line_and_no_output(
    args: list[str],
    message: str,
    image_file: Path,
    tmp_path: Path,
    capsys: Capsys,
) -> None:
    out = tmp_path / "out.png"
    assert main(["upscale", str(image_file), "-o", str(out), *args]) == 1
    assert message in _error_line(capsys)
    assert not out.exists()


def test_a_scale_off_the_networks_own_is_finished_by_bicubic(
    image_file: Path, tmp_path: Path
) -> None:
    net = models.build("espcn", scale=2)
    describe(net, "espcn")
    weights = save_weights(net, tmp_path / "espcn_x2.safetensors")
    out = tmp_path / "out.png"
    args = ["upscale", str(image_file), "-o", str(out), "--model", str(weights), "--scale", "3"]
    assert main(args) == 0
    assert Image.open(out).size == (30, 36)


@pytest.mark.parametrize("scale", ["1", "0.5", "17"])
def test_scales_out_of_range_are_refused(
    scale: str, image_file: Path, tmp_path: Path, capsys: Capsys
) -> None:
    out = tmp_path / "out.png"
    assert main(["upscale", str(image_file), "-o", str(out), "--scale", scale]) == 1
    assert "--scale" in _error_line(capsys)
    assert not out.exists()


def test_corrupt_weights_file(image_file: Path, tmp_path: Path, capsys: Capsys) -> None:
    weights = tmp_path / "broken.safetensors"
    weights.write_bytes(b"\x00" * 64)
    out = tmp_path / "out.png"
    assert main(["upscale", str(image_file), "-o", str(out), "--model", str(weights)]) == 1
    assert "safetensors" in _error_line(capsys)
    assert not out.exists()


def test_the_input_is_never_overwritten(image_file: Path, capsys: Capsys) -> None:
    before = image_file.read_bytes()
    assert main(["upscale", str(image_file), "-o", str(image_file)]) == 1
    assert "overwrite the input" in _error_line(capsys)
    assert image_file.read_bytes() == before


def test_unknown_output_extension(image_file: Path, tmp_path: Path, capsys: Capsys) -> None:
    assert main(["upscale", str(image_file), "-o", str(tmp_path / "out.xyz")]) == 1
    assert "output format" in _error_line(capsys)


def test_models_lists_every_network(capsys: Capsys) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in models.BUILDERS:
        assert name in out
    assert "22,729" in out  # ESPCN x3 parameters


def test_evaluate_json_on_a_folder(tmp_path: Path, capsys: Capsys) -> None:
    rng = np.random.default_rng(1)
    for i in range(2):
        smooth = np.cumsum(rng.integers(0, 3, (40, 36, 3)), axis=1).clip(0, 255).astype(np.uint8)
        Image.fromarray(smooth).save(tmp_path / f"im{i}.png")
    assert (
        main(
            ["evaluate", "--model", "bicubic", "--dataset", str(tmp_path), "--scale", "2", "--json"]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert set(report) >= {"psnr", "ssim", "bicubic", "images"}
    assert len(report["images"]) == 2
    assert report["psnr"] == pytest.approx(np.mean([im["psnr"] for im in report["images"]]))


def test_evaluate_unknown_dataset(capsys: Capsys) -> None:
    assert main(["evaluate", "--dataset", "/no/such/folder"]) == 1
    assert "neither a folder" in _error_line(capsys)


def test_console_script_exit_code(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "subpixel.cli",
            "upscale",
            str(tmp_path / "nope.png"),
            "-o",
            str(tmp_path / "o.png"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == f"subpixel: error: input not found: {tmp_path / 'nope.png'}"


def _write_rgb(path: Path, seed: int, size: tuple[int, int] = (10, 8)) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def test_a_folder_with_a_bad_file_processes_the_others_and_fails_at_the_end(
    tmp_path: Path, capsys: Capsys
) -> None:
    source = tmp_path / "in"
    (source / "sub").mkdir(parents=True)
    _write_rgb(source / "a.png", 1)
    _write_rgb(source / "sub" / "b.png", 2)
    (source / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    assert main(["upscale", str(source), "-o", str(out), "--recursive", "--scale", "2"]) == 1
    err = capsys.readouterr().err
    assert "broken.png" in err
    assert "2 written, 0 skipped (output exists), 1 failed" in err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "a.png",
        "sub/b.png",
    ]
    assert not list(out.rglob(".*"))  # no temporary files left behind
    # A re-run skips finished work; --overwrite redoes it.
    (source / "broken.png").unlink()
    assert main(["upscale", str(source), "-o", str(out), "--recursive", "--scale", "2"]) == 0
    assert "0 written, 2 skipped" in capsys.readouterr().err
    assert main(["upscale", str(source), "-o", str(out), "--recursive", "--overwrite"]) == 0
    assert "2 written" in capsys.readouterr().err


def _corrupt_exif_jpeg(path: Path) -> Path:
    """A JPEG whose EXIF block has one wrong byte: its TIFF header's first byte."""
    exif = Image.Exif()
    exif[0x0112] = 6
    stream = io.BytesIO()
    Image.new("RGB", (10, 8), (200, 100, 50)).save(stream, "JPEG", exif=exif.tobytes())
    data = bytearray(stream.getvalue())
    data[data.index(b"Exif\x00\x00") + 6] ^= 0xFF  # "MM" -> "\xb2M": not a TIFF header
    path.write_bytes(bytes(data))
    return path


def _corrupt_avif(path: Path) -> Path:
    """An AVIF file whose coded picture has two wrong bytes (Pillow raises RuntimeError)."""
    stream = io.BytesIO()
    rgb = np.random.default_rng(3).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(stream, "AVIF")
    data = bytearray(stream.getvalue())
    start = data.index(b"mdat") + 4 + 8  # into the coded picture, past its first bytes
    data[start] ^= 0xFF
    data[start + 5] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def test_files_that_crash_their_decoder_are_one_line_each_and_the_batch_goes_on(
    tmp_path: Path, capsys: Capsys
) -> None:
    source = tmp_path / "in"
    source.mkdir()
    _write_rgb(source / "a.png", 1)
    _corrupt_exif_jpeg(source / "b.jpg")
    _write_rgb(source / "c.png", 2)
    inputs = [str(source)]
    if features.check("avif"):
        inputs.append(str(_corrupt_avif(tmp_path / "d.avif")))
    out = tmp_path / "out"
    assert main(["upscale", *inputs, "-o", str(out), "--model", "bicubic", "--scale", "2"]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("subpixel: error:")]
    assert errors[0] == f"subpixel: error: corrupt EXIF data in {source / 'b.jpg'}: " + (
        "not a TIFF file (header b'\\xb2M\\x00*\\x00\\x00\\x00\\x08' not valid)"
    )
    if features.check("avif"):
        assert errors[1].startswith(f"subpixel: error: cannot decode image {tmp_path / 'd.avif'}")
    assert len(errors) == len(inputs)  # b.jpg, and d.avif where Pillow reads AVIF
    assert f"2 written, 0 skipped (output exists), {len(errors)} failed" in err
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.png"]


def test_shards_split_a_folder_between_processes(tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    for i in range(12):
        _write_rgb(source / f"{i:02d}.png", i, size=(4, 4))
    out = tmp_path / "out"
    for k in (1, 2, 3):
        assert (
            main(["upscale", str(source), "-o", str(out), "--shard", f"{k}/3", "--scale", "2"]) == 0
        )
        done = len(list(out.glob("*.png")))
        assert 0 < done <= 12
    assert len(list(out.glob("*.png"))) == 12


def test_batches_of_images_and_frames_write_what_one_at_a_time_writes(tmp_path: Path) -> None:
    # The default model, engine and precision of this machine; a folder of two sizes and a
    # y4m clip of 5 frames, upscaled with --batch 3 and without.
    av = pytest.importorskip("av")
    source = tmp_path / "in"
    source.mkdir()
    for i in range(5):
        _write_rgb(source / f"{i}.png", i, size=(9, 7) if i != 2 else (6, 8))
    with av.open(str(source / "clip.y4m"), "w") as container:
        stream = container.add_stream("rawvideo", rate=10)
        stream.width, stream.height, stream.pix_fmt = 16, 12, "yuv420p"
        for i in range(5):
            pixels = np.random.default_rng(i).integers(0, 256, (12, 16, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, "rgb24")))
        container.mux(stream.encode())
    one, batched = tmp_path / "one", tmp_path / "batched"
    assert main(["upscale", str(source), "-o", str(one)]) == 0
    assert main(["upscale", str(source), "-o", str(batched), "--batch", "3"]) == 0
    names = sorted(p.name for p in one.iterdir())
    assert names == ["0.png", "1.png", "2.png", "3.png", "4.png", "clip.y4m"]
    for name in names:
        assert (batched / name).read_bytes() == (one / name).read_bytes(), name
    with pytest.raises(SystemExit):
        main(["upscale", str(source), "-o", str(tmp_path / "x"), "--batch", "0"])


def test_globs_and_output_format(tmp_path: Path) -> None:
    for name in ("x.png", "y.png", "z.bmp"):
        _write_rgb(tmp_path / name, len(name))
    out = tmp_path / "out"
    assert (
        main(
            ["upscale", str(tmp_path / "*.png"), "-o", str(out), "--format", "jpg", "--scale", "2"]
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["x.jpg", "y.jpg"]
    assert Image.open(out / "x.jpg").format == "JPEG"


def test_sixteen_bit_colour_png_stays_sixteen_bit(tmp_path: Path) -> None:
    import png

    rng = np.random.default_rng(5)
    values = rng.integers(0, 65536, (6, 7, 3), dtype=np.uint16)
    source = tmp_path / "deep.png"
    png.Writer(7, 6, greyscale=False, bitdepth=16).write(
        source.open("wb"), values.reshape(6, 21).tolist()
    )
    out = tmp_path / "deep_x2.png"
    assert main(["upscale", str(source), "-o", str(out), "--scale", "2"]) == 0
    width, height, rows, info = png.Reader(filename=str(out)).asDirect()
    assert (width, height, info["bitdepth"], info["planes"]) == (14, 12, 16, 3)
    result = np.vstack([np.asarray(r, dtype=np.uint16) for r in rows]).reshape(12, 14, 3)
    assert len(np.unique(result)) > 256  # not squeezed through 8 bits


def test_icc_profile_and_exif_are_kept_and_orientation_applied(tmp_path: Path) -> None:
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    image = Image.fromarray(np.zeros((8, 10, 3), np.uint8))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    exif[0x010F] = "subpixel test camera"
    source = tmp_path / "photo.jpg"
    image.save(source, icc_profile=icc, exif=exif.tobytes(), quality=95)
    out = tmp_path / "photo_x2.jpg"
    assert main(["upscale", str(source), "-o", str(out), "--scale", "2"]) == 0
    result = Image.open(out)
    assert result.size == (16, 20)  # 10x8 stored, shown turned to 8x10, then x2
    assert result.info.get("icc_profile") == icc
    kept = result.getexif()
    assert kept.get(0x010F) == "subpixel test camera"
    assert kept.get(0x0112, 1) == 1


def test_images_over_the_pixel_limit_are_refused_unless_allowed(
    image_file: Path, tmp_path: Path, capsys: Capsys
) -> None:
    out = tmp_path / "out.png"
    assert main(["upscale", str(image_file), "-o", str(out), "--max-pixels", "100"]) == 1
    assert "--max-pixels" in _error_line(capsys)
    assert not out.exists()
    assert main(["upscale", str(image_file), "-o", str(out), "--max-pixels", "1000"]) == 0


def test_rgba_to_jpeg_is_refused_without_output(tmp_path: Path, capsys: Capsys) -> None:
    source = tmp_path / "alpha.png"
    Image.new("RGBA", (4, 4)).save(source)
    out = tmp_path / "alpha.jpg"
    assert main(["upscale", str(source), "-o", str(out)]) == 1
    assert "JPEG cannot store" in _error_line(capsys)
    assert not out.exists()


def test_tiled_cli_output_equals_untiled(image_file: Path, tmp_path: Path) -> None:
    whole, tiled = tmp_path / "whole.png", tmp_path / "tiled.png"
    assert main(["upscale", str(image_file), "-o", str(whole)]) == 0
    assert main(["upscale", str(image_file), "-o", str(tiled), "--tile", "5"]) == 0
    assert np.array_equal(np.asarray(Image.open(whole)), np.asarray(Image.open(tiled)))


def test_export_writes_an_onnx_file(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    net = models.build("fsrcnn-s", scale=2)
    describe(net, "fsrcnn-s")
    weights = save_weights(net, tmp_path / "w.safetensors")
    out = tmp_path / "w.onnx"
    assert main(["export", "--model", str(weights), "-o", str(out)]) == 0
    from subpixel.export import read_card

    assert read_card(out).architecture == "fsrcnn-s"


def test_video_through_the_cli(tmp_path: Path) -> None:
    av = pytest.importorskip("av")
    source = tmp_path / "clip.mp4"
    with av.open(str(source), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 16, 12, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((12, 16, 3), i * 40, np.uint8), "rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    out = tmp_path / "clip_x2.mp4"
    args = ["upscale", str(source), "-o", str(out), "--model", "bicubic", "--scale", "2"]
    assert main([*args, "--preset", "ultrafast"]) == 0
    with av.open(str(out)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 5
    assert (frames[0].width, frames[0].height) == (32, 24)


def test_upscaled_image_has_ordinary_permissions(image_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    assert main(["upscale", str(image_file), "-o", str(out), "--engine", "torch"]) == 0
    reference = tmp_path / "plain.txt"
    reference.write_text("x")
    assert out.stat().st_mode & 0o777 == reference.stat().st_mode & 0o777
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def _clip(path: Path, frames: int = 3) -> Path:
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 16, 12, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((12, 16, 3), i * 40, np.uint8), "rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def _subpixel(
    args: list[str], stdin: bytes = b"", prelude: str = ""
) -> subprocess.CompletedProcess[bytes]:
    """`subpixel ARGS` in a fresh process, after running ``prelude`` there."""
    script = f"{prelude}\nimport sys\nfrom subpixel.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        input=stdin,
        capture_output=True,
        timeout=300,
        check=False,
    )


def test_video_without_pyav_names_the_extra(tmp_path: Path) -> None:
    source = tmp_path / "clip.mp4"
    source.write_bytes(b"not looked at")
    out = tmp_path / "out.mp4"
    done = _subpixel(
        ["upscale", str(source), "-o", str(out), "--engine", "torch"],
        prelude="import sys; sys.modules['av'] = None  # as if PyAV were not installed",
    )
    assert done.returncode == 1
    assert done.stderr.decode().strip() == (
        f"subpixel: error: {source}: videos need PyAV: pip install 'subpixel[video]'"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_failures_are_printed_as_they_happen(
    tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subpixel.cli as cli

    source = tmp_path / "in"
    source.mkdir()
    _write_rgb(source / "a.png", 1)
    (source / "b.png").write_bytes(b"not a png")
    _write_rgb(source / "c.png", 2)
    seen_before: dict[str, str] = {}
    upscale_one = cli._upscale_one

    def recording(job: Job, files: object) -> None:
        seen_before[job.source.name] = capsys.readouterr().err
        upscale_one(job, files)  # type: ignore[arg-type]

    monkeypatch.setattr(cli, "_upscale_one", recording)
    out = tmp_path / "out"
    assert main(["upscale", str(source), "-o", str(out), "--scale", "2", "--engine", "torch"]) == 1
    at_end = capsys.readouterr().err
    assert "b.png" in seen_before["c.png"]  # printed before c.png was started
    assert "b.png" not in seen_before["b.png"]
    lines = "".join([*seen_before.values(), at_end]).strip().splitlines()
    assert lines[-1] == "subpixel: 2 written, 0 skipped (output exists), 1 failed"
    assert [line for line in lines if "b.png" in line] == [lines[0]]
    assert lines[0].startswith("subpixel: error: ")


def test_an_image_on_stdin_is_upscaled_as_an_image(image_file: Path, tmp_path: Path) -> None:
    options = ["--engine", "torch", "--scale", "2"]
    reference = tmp_path / "reference.png"
    assert main(["upscale", str(image_file), "-o", str(reference), *options]) == 0
    expected = np.asarray(Image.open(reference))
    out = tmp_path / "out.png"
    done = _subpixel(["upscale", "-", "-o", str(out), *options], stdin=image_file.read_bytes())
    assert done.returncode == 0, done.stderr.decode()
    assert np.array_equal(np.asarray(Image.open(out)), expected)
    # To stdout, in the input's format.
    done = _subpixel(["upscale", "-", "-o", "-", *options], stdin=image_file.read_bytes())
    assert done.returncode == 0, done.stderr.decode()
    written = Image.open(io.BytesIO(done.stdout))
    assert written.format == "PNG"
    assert np.array_equal(np.asarray(written), expected)
    jpeg = tmp_path / "in.jpg"
    Image.open(image_file).save(jpeg, quality=95)
    done = _subpixel(["upscale", str(jpeg), "-o", "-", *options])
    assert done.returncode == 0, done.stderr.decode()
    assert Image.open(io.BytesIO(done.stdout)).format == "JPEG"
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["in.jpg", "in.png", "out.png", "reference.png"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "stdin is empty"),
        (b"hello, this is text\n", "neither an image"),
        (b"\x1a\x45\xdf\xa3" + bytes(60), "neither an image"),  # a Matroska file
    ],
)
def test_stdin_that_is_neither_image_nor_y4m_is_refused(
    data: bytes, message: str, tmp_path: Path
) -> None:
    out = tmp_path / "out.png"
    done = _subpixel(["upscale", "-", "-o", str(out), "--engine", "torch"], stdin=data)
    assert done.returncode == 1
    [line] = done.stderr.decode().strip().splitlines()
    assert line.startswith("subpixel: error: ") and message in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["out.gif", "out.png", "out.webm", "out.mp3"])
def test_video_to_a_file_that_cannot_hold_it_is_refused(
    name: str, tmp_path: Path, capsys: Capsys
) -> None:
    source = _clip(tmp_path / "clip.mp4")
    out = tmp_path / name
    args = ["upscale", str(source), "-o", str(out), "--model", "bicubic", "--engine", "torch"]
    assert main(args) == 1
    line = _error_line(capsys)
    assert name in line
    assert "image file name" in line if name in ("out.gif", "out.png") else "cannot hold" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_y4m_on_stdin_to_an_image_name_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("av")
    y4m = tmp_path / "clip.y4m"
    options = ["--model", "bicubic", "--engine", "torch"]
    clip = _clip(tmp_path / "clip.mp4")
    assert main(["upscale", str(clip), "-o", str(y4m), "--scale", "2", *options]) == 0
    assert y4m.read_bytes().startswith(b"YUV4MPEG2 ")
    out = tmp_path / "out.png"
    done = _subpixel(["upscale", "-", "-o", str(out), *options], y4m.read_bytes())
    assert done.returncode == 1
    assert done.stderr.decode().strip() == (
        f"subpixel: error: {out} is an image file name; write the video to .mp4, .mkv, .mov or .y4m"
    )


def _devices_missing_here() -> list[str]:
    """Device names this machine cannot run: always 'gpu', CUDA beyond what it has, and MPS
    where there is none."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    missing = ["gpu", "cuda" if count == 0 else f"cuda:{count}"]
    if not torch.backends.mps.is_available():
        missing.append("mps")
    return missing


@pytest.mark.parametrize("device", _devices_missing_here())
@pytest.mark.parametrize("command", ["upscale", "evaluate", "train"])
def test_a_device_this_machine_lacks_is_one_line_and_nothing_is_written(
    command: str, device: str, image_file: Path, tmp_path: Path, capsys: Capsys
) -> None:
    out = tmp_path / "out"
    argv = {
        "upscale": ["upscale", str(image_file), "-o", str(out / "x.png")],
        "evaluate": ["evaluate", "--dataset", str(tmp_path), "--model", "bicubic"],
        "train": ["train", "--data", str(tmp_path), "--out", str(out), "--val", "none"],
    }[command]
    assert main([*argv, "--device", device]) == 1
    line = _error_line(capsys)
    assert line.startswith(f"subpixel: error: --device {device}: "), line
    expected = (
        "unknown device; choose auto, cpu, cuda, cuda:N or mps"
        if device == "gpu"
        else ("no such CUDA device" if ":" in device else "device is available")
    )
    assert expected in line
    assert not out.exists()


def test_export_makes_missing_folders_as_upscale_does(tmp_path: Path, capsys: Capsys) -> None:
    pytest.importorskip("onnxscript")
    out = tmp_path / "new" / "deeper" / "m.onnx"
    assert main(["export", "--model", "fsrcnn-s", "-o", str(out)]) == 0
    assert out.stat().st_size > 0
    assert capsys.readouterr().err == ""


def _unwritable_folder(tmp_path: Path) -> Path:
    """A folder its owner cannot write, or a skip where chmod does not stop writes (root)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").touch()
    except PermissionError:
        return folder
    pytest.skip("chmod does not stop writes here (running as root or with CAP_DAC_OVERRIDE)")


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("not a folder\n")
    return path


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("under a file", "a-file is not a folder"),
        ("two below a file", "cannot create the folder"),
        ("read-only", "Permission denied"),
    ],
)
def test_export_to_a_place_it_cannot_write_is_one_line(
    where: str, reason: str, tmp_path: Path, a_file: Path, capsys: Capsys
) -> None:
    pytest.importorskip("onnxscript")
    out = {
        "under a file": a_file / "m.onnx",
        "two below a file": a_file / "sub" / "m.onnx",
        "read-only": _unwritable_folder(tmp_path) / "m.onnx" if where == "read-only" else None,
    }[where]
    assert out is not None
    assert main(["export", "--model", "fsrcnn-s", "-o", str(out)]) == 1
    line = _error_line(capsys)
    assert line.startswith("subpixel: error: ") and reason in line, line
    assert str(out.parent) in line
    assert a_file.read_text() == "not a folder\n"
    assert not out.exists()


@pytest.mark.parametrize(
    ("extension", "pillow_format"),
    [("png", "PNG"), ("jpg", "JPEG"), ("webp", "WEBP"), ("tif", "TIFF"), ("bmp", "BMP")],
)
def test_every_output_format_works_in_a_fresh_process(
    extension: str, pillow_format: str, tmp_path: Path
) -> None:
    # Pillow loads its plugins lazily: in a fresh process only PNG is known until something
    # asks for the rest. --engine torch: the engine has nothing to do with the format, and
    # the automatic choice would export and compile the network anew in every process.
    source = tmp_path / "in"
    source.mkdir()
    for name in ("a.png", "b.png"):
        _write_rgb(source / name, len(name))
    out = tmp_path / "out"
    argv = [str(source), "-o", str(out), "--format", extension, "--engine", "torch"]
    result = subprocess.run(
        [sys.executable, "-m", "subpixel.cli", "upscale", *argv, "--scale", "2"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [f"a.{extension}", f"b.{extension}"]
    assert {Image.open(p).format for p in out.iterdir()} == {pillow_format}


def test_two_inputs_for_one_output_are_refused_before_any_work(
    tmp_path: Path, capsys: Capsys
) -> None:
    source = tmp_path / "in"
    source.mkdir()
    _write_rgb(source / "x.png", 1)
    _write_rgb(source / "x.jpg", 2)
    out = tmp_path / "out"
    for flags in ([], ["--overwrite"]):
        assert main(["upscale", str(source), "-o", str(out), "--format", "jpg", *flags]) == 1
        assert _error_line(capsys) == (
            f"subpixel: error: {source / 'x.jpg'} and {source / 'x.png'} would both be written "
            f"to {out / 'x.jpg'}; rename one or upscale them into different folders"
        )
        assert not out.exists()


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("moving.gif", "animated image with 3 frames"),
        ("moving.png", "animated image with 3 frames"),
        ("pages.tif", "multi-page image with 3 pages"),
    ],
)
def test_animations_and_multi_page_files_are_refused_by_name(
    name: str, kind: str, tmp_path: Path, capsys: Capsys
) -> None:
    frames = [_write_rgb(tmp_path / f"{i}.png", i) for i in range(3)]
    images = [Image.open(frame).convert("RGB") for frame in frames]
    source = tmp_path / name
    images[0].save(source, save_all=True, append_images=images[1:])
    out = tmp_path / f"out-{name}"
    assert main(["upscale", str(source), "-o", str(out), "--scale", "2"]) == 1
    assert _error_line(capsys).startswith(f"subpixel: error: {source}: {kind}; subpixel upscales")
    assert not out.exists()


@pytest.mark.parametrize(
    ("name", "note", "mode"),
    [
        (
            "pal.gif",
            "upscaled as RGB and written as a GIF palette image again, with a new palette of "
            "up to 256 colours",
            "P",
        ),
        ("pal.png", "written as RGB PNG", "RGB"),
    ],
)
def test_the_palette_note_says_what_was_written(
    name: str, note: str, mode: str, tmp_path: Path, capsys: Capsys
) -> None:
    source = tmp_path / name
    Image.open(_write_rgb(tmp_path / "rgb.png", 3)).quantize(16).save(source)
    out = tmp_path / f"out-{name}"
    assert main(["upscale", str(source), "-o", str(out), "--scale", "2"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"subpixel: note: {source} is a palette image; {note}"]
    assert Image.open(out).mode == mode


def test_every_per_file_error_names_the_file(tmp_path: Path, capsys: Capsys) -> None:
    source = tmp_path / "in"
    source.mkdir()
    _write_rgb(source / "good.png", 1)
    Image.fromarray(np.ones((4, 4), np.float32)).save(source / "float.tif")  # mode F
    out = tmp_path / "out"
    assert main(["upscale", str(source), "-o", str(out), "--scale", "2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"subpixel: error: {source / 'float.tif'}: unsupported image mode 'F'",
        "subpixel: 1 written, 0 skipped (output exists), 1 failed",
    ]


def test_an_output_folder_that_cannot_be_made_is_reported_once(
    tmp_path: Path, capsys: Capsys
) -> None:
    sources = [str(_write_rgb(tmp_path / f"{n}.png", i)) for i, n in enumerate("abc")]
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    assert main(["upscale", *sources, "-o", str(blocker / "out"), "--scale", "2"]) == 1
    assert _error_line(capsys) == (
        f"subpixel: error: cannot write to {blocker / 'out'}: {blocker} is a file, not a folder"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to read-only folders")
def test_a_read_only_output_folder_is_reported_once(tmp_path: Path, capsys: Capsys) -> None:
    sources = [str(_write_rgb(tmp_path / f"{n}.png", i)) for i, n in enumerate("abc")]
    folder = tmp_path / "rodir"
    folder.mkdir(mode=0o555)
    assert main(["upscale", *sources, "-o", str(folder), "--scale", "2"]) == 1
    assert _error_line(capsys) == f"subpixel: error: cannot write to {folder}: permission denied"


def test_a_url_is_refused_with_a_reason(tmp_path: Path, capsys: Capsys) -> None:
    url = "https://example.com/photo.png"
    assert main(["upscale", url, "-o", str(tmp_path / "out.png")]) == 1
    assert _error_line(capsys) == (
        f"subpixel: error: {url}: URLs are not supported; download the file first"
    )


@pytest.mark.parametrize("quality", ["101", "0", "-5", "high"])
def test_quality_outside_1_to_100_is_a_usage_error(
    quality: str, image_file: Path, tmp_path: Path, capsys: Capsys
) -> None:
    out = tmp_path / "out.jpg"
    with pytest.raises(SystemExit) as exit_info:
        main(["upscale", str(image_file), "-o", str(out), "--quality", quality])
    assert exit_info.value.code == 2
    assert "--quality" in capsys.readouterr().err
    assert not out.exists()


def test_a_file_name_for_several_inputs_is_refused(tmp_path: Path, capsys: Capsys) -> None:
    sources = [str(_write_rgb(tmp_path / f"{n}.png", i)) for i, n in enumerate("ab")]
    out = tmp_path / "two.png"
    assert main(["upscale", *sources, "-o", str(out)]) == 1
    assert _error_line(capsys) == (
        f"subpixel: error: -o {out} looks like a file but 2 inputs were given; give a folder"
    )
    assert not out.exists()


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("a file", "a-file is a file, not a run folder"),
        ("under a file", "cannot create the run folder"),
        ("read-only", "Permission denied"),
    ],
)
def test_train_into_a_place_it_cannot_write_is_one_line(
    where: str, reason: str, tmp_path: Path, a_file: Path, capsys: Capsys
) -> None:
    out = {
        "a file": a_file,
        "under a file": a_file / "run",
        "read-only": _unwritable_folder(tmp_path) / "run" if where == "read-only" else a_file,
    }[where]
    argv = ["train", "--data", str(tmp_path), "--out", str(out), "--val", "none"]
    assert main([*argv, "--device", "cpu"]) == 1
    line = _error_line(capsys)
    assert line.startswith("subpixel: error: ") and reason in line, line
    assert str(out) in line
    assert a_file.read_text() == "not a folder\n"


def _no_network(*args: object, **kwargs: object) -> torch.nn.Module:
    raise AssertionError("the network was prepared although every output exists")


def test_a_rerun_with_every_output_there_prepares_no_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capsys
) -> None:
    source = tmp_path / "in"
    source.mkdir()
    for i in range(3):
        _write_rgb(source / f"{i}.png", i)
    out = tmp_path / "out"
    assert main(["upscale", str(source), "-o", str(out), "--scale", "2", "--engine", "torch"]) == 0
    single = out / "0.png"
    capsys.readouterr()
    monkeypatch.setattr("subpixel.cli.load_model", _no_network)
    assert main(["upscale", str(source), "-o", str(out), "--scale", "2"]) == 0
    assert "0 written, 3 skipped (output exists), 0 failed" in capsys.readouterr().err
    assert main(["upscale", str(source / "0.png"), "-o", str(single), "--scale", "2"]) == 0
    assert "exists; skipped" in capsys.readouterr().err
    # With one output missing, the network is prepared (and here refuses).
    (out / "1.png").unlink()
    with pytest.raises(AssertionError, match="network was prepared"):
        main(["upscale", str(source), "-o", str(out), "--scale", "2"])


def test_engines_keep_their_exports_in_the_cache_folder(
    image_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "out.png"
    assert main(["upscale", str(image_file), "-o", str(out), "--engine", "onnxruntime"]) == 0
    (stored,) = (tmp_path / "cache" / "subpixel" / "onnx").glob("*.onnx")
    assert stored.stat().st_size > 1000


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    (commands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(commands.choices)


def _as_typed(value: object) -> list[str]:
    """Ways a default may be written in a help text."""
    if isinstance(value, (list, tuple)):
        return [" ".join(str(v) for v in value)]
    if isinstance(value, float):
        return [str(value), format(value, "g")]
    return [str(value)]


def test_every_option_says_what_it_does_and_its_default() -> None:
    from subpixel.training import TrainConfig

    train_defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    checked = 0
    for name, parser in _subparsers().items():
        assert parser.description, name
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            flag = "/".join(action.option_strings) or action.dest
            assert action.help and action.help.strip(), (name, flag)
            default = action.default
            if name == "train" and default is None and action.dest in train_defaults:
                default = train_defaults[action.dest]  # the default lives in TrainConfig
            if default in (None, False, (), []) or action.dest == "data":
                continue
            assert "default" in action.help, (name, flag, action.help)
            assert any(text in action.help for text in _as_typed(default)), (name, flag)
            checked += 1
    assert checked >= 40  # not vacuous: train alone shows 23 defaults


def test_top_level_help_version_and_python_dash_m() -> None:
    import importlib.metadata

    parser = build_parser()
    assert parser.description and "Upscale" in parser.description
    assert parser.epilog and "subpixel upscale" in parser.epilog
    assert "Entry point" not in parser.format_help()  # no code docstring
    done = subprocess.run(
        [sys.executable, "-m", "subpixel", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"subpixel {importlib.metadata.version('subpixel')}"
    helps = {}
    for command in ("", "upscale"):
        argv = [sys.executable, "-m", "subpixel", *command.split(), "--help"]
        done = subprocess.run(argv, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        helps[command] = done.stdout
    assert helps[""].startswith("usage: subpixel") and "examples:" in helps[""]
    assert helps["upscale"].startswith("usage: subpixel upscale")


def test_max_memory_help_says_what_it_bounds() -> None:
    (action,) = [a for a in _subparsers()["upscale"]._actions if a.dest == "max_memory"]
    assert action.help is not None
    assert "ceiling on the whole process" in action.help
