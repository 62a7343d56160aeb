"""The web app's API through Starlette's test client: the same bytes as the CLI, clear 4xx
errors for bad input, limits, one job at a time, and nothing written outside a temporary
folder."""

from __future__ import annotations

import io
import os
import socket
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette", reason="the serve extra is not installed")
pytest.importorskip("python_multipart", reason="the serve extra is not installed")
pytest.importorskip("httpx", reason="Starlette's test client needs httpx")

with warnings.catch_warnings():  # Starlette 1.x asks for httpx2 in its test client
    warnings.filterwarnings("ignore", "Using `httpx` with")
    from starlette.testclient import TestClient

import subpixel.serve.app
from subpixel.catalogue import catalogue
from subpixel.cli import main
from subpixel.images import write_image
from subpixel.serve import Limits, create_app
from subpixel.serve.queue import UploadTooLarge, limit_body
from subpixel.serve.work import Answer, Upscalers, safe_filename

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with")

LOCAL = "http://127.0.0.1:8000"


def _client(limits: Limits | None = None) -> TestClient:
    return TestClient(create_app(limits, device="cpu"), base_url=LOCAL)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with _client() as test_client:
        yield test_client


def _rgb(h: int = 12, w: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png(pixels: np.ndarray | Image.Image) -> bytes:
    buffer = io.BytesIO()
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _post(client: TestClient, name: str, data: bytes, **fields: str) -> Any:
    return client.post("/api/upscale", files={"image": (name, data)}, data=fields)


# ---------------------------------------------------------------------------------- models
def test_models_lists_the_usable_models_with_costs(client: TestClient) -> None:
    answer = client.get("/api/models")
    assert answer.status_code == 200
    listing = answer.json()
    usable = [entry for entry in catalogue() if entry.usable]
    assert [m["name"] for m in listing["models"]] == [entry.name for entry in usable]
    espcn = next(m for m in listing["models"] if m["name"] == "espcn")
    assert espcn["scales"] == [2, 3, 4]
    assert espcn["parameters"] == 22_729
    assert set(espcn["macs_per_pixel"]) == {"x2", "x3", "x4"}
    assert listing["default"] in [m["name"] for m in listing["models"]]
    assert listing["precisions"][0] == "auto"
    assert listing["max_upload"] == Limits().max_upload


def test_the_page_and_its_files_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("app.js", "style.css"):
        assert f"/static/{name}" in page.text
        assert client.get(f"/static/{name}").status_code == 200


# ------------------------------------------------------------------ the CLI's bytes
def _sixteen_bit(path: Path) -> None:
    ramp = np.linspace(0, 65535, 12 * 10 * 3).reshape(12, 10, 3).astype(np.uint16)
    write_image(ramp, path)


def _write(kind: str, path: Path) -> None:
    if kind == "rgb":
        Image.fromarray(_rgb()).save(path)
    elif kind == "rgba":
        alpha = np.linspace(0, 255, 120).reshape(12, 10, 1).astype(np.uint8)
        Image.fromarray(np.concatenate([_rgb(), alpha], axis=2), "RGBA").save(path)
    elif kind == "16-bit":
        _sixteen_bit(path)
    else:
        Image.fromarray(_rgb()).save(path, quality=90)


@pytest.mark.parametrize(
    ("kind", "name", "model", "scale", "media_type"),
    [
        ("rgb", "in.png", "espcn", "2", "image/png"),
        ("rgba", "in.png", "bicubic", "3", "image/png"),
        ("16-bit", "in.png", "bicubic", "2", "image/png"),
        ("rgb", "in.png", "bicubic", "2.5", "image/png"),
        ("jpeg", "in.jpg", "espcn", "2", "image/jpeg"),
    ],
)
def test_upscale_answers_the_clis_bytes(
    client: TestClient,
    tmp_path: Path,
    kind: str,
    name: str,
    model: str,
    scale: str,
    media_type: str,
) -> None:
    source = tmp_path / name
    _write(kind, source)
    expected = tmp_path / f"cli{source.suffix}"
    assert (
        main(["upscale", str(source), "-o", str(expected), "--model", model, "--scale", scale]) == 0
    )
    answer = _post(client, name, source.read_bytes(), model=model, scale=scale)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == media_type
    assert (
        f'filename="in_x{float(scale):g}{source.suffix}"' in answer.headers["content-disposition"]
    )
    assert answer.content == expected.read_bytes()
    if kind == "16-bit":
        assert answer.content[24] == 16  # the IHDR bit depth


def test_defaults_are_the_clis(client: TestClient, tmp_path: Path) -> None:
    source = tmp_path / "in.png"
    Image.fromarray(_rgb(8, 6)).save(source)
    expected = tmp_path / "cli.png"
    assert main(["upscale", str(source), "-o", str(expected)]) == 0
    answer = _post(client, "in.png", source.read_bytes())
    assert answer.status_code == 200
    assert answer.content == expected.read_bytes()


def test_a_file_without_an_extension_is_known_by_its_signature(client: TestClient) -> None:
    answer = _post(client, "upload", _png(_rgb()), model="bicubic", scale="2")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(answer.content)).size == (20, 24)


# ----------------------------------------------------------------------------- errors
def _assert_error(answer: Any, status: int, *words: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    message = answer.json()["error"]
    for word in words:
        assert word in message, message


@pytest.mark.parametrize(
    ("name", "data", "status", "words"),
    [
        ("broken.png", b"\x89PNG\r\n\x1a\n" + os.urandom(200), 422, ("broken.png",)),
        ("cut.png", _png(_rgb(64, 64))[:300], 422, ("cut.png", "truncated")),
        ("empty.png", b"", 422, ("empty.png", "empty")),
        ("text.png", b"hello, world", 422, ("text.png", "not an image")),
        ("notes.txt", b"hello, world", 415, ("unsupported file type", ".txt")),
        ("noname", b"hello, world", 415, ("neither an image",)),
    ],
)
def test_bad_files_get_a_clear_4xx(
    client: TestClient, name: str, data: bytes, status: int, words: tuple[str, ...]
) -> None:
    _assert_error(_post(client, name, data, model="bicubic", scale="2"), status, *words)


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"model": "../weights.safetensors"}, ("unknown model", "espcn")),
        ({"model": "espcn-7"}, ("unknown model",)),  # no bundled weights
        ({"scale": "1"}, ("scale must be above 1",)),
        ({"scale": "17"}, ("at most 16",)),
        ({"scale": "nan"}, ("scale",)),
        ({"scale": "two"}, ("scale must be a number",)),
        ({"precision": "float8"}, ("unknown precision", "float32")),
    ],
)
def test_bad_fields_get_a_400(
    client: TestClient, fields: dict[str, str], words: tuple[str, ...]
) -> None:
    _assert_error(_post(client, "in.png", _png(_rgb()), **fields), 400, *words)


def test_an_upload_not_in_the_image_field_is_refused(client: TestClient) -> None:
    answer = client.post("/api/upscale", files={"file": ("in.png", _png(_rgb()))})
    _assert_error(answer, 400, "'image'")
    _assert_error(client.post("/api/upscale", data={"image": "in.png"}), 400, "'image'")


def test_too_many_pixels_is_refused_before_decoding() -> None:
    with _client(Limits(max_pixels=100)) as small:
        answer = _post(small, "big.png", _png(_rgb(12, 10)), model="bicubic", scale="2")
    _assert_error(answer, 422, "big.png", "120", "over the limit of 100")


def test_an_upload_over_the_limit_is_refused() -> None:
    data = _png(_rgb(64, 64))  # about 12 KiB of noise
    with _client(Limits(max_upload=4096)) as small:
        _assert_error(_post(small, "in.png", data), 413, "over the limit")
        # No Content-Length (chunked): stopped while it streams in.
        boundary = "b0undary"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="in.png"'
            "\r\nContent-Type: image/png\r\n\r\n"
        ).encode()
        parts = [
            head,
            *(os.urandom(16 * 1024) for _ in range(8)),
            f"\r\n--{boundary}--\r\n".encode(),
        ]
        answer = small.post(
            "/api/upscale",
            content=iter(parts),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        _assert_error(answer, 413, "over the limit")
        # A file over the limit inside a body under it (the envelope's allowance).
        _assert_error(_post(small, "in.png", os.urandom(4096 + 100)), 413, "over the limit")


def test_a_body_is_stopped_as_it_streams_in() -> None:
    pulled: list[int] = []

    async def receive() -> dict[str, Any]:
        pulled.append(1000)
        return {"type": "http.request", "body": b"x" * 1000, "more_body": True}

    async def drain() -> None:
        limited = limit_body(receive, 2500)
        while True:
            await limited()

    with pytest.raises(UploadTooLarge):
        anyio.run(drain)
    assert sum(pulled) == 3000  # the third chunk passes the limit; no fourth is read


def test_other_sites_and_host_names_are_refused(client: TestClient) -> None:
    answer = client.post(
        "/api/upscale",
        files={"image": ("in.png", _png(_rgb()))},
        headers={"Origin": "https://example.com"},
    )
    _assert_error(answer, 403, "other sites")
    with TestClient(create_app(device="cpu"), base_url="http://rebound.example:8000") as other:
        assert other.get("/api/models").status_code == 400
    with TestClient(
        create_app(device="cpu", allowed_hosts=None), base_url="http://a.b"
    ) as any_host:
        assert any_host.get("/api/models").status_code == 200


# ---------------------------------------------------------------- nothing outside temp
_WRITES = ("os.rename", "os.replace", "os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree")
_watching: list[str] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _watching is None:
        return
    if event == "open":
        path, mode, flags = args
        writing = (mode is not None and any(c in str(mode) for c in "wax+")) or (
            mode is None and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        )
        if writing and isinstance(path, str | bytes | os.PathLike):
            _watching.append(os.fsdecode(path))
    elif event in _WRITES and not (event.startswith("os.") and args[-1] not in (-1, None)):
        # Names relative to a folder's descriptor (shutil.rmtree's) are covered by its event.
        _watching.extend(
            os.fsdecode(a) for a in args[:2] if isinstance(a, str | bytes | os.PathLike)
        )


@pytest.mark.parametrize(
    "name", ["../../etc/passwd.png", "..\\..\\windows\\evil.png", "/tmp/x/.png"]
)
def test_a_request_path_never_reaches_the_file_system(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    global _watching
    temp = tmp_path / "temp"
    cwd = tmp_path / "a" / "b"
    temp.mkdir()
    cwd.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.chdir(cwd)
    data = _png(_rgb())
    assert _post(client, "warm.png", data, model="bicubic", scale="2").status_code == 200
    if not getattr(sys, "_serve_audit", False):
        sys.addaudithook(_audit)
        sys._serve_audit = True  # type: ignore[attr-defined]
    _watching = []
    try:
        answer = _post(client, name, data, model="bicubic", scale="2")
    finally:
        written, _watching = _watching, None
    assert answer.status_code == 200, answer.text
    assert "filename=" in answer.headers["content-disposition"]
    assert "/" not in answer.headers["content-disposition"].split("filename=")[1]
    assert written, "the audit hook saw no write"
    for path in written:
        assert Path(path).resolve().is_relative_to(temp.resolve()), path
    assert list(temp.iterdir()) == []  # the private folder is gone
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_safe_filename() -> None:
    assert safe_filename("../../etc/passwd.png") == "passwd.png"
    assert safe_filename("..\\..\\evil.PNG") == "evil.PNG"
    assert safe_filename('a"b;c\r\n.png') == "a_b_c__.png"
    assert safe_filename("café photo (1).jpg") == "café photo (1).jpg"
    assert safe_filename("") == safe_filename(None) == "image"
    assert safe_filename("...") == "image"
    assert safe_filename("/") == "image"
    assert len(safe_filename("x" * 500 + ".png")) <= 120


def test_a_non_ascii_name_is_offered_in_utf8(client: TestClient) -> None:
    answer = _post(client, "café.png", _png(_rgb()), model="bicubic", scale="2")
    disposition = answer.headers["content-disposition"]
    assert "filename*=UTF-8''caf%C3%A9_x2.png" in disposition
    assert 'filename="caf__x2.png"' in disposition


# ------------------------------------------------------------------- one job at a time
def test_jobs_run_one_at_a_time_and_the_queue_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    running: list[str] = []
    overlap: list[int] = []

    def held(order: Any, data: bytes, upscalers: Any, max_pixels: Any, progress: Any) -> Answer:
        running.append(order.filename)
        overlap.append(len(running))
        progress(1, 4)
        release.wait(30)
        running.remove(order.filename)
        return Answer("image/png", "out.png", content=data)

    monkeypatch.setattr(subpixel.serve.app, "upscale_upload", held)
    answers: dict[str, Any] = {}
    with _client(Limits(max_waiting=1)) as small:

        def send(job: str) -> None:
            answers[job] = small.post(
                f"/api/upscale?job={job}", files={"image": (f"{job}.png", _png(_rgb()))}
            )

        def state(job: str) -> dict[str, Any]:
            answer = small.get(f"/api/jobs/{job}")
            return answer.json() if answer.status_code == 200 else {}

        first = threading.Thread(target=send, args=("first",))
        first.start()
        _wait_for(lambda: state("first").get("state") == "upscaling")
        assert state("first") == {"state": "upscaling", "ahead": 0, "done": 1, "total": 4}
        second = threading.Thread(target=send, args=("second",))
        second.start()
        _wait_for(lambda: state("second").get("state") == "queued")
        assert state("second")["ahead"] == 1
        _assert_error(_post(small, "third.png", _png(_rgb())), 503, "busy")
        release.set()
        first.join(30)
        second.join(30)
        assert small.get("/api/jobs/first").status_code == 404  # answered: forgotten
    assert answers["first"].status_code == answers["second"].status_code == 200
    assert overlap == [1, 1]


def _wait_for(condition: Any, tries: int = 3000) -> None:
    for _ in range(tries):
        if condition():
            return
        threading.Event().wait(0.01)
    raise AssertionError("the condition never held")


def test_a_job_id_is_checked(client: TestClient) -> None:
    _assert_error(client.post("/api/upscale?job=../x", files={"image": ("a.png", b"")}), 400, "job")
    _assert_error(client.get("/api/jobs/nothing"), 404, "no such job")


def test_ready_models_are_kept_per_model_scale_and_precision() -> None:
    import torch

    upscalers = Upscalers(torch.device("cpu"), keep=2)
    first = upscalers.get("bicubic", 2, "auto")
    assert upscalers.get("bicubic", 2, "auto") is first
    assert upscalers.get("bicubic", 2, "float32") is not first
    upscalers.get("bicubic", 3, "auto")
    assert upscalers.get("bicubic", 2, "auto") is not first  # the oldest was dropped


# ---------------------------------------------------------------------------- video
def test_a_video_is_upscaled_like_the_cli(client: TestClient, tmp_path: Path) -> None:
    av = pytest.importorskip("av", reason="video needs the video extra (PyAV)")
    source = tmp_path / "clip.mp4"
    with av.open(str(source), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(_rgb(24, 32, seed=i), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    expected = tmp_path / "cli.mp4"
    assert (
        main(["upscale", str(source), "-o", str(expected), "--model", "bicubic", "--scale", "2"])
        == 0
    )
    answer = _post(client, "clip.mp4", source.read_bytes(), model="bicubic", scale="2")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "video/mp4"
    assert 'filename="clip_x2.mp4"' in answer.headers["content-disposition"]
    assert answer.content == expected.read_bytes()
    _assert_error(
        _post(client, "clip.mp4", source.read_bytes(), model="bicubic", scale="2.5"),
        422,
        "own scale",
    )
    _assert_error(
        _post(client, "clip.mp4", b"not a video", model="bicubic", scale="2"), 422, "clip.mp4"
    )


# ------------------------------------------------------------------------------ CLI
def test_cli_serve_says_which_extra_is_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for module in [
        m for m in sys.modules if m == "subpixel.serve" or m.startswith("subpixel.serve.")
    ]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "starlette", None)
    assert main(["serve"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['subpixel: error: the web app needs starlette: pip install "subpixel[serve]"']


def test_cli_serve_refuses_a_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port), "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot listen on 127.0.0.1:{port}" in err[0], err


def test_cli_serve_checks_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--port", "70000"])
    assert main(["serve", "--max-upload", "0"]) == 1
    assert "--max-upload must be at least 1" in capsys.readouterr().err
