"""The README's pictures of ``subpixel serve``: the page after upscaling the sample photo,
and the top of the page after a truncated file.

Run from the repository root (needs the serve extra, playwright and Chromium):
``python docs/serve_screenshot.py [--chromium /usr/bin/chromium]`` writes docs/serve.png and
docs/serve-error.png.
"""

from __future__ import annotations

import argparse
import io
import shutil
import threading
from pathlib import Path

import uvicorn
from PIL import Image
from playwright.sync_api import sync_playwright

from subpixel.serve import create_app, listen, url_of

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chromium", default=shutil.which("chromium"), help="the browser")
    parser.add_argument("-o", "--output", default=str(ROOT / "docs"), help="the folder")
    args = parser.parse_args()

    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        threading.Event().wait(0.05)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, headless=True)
            page = browser.new_page(viewport={"width": 960, "height": 900})
            page.goto(url_of(sock))
            page.wait_for_selector("#model option", state="attached")
            page.set_input_files("#file", str(ROOT / "examples" / "cat.png"))
            page.wait_for_selector('#result[data-ready="image"]')
            box = page.locator("#compare").bounding_box()
            assert box is not None
            # The divider a little left of the middle, the zoomed crops on the left eye.
            page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * 0.42, box["y"] + box["height"] * 0.5)
            page.mouse.up()
            page.mouse.move(box["x"] + box["width"] * 0.36, box["y"] + box["height"] * 0.5)
            shots = {"serve.png": page.screenshot(full_page=True)}
            photo = (ROOT / "examples" / "cat.png").read_bytes()
            cut = {"name": "cut.png", "mimeType": "image/png", "buffer": photo[:20000]}
            page.set_input_files("#file", files=[cut])
            page.wait_for_selector("#error", state="visible")
            top = page.locator("#error").bounding_box()
            assert top is not None
            clip = {"x": 0, "y": 0, "width": 960, "height": top["y"] + top["height"] + 16}
            shots["serve-error.png"] = page.screenshot(clip=clip)
            browser.close()
    finally:
        server.should_exit = True
        thread.join(30)
    for name, shot in shots.items():
        # 256 colours keep the page sharp and the file small.
        path = Path(args.output, name)
        Image.open(io.BytesIO(shot)).convert("RGB").quantize(256).save(path, optimize=True)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
