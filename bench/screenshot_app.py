"""Screenshots of the app's Image tab on real photos, in headless Chromium (Debian ``chromium`` +
PyPI ``playwright``), to look at: readable text, visible skeletons, ellipses that leave the photo.

    python bench/screenshot_app.py [PHOTO ...] [--out bench/out/screenshots] [--detector full-frame]

Offline: the demo model (trained on generated figures, so skeletons on real photos are weak) and
the full-frame detector. Each photo: the page after *Estimate poses* (``NAME-page.png``) and the
annotated image itself (``NAME-annotated.png``). Writes only under ``--out`` (git-ignored).
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
from pathlib import Path

os.environ.setdefault("RLE_POSE_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # this checkout's rle_app, not an installed one
PHOTOS = sorted((ROOT / "tests/data/real/coco").glob("*.jpg"))   # more: pass image paths as arguments


DRAWN = "() => [...document.querySelectorAll('#image-annotated img')].some(i => i.naturalWidth > 0)"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def shoot(photo: Path, out: Path, detector: str) -> None:
    from playwright.sync_api import sync_playwright

    from rle_app.cli import build_app
    demo, allowed = build_app("demo", detector=detector, device="cpu", image=str(photo), offline=True)
    port = _free_port()
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port,
                        allowed_paths=allowed, quiet=True)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                         headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1500})
            page.goto(f"http://127.0.0.1:{port}/", wait_until="load", timeout=60_000)
            page.get_by_role("button", name="Estimate poses").wait_for(timeout=60_000)
            page.wait_for_timeout(3000)                      # the page wires its events after load
            page.get_by_role("button", name="Estimate poses").click()
            for _ in range(240):                             # the annotated image, up to 2 minutes
                if page.evaluate(DRAWN):
                    break
                page.wait_for_timeout(500)
            page.wait_for_timeout(1500)
            page.screenshot(path=str(out / f"{photo.stem}-page.png"), full_page=True)
            page.locator("#image-annotated").screenshot(path=str(out / f"{photo.stem}-annotated.png"))
            browser.close()
    finally:
        demo.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", nargs="*", type=Path, default=PHOTOS)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/out/screenshots")
    parser.add_argument("--detector", default="full-frame")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for photo in args.photos:
        shoot(photo, args.out, args.detector)
        print(f"{photo.name}: {args.out / (photo.stem + '-page.png')}")


if __name__ == "__main__":
    main()
