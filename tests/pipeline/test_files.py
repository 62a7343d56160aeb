"""One file through an Upscaler: the path the CLI, the Ray backend and the web app share."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import subpixel
from subpixel.errors import SubpixelError
from subpixel.pipeline.batch import Job, run_jobs
from subpixel.pipeline.files import FileBatches, FileOptions, upscale_bytes, upscale_file


@pytest.fixture(scope="module")
def upscaler() -> subpixel.Upscaler:
    return subpixel.load_model("espcn", scale=2)


def _rgba(path: Path) -> Path:
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, (21, 18, 4), dtype=np.uint8)
    Image.fromarray(pixels, "RGBA").save(path)
    return path


def test_a_file_keeps_its_alpha_and_matches_the_in_memory_call(
    tmp_path: Path, upscaler: subpixel.Upscaler
) -> None:
    source = _rgba(tmp_path / "in.png")
    target = tmp_path / "out.png"
    assert upscale_file(source, target, upscaler) == []
    written = Image.open(target)
    assert written.mode == "RGBA" and written.size == (36, 42)
    expected = upscaler(Image.open(source))
    np.testing.assert_array_equal(np.asarray(written), np.asarray(expected))


def test_bytes_in_bytes_out_equal_the_file_path(
    tmp_path: Path, upscaler: subpixel.Upscaler
) -> None:
    source = _rgba(tmp_path / "in.png")
    upscale_file(source, tmp_path / "out.png", upscaler)
    answer = upscale_bytes(source.read_bytes(), ".png", upscaler)
    assert answer == (tmp_path / "out.png").read_bytes()


def test_bytes_can_be_written_in_another_format(upscaler: subpixel.Upscaler) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (10, 12), (200, 30, 90)).save(buffer, "PNG")
    answer = upscale_bytes(buffer.getvalue(), "png", upscaler, FileOptions(format="jpg"))
    image = Image.open(io.BytesIO(answer))
    assert image.format == "JPEG" and image.size == (20, 24)


def test_bad_bytes_are_one_error_naming_the_upload_not_a_temporary_path(
    upscaler: subpixel.Upscaler,
) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), (1, 2, 3)).save(buffer, "PNG")
    with pytest.raises(SubpixelError) as caught:
        upscale_bytes(buffer.getvalue()[:60], ".png", upscaler, name="photo.png")
    message = str(caught.value)
    assert "photo.png" in message and "subpixel-" not in message and "\n" not in message


def test_an_extension_is_an_extension(upscaler: subpixel.Upscaler) -> None:
    with pytest.raises(SubpixelError, match="not an image extension"):
        upscale_bytes(b"x", "../../etc/passwd", upscaler)
    with pytest.raises(SubpixelError, match="not an image extension"):
        upscale_bytes(b"x", ".mp4", upscaler)


def test_images_read_ahead_in_batches_are_written_as_one_at_a_time(
    tmp_path: Path, upscaler: subpixel.Upscaler
) -> None:
    # Five images (two sizes, one corrupt) in batches of 2: the same files as upscale_file
    # writes, the corrupt one failing alone when its turn comes, an existing output skipped.
    rng = np.random.default_rng(6)
    sources = []
    for index, shape in enumerate([(12, 10, 3), (12, 10, 3), (7, 9, 3), (12, 10, 3)]):
        path = tmp_path / f"in{index}.png"
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
        sources.append(path)
    corrupt = tmp_path / "in4.png"
    corrupt.write_bytes(sources[0].read_bytes()[:60])
    sources.insert(2, corrupt)
    jobs = [Job(s, tmp_path / "out" / s.name, s.name) for s in sources]
    (tmp_path / "out").mkdir()
    jobs[-1].target.write_bytes(b"already there")
    options = FileOptions(batch=2)
    files = FileBatches(jobs, upscaler, options)
    summary = run_jobs(jobs, files)
    assert summary.skipped == [jobs[-1].target]
    assert [source for source, _ in summary.failed] == [corrupt]
    assert str(corrupt) in summary.failed[0][1]
    for job in jobs[:2] + jobs[3:4]:
        expected = tmp_path / f"expected-{job.source.name}"
        upscale_file(job.source, expected, upscaler)
        assert job.target.read_bytes() == expected.read_bytes()
    assert jobs[-1].target.read_bytes() == b"already there"


def test_a_batch_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="batch"):
        FileOptions(batch=0)
