from __future__ import annotations

import io
import itertools
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

import subpixel
from subpixel.models.bicubic import Bicubic
from subpixel.weights import ModelCard, describe

av = pytest.importorskip("av")

from av.video.reformatter import Interpolation  # noqa: E402

from subpixel.pipeline.video import VideoError, VideoReport, upscale_video  # noqa: E402

# swscale's plain yuv420p -> rgb24 repeats chroma samples; compare frames through its filter.
_ACCURATE = Interpolation.BICUBIC | Interpolation.FULL_CHR_H_INT | Interpolation.ACCURATE_RND


# ---------------------------------------------------------------------------------------------
# Tiny generated clips


def _scene(h: int, w: int, i: int, seed: int = 0) -> np.ndarray:
    """A natural-looking RGB frame panning one pixel per frame: luma detail at a 4-pixel scale
    (blurred noise), colour varying slowly, as in camera footage (what 4:2:0 relies on)."""
    rng = np.random.default_rng(seed)
    i %= 16
    coarse = rng.uniform(50, 205, (h // 4 + 3, (w + 16) // 4 + 3))
    detail = np.kron(coarse, np.ones((4, 4)))
    kernel = np.ones(5) / 5
    for axis in (0, 1):
        detail = np.apply_along_axis(np.convolve, axis, detail, kernel, mode="same")
    yy, xx = np.mgrid[0:h, i : i + w]
    tint = np.stack(
        [30 * np.sin(xx / 9.0), 20 * np.cos(yy / 7.0), 30 * np.sin((xx - yy) / 11.0)], axis=-1
    )
    return np.clip(detail[2 : 2 + h, 2 + i : 2 + i + w, None] + tint, 0, 255).astype(np.uint8)


def _write_clip(
    path: Path,
    *,
    size: tuple[int, int] = (32, 24),
    frames: int = 10,
    rate: int = 25,
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    audio: str | None = "aac",
    rotation: float | None = None,
    options: dict[str, str] | None = None,
) -> None:
    """H.264 video (none if ``frames`` is 0) plus a mono 440 Hz tone as long as the video."""
    width, height = size
    with av.open(path, "w", options=options or {}) as out:
        video = out.add_stream("libx264", rate=rate) if frames else None
        if video is not None:
            video.width, video.height, video.pix_fmt = width, height, "yuv420p"
            video.options = {"preset": "ultrafast", "crf": "10"}
            if time_base is not None:
                video.codec_context.time_base = time_base
            if rotation is not None:
                video.set_display_rotation(rotation)
        sound = out.add_stream(audio, rate=48000) if audio is not None else None
        if sound is not None:
            sound.layout = "mono"
        for i in range(frames):
            assert video is not None
            frame = av.VideoFrame.from_ndarray(_scene(height, width, i), format="rgb24")
            frame = frame.reformat(format="yuv420p")
            frame.pts = i if pts is None else pts[i]
            if time_base is not None:
                frame.time_base = time_base
            out.mux(video.encode(frame))
        if video is not None:
            out.mux(video.encode(None))
        if sound is not None:
            chunk, fmt = sound.codec_context.frame_size or 1152, sound.format.name
            for start in range(0, max(48000 * frames // rate, chunk), chunk):
                wave = 0.2 * np.sin(2 * np.pi * 440 * (np.arange(chunk) + start) / 48000)
                samples = (
                    wave.astype(np.float32) if "flt" in fmt else (wave * 32767).astype(np.int16)
                )
                block = av.AudioFrame.from_ndarray(samples[None], format=fmt, layout="mono")
                block.sample_rate, block.pts = 48000, start
                out.mux(sound.encode(block))
            out.mux(sound.encode(None))


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clips")
    made = {
        "mp4": root / "clip.mp4",  # H.264 + AAC, 25 fps, rotated 90 degrees
        "mkv": root / "vfr.mkv",  # H.264 + MP2, irregular timestamps
        "silent": root / "silent.mp4",  # H.264 only, index (moov) at the front
    }
    _write_clip(made["mp4"], rotation=90)
    _write_clip(
        made["mkv"],
        pts=[0, 40, 80, 200, 240, 250, 400, 440, 480, 520],
        time_base=Fraction(1, 1000),
        audio="mp2",
    )
    _write_clip(made["silent"], frames=30, audio=None, options={"movflags": "faststart"})
    return made


@pytest.fixture(scope="module")
def bicubic2() -> torch.nn.Module:
    return subpixel.load_model("bicubic", scale=2)


def _frames(source: Path | bytes, limit: int | None = None) -> list[av.VideoFrame]:
    opened = io.BytesIO(source) if isinstance(source, bytes) else source
    with av.open(opened) as container:
        return list(itertools.islice(container.decode(video=0), limit))


def _luma(frame: av.VideoFrame) -> np.ndarray:
    """The Y plane as (H, W) uint8 (``to_ndarray`` refuses odd yuv420p sizes)."""
    plane = frame.planes[0]
    rows = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
    return rows[: frame.height, : frame.width]


def _audio_packets(path: Path) -> list[bytes]:
    with av.open(path) as container:
        return [bytes(p) for p in container.demux(audio=0) if p.size]


def _rgb(frame: av.VideoFrame) -> np.ndarray:
    return frame.to_ndarray(format="rgb24", interpolation=_ACCURATE)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def _leftovers(folder: Path, keep: set[Path]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p not in keep)


# ---------------------------------------------------------------------------------------------
# Files: size, timing, audio, rotation


def test_mp4_keeps_frames_rate_timestamps_audio_and_rotation(
    clips: dict[str, Path], bicubic2: torch.nn.Module, tmp_path: Path
) -> None:
    calls: list[tuple[int, int | None]] = []
    target = tmp_path / "out.mp4"
    report = upscale_video(
        clips["mp4"], target, bicubic2, preset="ultrafast", progress=lambda *a: calls.append(a)
    )
    assert isinstance(report, VideoReport)
    assert (report.frames, report.input_size, report.output_size) == (10, (32, 24), (64, 48))
    assert (report.audio_streams, report.rotation) == (1, 90)
    assert calls == [(i, 10) for i in range(1, 11)]

    before, after = _frames(clips["mp4"]), _frames(target)
    assert len(after) == 10
    assert {(f.width, f.height) for f in after} == {(64, 48)}
    assert [f.time for f in after] == pytest.approx([f.time for f in before])
    assert [f.rotation for f in after] == [90] * 10
    with av.open(clips["mp4"]) as a, av.open(target) as b:
        assert b.streams.video[0].average_rate == a.streams.video[0].average_rate == 25
        assert b.streams.audio[0].codec_context.name == "aac"
    assert _audio_packets(target) == _audio_packets(clips["mp4"])  # copied, not re-encoded


def test_mkv_keeps_variable_timestamps_and_mp2_audio(
    clips: dict[str, Path], bicubic2: torch.nn.Module, tmp_path: Path
) -> None:
    target = tmp_path / "out.mkv"
    report = upscale_video(clips["mkv"], target, bicubic2, preset="ultrafast")
    assert (report.frames, report.audio_streams, report.rotation) == (10, 1, 0)
    times = [round(f.time, 3) for f in _frames(target)]
    assert times == [0.0, 0.04, 0.08, 0.2, 0.24, 0.25, 0.4, 0.44, 0.48, 0.52]
    assert _audio_packets(target) == _audio_packets(clips["mkv"])


def test_max_frames_and_options(
    clips: dict[str, Path], bicubic2: torch.nn.Module, tmp_path: Path
) -> None:
    target = tmp_path / "four.mkv"
    report = upscale_video(
        clips["silent"], target, bicubic2, max_frames=4, crf=30, preset="veryfast",
        pixel_format="yuv444p",
    )  # fmt: skip
    assert report.frames == 4
    with av.open(target) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv444p")
    assert len(_frames(target)) == 4


def test_output_file_has_ordinary_permissions(
    clips: dict[str, Path], bicubic2: torch.nn.Module, tmp_path: Path
) -> None:
    target = tmp_path / "out.mkv"
    upscale_video(clips["silent"], target, bicubic2, max_frames=1, preset="ultrafast")
    reference = tmp_path / "plain.txt"
    reference.write_text("x")
    assert target.stat().st_mode & 0o777 == reference.stat().st_mode & 0o777
    assert _leftovers(tmp_path, {target, reference}) == []


# ---------------------------------------------------------------------------------------------
# Pixels: the Y-plane path against the RGB pipeline of subpixel.upscale_image


def _upscale_to_y4m(source: Path, model: torch.nn.Module) -> list[av.VideoFrame]:
    raw = io.BytesIO()  # y4m: raw frames, no encoding loss in the comparison
    upscale_video(source, raw, model)
    return _frames(raw.getvalue())


def test_y_plane_path_matches_rgb_reference(
    clips: dict[str, Path], bicubic2: torch.nn.Module
) -> None:
    ours = _upscale_to_y4m(clips["mp4"], bicubic2)
    decoded = _frames(clips["mp4"])
    assert len(ours) == len(decoded) == 10
    for sr, lr in zip(ours, decoded, strict=True):
        reference = subpixel.upscale_image(_rgb(lr), bicubic2)
        assert _psnr(_rgb(sr), reference) > 40.0


def _chroma_dot_clip(kind: str, path: Path) -> Path:
    """A grey 32x16 frame whose only colour is one U sample, in a lossless H.264 .mkv (chroma
    sited left, the H.264 default) or in y4m tagged ``420jpeg`` (centred) or ``420mpeg2``."""
    width, height = 32, 16
    planes = np.full((height * 3 // 2, width), 128, np.uint8)
    u = np.full((height // 2, width // 2), 128, np.uint8)
    u[4, 8] = 228
    planes[height : height + height // 4] = u.reshape(height // 4, width)
    frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
    frame.pts = 0
    raw = kind != "h264"
    target: Path | io.BytesIO = io.BytesIO() if raw else path.with_suffix(".mkv")
    with av.open(target, "w", format="yuv4mpegpipe" if raw else None) as out:
        stream = out.add_stream("rawvideo" if raw else "libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if not raw:
            stream.options = {"qp": "0", "preset": "ultrafast"}  # lossless
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    if isinstance(target, Path):
        return target
    data = target.getvalue()
    assert b" C420jpeg XYSCSS=420JPEG" in data
    if kind == "y4m-mpeg2":
        data = data.replace(b" C420jpeg XYSCSS=420JPEG", b" C420mpeg2 XYSCSS=420MPEG2")
    path.with_suffix(".y4m").write_bytes(data)
    return path.with_suffix(".y4m")


def _blue_centroid(frame: av.VideoFrame) -> tuple[float, float]:
    """(x, y) centroid of the blue excess over the grey background, with swscale's decoding
    (which follows each frame's chroma location)."""
    blue = _rgb(frame)[..., 2].astype(np.float64)
    excess = blue - blue[0, 0]
    rows, cols = np.mgrid[0 : blue.shape[0], 0 : blue.shape[1]]
    return float((excess * cols).sum() / excess.sum()), float((excess * rows).sum() / excess.sum())


@pytest.mark.parametrize("scale", [2, 3])
@pytest.mark.parametrize("colour_space", ["y", "rgb"])
@pytest.mark.parametrize("target_kind", [".y4m", ".mkv", ".mkv/yuv444p"])
@pytest.mark.parametrize("source_kind", ["h264", "y4m-jpeg", "y4m-mpeg2"])
def test_chroma_stays_where_it_was(
    source_kind: str, target_kind: str, colour_space: str, scale: int, tmp_path: Path
) -> None:
    # Independent reference: decode to RGB (swscale places the chroma by the frame's siting),
    # upscale with subpixel.upscale_image; the colour must land at the same HR position. A
    # siting mistake moves it by half an HR pixel or more.
    source = _chroma_dot_clip(source_kind, tmp_path / "dot")
    if colour_space == "y":
        model = subpixel.load_model("bicubic", scale=scale)
    else:
        model = Bicubic(scale=scale, channels=3)
        describe(model, "bicubic", colour_space="rgb")
    suffix, _, pixel_format = target_kind.partition("/")
    target = tmp_path / f"out{suffix}"
    upscale_video(
        source, target, model, crf=0, preset="ultrafast", pixel_format=pixel_format or "yuv420p"
    )
    reference = subpixel.upscale_image(_rgb(_frames(source)[0]), model)
    assert _blue_centroid(av.VideoFrame.from_ndarray(reference)) == pytest.approx(
        _blue_centroid(_frames(target)[0]), abs=0.1
    )


def _cubic_loop(values: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Keys cubic (a = -0.5) at LR ``positions`` along the last axis, edge taps clamped."""
    from subpixel.bicubic import cubic

    out = np.zeros((*values.shape[:-1], len(positions)))
    last = values.shape[-1] - 1
    for m, x in enumerate(positions):
        for k in range(int(np.floor(x)) - 1, int(np.floor(x)) + 3):
            out[..., m] += cubic(np.array(x - k)) * values[..., min(max(k, 0), last)]
    return out


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("size", [(1, 1), (3, 2), (7, 11)])
def test_chroma_upscaler_against_matlab_bicubic_and_a_loop(
    scale: int, size: tuple[int, int]
) -> None:
    from subpixel.pipeline.video import _CENTRE, _LEFT, _ChromaUpscaler

    lr = np.random.default_rng(scale).uniform(0, 255, (2, *size))
    planes = torch.from_numpy(lr).float()
    # Centre to centre is a plain centred resize: MATLAB bicubic.
    centred = _ChromaUpscaler(scale, _CENTRE)(planes, _CENTRE)
    torch.testing.assert_close(centred, Bicubic(scale)(planes[None])[0], atol=1e-3, rtol=0)
    # Left to left: rows centred, HR column m read at m / r - (r - 1) / (4 r).
    hr_rows = (np.arange(size[0] * scale) + 0.5) / scale - 0.5
    hr_cols = np.arange(size[1] * scale) / scale - (scale - 1) / (4 * scale)
    rows = _cubic_loop(lr.swapaxes(-1, -2), hr_rows).swapaxes(-1, -2)
    expected = _cubic_loop(rows, hr_cols)
    sited = _ChromaUpscaler(scale, _LEFT)(planes, _LEFT)
    np.testing.assert_allclose(sited.numpy(), expected, atol=1e-3)


def test_rgb_network_path_matches_rgb_reference(clips: dict[str, Path]) -> None:
    net = Bicubic(scale=2, channels=3)
    describe(net, "bicubic", colour_space="rgb")
    ours = _upscale_to_y4m(clips["mp4"], net)
    for sr, lr in zip(ours, _frames(clips["mp4"]), strict=True):
        assert _psnr(_rgb(sr), subpixel.upscale_image(_rgb(lr), net)) > 40.0


class _Probe(torch.nn.Module):
    """A x2 'network' that records what it is fed: nearest-neighbour upscaling."""

    def __init__(self) -> None:
        super().__init__()
        self.card = ModelCard("bicubic", scale=2, channels=1)  # its facts: x2, luminance
        self.seen: list[torch.Tensor] = []

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        self.seen.append(lr.clone())
        return torch.nn.functional.interpolate(lr, scale_factor=2, mode="nearest")


def test_y_network_gets_studio_swing_luma_over_255(clips: dict[str, Path]) -> None:
    probe = _Probe()
    frames = _upscale_to_y4m(clips["mkv"], probe)
    first = _frames(clips["mkv"])[0]
    y = _luma(first)
    np.testing.assert_allclose(probe.seen[0][0, 0].numpy(), y / 255.0, atol=1e-6)
    # Nearest x2 of Y comes back exactly.
    np.testing.assert_array_equal(_luma(frames[0])[::2, ::2], y)


def test_full_range_video_is_mapped_to_studio_swing_and_back() -> None:
    clip = io.BytesIO()
    with av.open(clip, "w", format="yuv4mpegpipe") as out:
        stream = out.add_stream("rawvideo", rate=25)
        stream.width, stream.height, stream.pix_fmt = 16, 8, "yuvj420p"
        planes = np.full((12, 16), 128, np.uint8)
        planes[:8, :8], planes[:8, 8:] = 0, 255  # full-swing black | white
        frame = av.VideoFrame.from_ndarray(planes, format="yuvj420p")
        frame.pts = 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    clip.seek(0)
    probe, result = _Probe(), io.BytesIO()
    upscale_video(clip, result, probe)
    fed = probe.seen[0][0, 0].numpy() * 255
    assert fed.min() == pytest.approx(16) and fed.max() == pytest.approx(235)
    y = _luma(_frames(result.getvalue())[0])
    assert (y.min(), y.max()) == (0, 255)


@pytest.mark.parametrize("batch", [3, 16])
def test_frames_in_batches_are_the_frames_one_at_a_time(
    clips: dict[str, Path], batch: int, tmp_path: Path
) -> None:
    # The bundled default model, on this machine's default engine and precision; 10 frames in
    # batches of 3 (the last one short) or one batch larger than the clip.
    model = subpixel.load_model(scale=2)
    one, many = io.BytesIO(), io.BytesIO()
    upscale_video(clips["mkv"], one, model)
    calls: list[tuple[int, int | None]] = []
    report = upscale_video(
        clips["mkv"], many, model, batch=batch, progress=lambda *a: calls.append(a)
    )
    assert report.frames == 10 and [done for done, _ in calls] == list(range(1, 11))
    assert many.getvalue() == one.getvalue()
    # Timestamps and copied audio as without batches; max_frames inside a batch.
    target = tmp_path / "batched.mkv"
    report = upscale_video(clips["mkv"], target, model, batch=batch, max_frames=7)
    assert report.frames == 7 and len(_frames(target)) == 7
    times = [round(f.time, 3) for f in _frames(target)]
    assert times == [0.0, 0.04, 0.08, 0.2, 0.24, 0.25, 0.4]


def test_batches_of_full_range_frames_are_mapped_like_single_frames() -> None:
    clip = _y4m((16, 8), frames=5, pixel_format="yuvj420p")
    one, many = io.BytesIO(), io.BytesIO()
    model = subpixel.load_model("fsrcnn-s")
    upscale_video(io.BytesIO(clip), one, model)
    upscale_video(io.BytesIO(clip), many, model, batch=2)
    assert many.getvalue() == one.getvalue()


def test_a_batch_below_one_is_refused(clips: dict[str, Path], bicubic2: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match="batch"):
        upscale_video(clips["mkv"], io.BytesIO(), bicubic2, batch=0)


# ---------------------------------------------------------------------------------------------
# Odd sizes, file objects, stdin/stdout


def _y4m(size: tuple[int, int], frames: int = 3, pixel_format: str = "yuv420p") -> bytes:
    raw = io.BytesIO()
    with av.open(raw, "w", format="yuv4mpegpipe") as out:
        stream = out.add_stream("rawvideo", rate=24)
        stream.width, stream.height, stream.pix_fmt = *size, pixel_format
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(_scene(size[1], size[0], i), format="rgb24")
            frame = frame.reformat(format=pixel_format)
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return raw.getvalue()


def test_odd_sizes_drop_the_last_column_and_row() -> None:
    source, target = io.BytesIO(_y4m((33, 25))), io.BytesIO()
    bicubic3 = subpixel.load_model("bicubic", scale=3)
    report = upscale_video(source, target, bicubic3)
    assert (report.input_size, report.output_size) == ((33, 25), (98, 74))
    frames = _frames(target.getvalue())
    assert len(frames) == 3 and (frames[0].width, frames[0].height) == (98, 74)
    # Dropping, not resampling: the kept pixels are those of the full 99x75 result.
    lr = _luma(_frames(_y4m((33, 25)))[0])
    full = bicubic3.network(torch.from_numpy(lr.astype(np.float32))[None, None] / 255)  # 75x99
    expected = np.rint(full[0, 0].clamp(0, 1).numpy() * 255)[:74, :98]
    assert np.abs(_luma(frames[0]).astype(int) - expected).max() <= 1


def test_y4m_stdin_to_stdout_in_a_pipeline() -> None:
    script = (
        "import subpixel; from subpixel.pipeline.video import upscale_video; "
        "upscale_video('-', '-', subpixel.load_model('bicubic', scale=2))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], input=_y4m((20, 12)), capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.startswith(b"YUV4MPEG2 W40 H24 F24:1")
    frames = _frames(done.stdout)
    assert [(f.width, f.height) for f in frames] == [(40, 24)] * 3


# ---------------------------------------------------------------------------------------------
# Errors leave nothing behind


@pytest.mark.parametrize(
    "kind", ["text", "empty", "truncated-index", "truncated-data", "no-video", "missing"]
)
def test_bad_inputs_raise_video_error_and_leave_no_output(
    kind: str, clips: dict[str, Path], bicubic2: torch.nn.Module, tmp_path: Path
) -> None:
    source = tmp_path / f"in-{kind}.mp4"
    if kind == "text":
        source.write_text("this is not a video\n" * 20)
    elif kind == "empty":
        source.write_bytes(b"")
    elif kind == "truncated-index":  # moov at the end, cut off
        data = clips["mp4"].read_bytes()
        source.write_bytes(data[: len(data) // 2])
    elif kind == "truncated-data":  # moov at the front, media data cut off
        data = clips["silent"].read_bytes()
        source.write_bytes(data[: len(data) * 3 // 5])
    elif kind == "no-video":
        _write_clip(source, frames=0)
    target = tmp_path / "out.mp4"
    keep = {source} if source.exists() else set()
    with pytest.raises(VideoError) as error:
        upscale_video(source, target, bicubic2, preset="ultrafast")
    assert "\n" not in str(error.value)
    assert _leftovers(tmp_path, keep) == []


def test_a_matroska_file_cut_in_half_is_an_error(bicubic2: torch.nn.Module, tmp_path: Path) -> None:
    whole = tmp_path / "whole.mkv"  # Matroska lists no frame count: its duration tells
    _write_clip(whole, frames=100, audio="mp2")
    report = upscale_video(whole, tmp_path / "whole-x2.mkv", bicubic2, preset="ultrafast")
    assert report.frames == 100
    half = tmp_path / "half.mkv"
    half.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    target = tmp_path / "half-x2.mkv"
    with pytest.raises(VideoError) as error:
        upscale_video(half, target, bicubic2, preset="ultrafast")
    assert str(error.value).startswith(f"{half} is truncated or corrupt: its video ends at ")
    assert str(error.value).endswith(" of the 4.00 s it declares")
    assert not target.exists()


def test_a_y4m_cut_mid_frame_is_an_error(bicubic2: torch.nn.Module, tmp_path: Path) -> None:
    whole = _y4m((20, 12), frames=5)
    cut = whole[: len(whole) - 100]  # 100 of the fifth frame's 360 bytes are missing
    cut_here = "is truncated or corrupt: 266 bytes after the last whole frame"
    with pytest.raises(VideoError, match=rf"^the input {cut_here}$"):
        upscale_video(io.BytesIO(cut), io.BytesIO(), bicubic2)
    source = tmp_path / "cut.y4m"
    source.write_bytes(cut)
    with pytest.raises(VideoError, match=rf"^{re.escape(str(source))} {cut_here}$"):
        upscale_video(source, tmp_path / "out.y4m", bicubic2)
    assert not (tmp_path / "out.y4m").exists()
    # On stdin (a pipe: no size to compare with), through the command line.
    command = [sys.executable, "-m", "subpixel", "upscale", "-", "-o", "-", "--model", "bicubic"]
    done = subprocess.run([*command, "--scale", "2"], input=cut, capture_output=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.decode().strip().splitlines()[-1] == (f"subpixel: error: stdin {cut_here}")
    done = subprocess.run([*command, "--scale", "2"], input=whole, capture_output=True, timeout=60)
    assert done.returncode == 0 and len(_frames(done.stdout)) == 5


def test_bad_requests_raise_video_error_and_leave_no_output(
    clips: dict[str, Path], bicubic2: torch.nn.Module, tmp_path: Path
) -> None:
    source = tmp_path / "in.mp4"
    source.write_bytes(clips["mp4"].read_bytes())
    with pytest.raises(VideoError, match="overwrite the input"):
        upscale_video(source, source, bicubic2)
    with pytest.raises(VideoError, match="unknown video encoder"):
        upscale_video(source, tmp_path / "out.mp4", bicubic2, codec="no-such-codec")
    with pytest.raises(VideoError, match="encodes audio"):
        upscale_video(source, tmp_path / "out.mp4", bicubic2, codec="aac")
    with pytest.raises(VideoError, match="output format"):
        upscale_video(source, tmp_path / "out.unknown-extension", bicubic2)
    with pytest.raises(VideoError, match="folder does not exist"):
        upscale_video(source, tmp_path / "nowhere" / "out.mp4", bicubic2)
    assert source.read_bytes() == clips["mp4"].read_bytes()
    assert _leftovers(tmp_path, {source}) == []


def test_interruption_leaves_neither_output_nor_temporary(
    clips: dict[str, Path], bicubic2: torch.nn.Module, tmp_path: Path
) -> None:
    target = tmp_path / "out.mp4"
    target.write_bytes(b"previous result")

    def interrupt(done: int, total: int | None) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        upscale_video(clips["mp4"], target, bicubic2, preset="ultrafast", progress=interrupt)
    assert target.read_bytes() == b"previous result"
    assert _leftovers(tmp_path, {target}) == []


# ---------------------------------------------------------------------------------------------
# A real clip


def test_real_clip_first_frames(data_dir: Path, tmp_path: Path) -> None:
    source = data_dir / "video" / "slow_traffic_small.mp4"
    if not source.is_file():
        pytest.skip(f"{source} not found")
    bicubic3 = subpixel.load_model("bicubic", scale=3)
    target = tmp_path / "traffic_x3.mp4"
    report = upscale_video(source, target, bicubic3, max_frames=10, crf=0, preset="ultrafast")
    assert (report.frames, report.input_size, report.output_size) == (10, (640, 360), (1920, 1080))
    assert report.audio_streams == 1
    with av.open(source) as a, av.open(target) as b:
        assert b.streams.video[0].average_rate == a.streams.video[0].average_rate
        assert b.streams.audio[0].codec_context.name == "aac"
    before, after = _frames(source, limit=10), _frames(target)
    assert [f.time for f in after] == pytest.approx([f.time for f in before])
    for sr, lr in zip(after[:2], before[:2], strict=True):
        assert _psnr(_rgb(sr), subpixel.upscale_image(_rgb(lr), bicubic3)) > 40.0


def test_video_speed_benchmark_writes_its_table(data_dir: Path, tmp_path: Path) -> None:
    source = data_dir / "video" / "slow_traffic_small.mp4"
    if not source.is_file():
        pytest.skip(f"{source} not found")
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "video_speed.py"
    command = [sys.executable, str(script), "--networks", "fsrcnn-s-x3", "--frames", "3"]
    command += ["--presets", "ultrafast", "--out", str(tmp_path), "--device", "cpu"]
    for batch in ("1", "2"):  # one frame a call (a CPU's default) and a GPU's batches
        done = subprocess.run(
            [*command, "--batch", batch], capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        table = (tmp_path / "video-speed.md").read_text()
        assert "| fsrcnn-s-x3 | bundled |" in table and "| bicubic-x3 | none (fixed) |" in table
        assert "Decode alone:" in table and f"the networks on cpu, {batch} frame(s) a call" in table


# ---------------------------------------------------------------------------------------------
# Subtitle, data and attachment streams

_CUES = [(b"Bonjour", 0.0, 0.3), (b"le monde", 0.5, 0.2)]  # (text, start s, duration s)


def _write_with_streams(
    path: Path, *, subtitle: str | None = None, data: str | None = None, font: bool = False
) -> Path:
    """Ten frames of 16x16 H.264 plus a French subtitle stream (``subrip`` or ``mov_text``),
    a data stream (e.g. ``klv``) and an attached font, each if asked for."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 16, 16, "yuv420p"
        video.options = {"preset": "ultrafast"}
        text = out.add_mux_stream(subtitle) if subtitle else None
        if text is not None:
            text.time_base = Fraction(1, 1000)
            text.metadata["language"] = "fra"
        extra = out.add_data_stream(data) if data else None
        if font:
            out.add_attachment("font.ttf", "application/x-truetype-font", b"not really a font")
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(_scene(16, 16, i), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        for words, start, duration in _CUES if text is not None else []:
            payload = len(words).to_bytes(2, "big") + words if subtitle == "mov_text" else words
            packet = av.Packet(payload)
            packet.stream, packet.time_base = text, Fraction(1, 1000)
            packet.pts = packet.dts = round(start * 1000)
            packet.duration = round(duration * 1000)
            out.mux(packet)
        for k in range(3) if extra is not None else []:
            packet = av.Packet(b"reading %d" % k)
            packet.stream, packet.time_base = extra, Fraction(1, 1000)
            packet.pts = packet.dts = 300 * k
            out.mux(packet)
    return path


def _packets(path: Path, kind: str) -> list[tuple[bytes, float]]:
    """The payloads of a stream of ``kind`` and their times, gap fillers (mov_text's empty
    cues) left out."""
    with av.open(str(path)) as container:
        [stream] = [s for s in container.streams if s.type == kind]
        return [
            (bytes(p), round(float(p.pts * p.time_base), 3))
            for p in container.demux(stream)
            if p.size > 2
        ]


@pytest.mark.parametrize(
    ("subtitle", "source_name", "target_name"),
    [
        ("subrip", "in.mkv", "out.mkv"),
        ("mov_text", "in.mp4", "out.mp4"),
        ("mov_text", "in.mp4", "out.mov"),
    ],
)
def test_subtitles_are_copied_where_the_container_holds_them(
    subtitle: str, source_name: str, target_name: str, bicubic2: torch.nn.Module, tmp_path: Path
) -> None:
    source = _write_with_streams(tmp_path / source_name, subtitle=subtitle)
    target = tmp_path / target_name
    report = upscale_video(source, target, bicubic2, preset="ultrafast")
    assert (report.frames, report.subtitle_streams, report.left_out) == (10, 1, ())
    cues = _packets(target, "subtitle")
    assert cues == _packets(source, "subtitle")
    assert [time for _, time in cues] == [0.0, 0.5]
    with av.open(str(target)) as container:
        assert container.streams.subtitles[0].metadata.get("language") == "fra"


def test_data_streams_and_attachments_are_copied(bicubic2: torch.nn.Module, tmp_path: Path) -> None:
    source = _write_with_streams(tmp_path / "in.ts", data="klv")
    report = upscale_video(source, tmp_path / "out.ts", bicubic2, preset="ultrafast")
    assert (report.data_streams, report.left_out) == (1, ())
    assert _packets(tmp_path / "out.ts", "data") == _packets(source, "data")
    source = _write_with_streams(tmp_path / "in.mkv", subtitle="subrip", font=True)
    report = upscale_video(source, tmp_path / "out.mkv", bicubic2, preset="ultrafast")
    assert (report.subtitle_streams, report.data_streams, report.left_out) == (1, 1, ())
    with av.open(str(tmp_path / "out.mkv")) as container:
        [font] = container.streams.attachments
        assert (font.name, font.data) == ("font.ttf", b"not really a font")


def test_streams_the_output_cannot_hold_are_left_out_with_a_warning(
    bicubic2: torch.nn.Module, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = _write_with_streams(tmp_path / "in.mkv", subtitle="subrip", font=True)
    target = tmp_path / "out.mp4"
    with caplog.at_level("WARNING", logger="subpixel.pipeline.video"):
        report = upscale_video(source, target, bicubic2, preset="ultrafast")
    assert report.frames == 10
    assert report.left_out == (
        "subtitle stream #1 (srt, fra) left out: the mp4 format cannot hold srt subtitle",
        "attachment stream #2 (font.ttf) left out: the mp4 format cannot hold font.ttf attachment",
    )
    assert [r.getMessage() for r in caplog.records] == list(report.left_out)
    with av.open(str(target)) as container:
        assert [s.type for s in container.streams] == ["video"]
    # Into y4m (video only), everything else is left out, and said so.
    ts = _write_with_streams(tmp_path / "in.ts", data="klv")
    report = upscale_video(ts, io.BytesIO(), bicubic2)
    assert report.left_out == ("data stream #1 (klv) left out: y4m holds video only",)


def test_the_cli_warns_of_a_stream_it_leaves_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from subpixel.cli import main

    source = _write_with_streams(tmp_path / "in.mkv", subtitle="subrip")
    target = tmp_path / "out.mp4"
    args = ["upscale", str(source), "-o", str(target), "--model", "bicubic", "--scale", "2"]
    assert main([*args, "--engine", "torch", "--preset", "ultrafast"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "subpixel: warning: subtitle stream #1 (srt, fra) left out: the mp4 format cannot hold "
        "srt subtitle"
    ]
    assert target.exists()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("out.gif", "out.gif is an image file name"),
        ("out.png", "out.png is an image file name"),
        ("out.webm", "the webm format cannot hold libx264 video"),
        ("out.wav", "the wav format cannot hold libx264 video"),
    ],
)
def test_targets_that_cannot_hold_the_video_are_refused_before_any_work(
    name: str, message: str, clips: dict[str, Path], tmp_path: Path
) -> None:
    probe = _Probe()
    with pytest.raises(VideoError, match=message):
        upscale_video(clips["silent"], tmp_path / name, probe)
    assert probe.seen == []  # refused before the first frame
    assert list(tmp_path.iterdir()) == []
    # With a codec the container holds, .webm is fine.
    if name == "out.webm":
        upscale_video(clips["silent"], tmp_path / name, probe, codec="libvpx-vp9", max_frames=1)
        assert _frames(tmp_path / name)[0].width == 64
