"""One file through an Upscaler: the path the CLI, the Ray backend and the web app share."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import subpixel
from subpixel.errors import SubpixelError
from subpixel.pipeline.files import FileOptions, upscale_bytes, upscale_file


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
