"""The web app end to end in a real headless Chromium (Debian's ``chromium``, driven by
Playwright): upload, wait, compare, download the CLI's bytes; a bad file's error shown."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no Chromium installed (Debian: apt-get install chromium)", allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the dev extra)")
pytest.importorskip("starlette", reason="the serve extra is not installed")
pytest.importorskip("python_multipart", reason="the serve extra is not installed")
uvicorn = pytest.importorskip("uvicorn", reason="the serve extra is not installed")

from playwright.sync_api import Browser, Page, sync_playwright  # noqa: E402

from subpixel.cli import main  # noqa: E402
from subpixel.serve import create_app, listen, url_of  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """The app on a free loopback port, served by uvicorn on a thread."""
    sock = listen("127.0.0.1", 0)
    app = create_app(device="cpu")
    running = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=running.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(3000):
        if running.started or not thread.is_alive():
            break
        threading.Event().wait(0.01)
    assert running.started, "uvicorn did not start"
    yield url_of(sock)
    running.should_exit = True
    thread.join(30)
    sock.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, server: str) -> Iterator[Page]:
    context = browser.new_context(accept_downloads=True, viewport={"width": 1000, "height": 900})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.goto(server)
    opened.wait_for_selector("#model option", state="attached")
    yield opened
    context.close()
    assert errors == [], errors  # no script error in the page


def _rgba(tmp_path: Path) -> Path:
    """A crop of the sample photo with a gradient alpha channel."""
    photo = np.asarray(Image.open(ROOT / "examples" / "cat.png").convert("RGB"))[40:88, 80:144]
    alpha = np.linspace(40, 255, photo.shape[1]).astype(np.uint8)[None, :, None]
    alpha = np.broadcast_to(alpha, (*photo.shape[:2], 1))
    path = tmp_path / "cat crop.png"
    Image.fromarray(np.concatenate([photo, alpha], axis=2), "RGBA").save(path)
    return path


def _clip_right(page: Page) -> float:
    """How much of the original is clipped away on the right, in percent."""
    style = page.locator("#before").evaluate("(image) => image.style.clipPath")
    return float(style.split()[1].rstrip("%"))


def test_upload_compare_and_download_the_clis_bytes(page: Page, tmp_path: Path) -> None:
    source = _rgba(tmp_path)
    expected = tmp_path / "cli.png"
    command = ["upscale", str(source), "-o", str(expected), "--model", "espcn", "--scale", "2"]
    assert main(command) == 0

    page.select_option("#model", "espcn")
    page.select_option("#scale", "2")
    page.set_input_files("#file", str(source))  # choosing a file starts the upscale
    page.wait_for_selector('#result[data-ready="image"]')
    assert page.locator("#error").is_hidden()
    assert "64x48 → 128x96" in page.locator("#result-info").inner_text()
    assert _clip_right(page) == pytest.approx(50)

    # Drag the comparison's divider to the left: less of the original shows.
    box: Any = page.locator("#compare").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.5, steps=8)
    page.mouse.up()
    assert float(page.locator("#slider").input_value()) < 30
    assert _clip_right(page) > 70
    zoomed = page.locator("#zoom-after").evaluate("(crop) => crop.style.backgroundImage")
    assert zoomed.startswith('url("blob:')

    with page.expect_download() as started:
        page.click("#download")
    download = started.value
    assert download.suggested_filename == "cat crop_x2.png"
    assert Path(download.path()).read_bytes() == expected.read_bytes()


def test_a_bad_file_shows_the_servers_message(page: Page, tmp_path: Path) -> None:
    cut = tmp_path / "cut.png"
    photo = (ROOT / "examples" / "cat.png").read_bytes()
    cut.write_bytes(photo[: len(photo) // 3])
    page.set_input_files("#file", str(cut))
    page.wait_for_selector("#error", state="visible")
    message = page.locator("#error").inner_text()
    assert "cut.png" in message and "truncated" in message, message
    assert page.locator("#status").is_hidden()


def test_a_dropped_file_is_upscaled(page: Page) -> None:
    data = list((ROOT / "examples" / "cat.png").read_bytes())
    dropped = page.evaluate_handle(
        """(bytes) => {
            const transfer = new DataTransfer();
            const file = new File([new Uint8Array(bytes)], "dropped.png", {type: "image/png"});
            transfer.items.add(file);
            return transfer;
        }""",
        data,
    )
    page.select_option("#model", "bicubic")
    page.select_option("#scale", "2")
    page.dispatch_event("#drop", "drop", {"dataTransfer": dropped})
    page.wait_for_selector('#result[data-ready="image"]')
    assert page.locator("#after").evaluate("(image) => image.naturalWidth") == 450
    assert "dropped_x2.png" in page.locator("#download").inner_text()
