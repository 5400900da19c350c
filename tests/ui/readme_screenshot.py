"""Makes the README's screenshot (docs/images/ui.png) from a real stack:

    .venv/bin/python -m tests.ui.readme_screenshot [docs/images/ui.png]

`make run`'s supervisor with every service on free ports and a fresh data
folder, real photographs (views of scikit-image's sample photos) imported
with `tagrate import` and rated by one user, that user's model trained,
then the library in headless Chromium at 1280x800 sorted "For you". The
PNG is scaled down to a palette image so the README stays light. Not a test:
run it by hand when the UI changes.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from tagrate_common.vision.onnx_models import _sample_photo
from tests.support import REPO_ROOT
from tests.ui.conftest import BROWSER_ARGS, browser_path, start_run_stack
from tests.ui.pages import DESKTOP, sign_in

PHOTOS = ("chelsea", "astronaut", "coffee", "rocket", "motorcycle_left", "camera", "brick", "grass", "gravel")
VIEWS_PER_PHOTO = 4
USER = "alice"
WIDTH = 1024  # of the saved PNG (the page is shot at 1280x800)


def write_photos(folder: Path) -> list[str]:
    """Square JPEG views (crops and flips) of the sample photos; their names."""
    rng = np.random.default_rng(7)
    names = []
    for photo_name in PHOTOS:
        photo = Image.fromarray(_sample_photo(photo_name))
        for i in range(VIEWS_PER_PHOTO):
            side = int(min(photo.size) * rng.uniform(0.55, 1.0))
            left = int(rng.integers(0, photo.width - side + 1))
            top = int(rng.integers(0, photo.height - side + 1))
            view = photo.crop((left, top, left + side, top + side)).resize((384, 384))
            if i % 2:
                view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            name = f"{photo_name.replace('_left', '')}-{i + 1}.jpg"
            view.save(folder / name, quality=88)
            names.append(name)
    return names


def ratings_csv(names: list[str], path: Path) -> None:
    """The user likes cats and coffee, not bricks and grass; rates two thirds."""
    taste = {"chelsea": 6, "coffee": 5, "astronaut": 4, "rocket": 4, "motorcycle": 3, "camera": 2}
    taste |= {"gravel": 1, "brick": 0, "grass": 1}
    rows = ["path,user,rating"]
    for i, name in enumerate(names):
        if i % 4 == 3:
            continue  # left for "For you"
        step = taste[name.split("-")[0]]
        rows.append(f"{name},{USER},{step / 6:.4f}")
    path.write_text("\n".join(rows) + "\n")


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(1)


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO_ROOT / "docs" / "images" / "ui.png"
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="tagrate-screenshot-") as tmp:
        base = Path(tmp)
        photos = base / "photos"
        photos.mkdir()
        names = write_photos(photos)
        ratings_csv(names, base / "ratings.csv")
        stack = start_run_stack(base)
        try:
            http = httpx.Client(base_url=stack.url, timeout=120)
            ratings = base / "ratings.csv"
            command = [sys.executable, "-m", "tagrate_cli", "--url", stack.url, "import", str(photos)]
            subprocess.run([*command, "--ratings", str(ratings)], check=True, cwd=REPO_ROOT)

            def settled() -> bool:
                state = http.get("/verifydatasets").json()
                return state["untagged_images"] == 0 and not any(k["pending"] for k in state["work"].values())

            wait_until(settled, 600, "tagging and embedding")
            trained = http.post("/trainuser", data={"user": USER})
            assert trained.status_code in (200, 202), trained.text

            def trained_state() -> bool:
                state = http.get("/trainerstatus").json()["status"]["state"]
                if state in ("failed", "stopped"):
                    raise RuntimeError(f"training {state}")
                return state == "succeeded"

            wait_until(trained_state, 600, "training")
            wait_until(lambda: http.get("/verifydatasets").json().get("pending_predictions", 0) == 0, 300, "scores")
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=browser_path(), args=BROWSER_ARGS)
                context = browser.new_context(base_url=stack.url, viewport=DESKTOP)
                page = context.new_page()
                sign_in(page, USER)
                page.goto("/#/library?sort=predicted-desc&rated=all")
                page.wait_for_selector("#grid .tile img")
                page.wait_for_function("[...document.querySelectorAll('#grid .tile img')].every(i => i.complete)")
                png = page.screenshot()
                browser.close()
        finally:
            try:
                stack.stop()
            finally:
                stack.kill_everything()
    shrink(Image.open(io.BytesIO(png)), out)


def shrink(image: Image.Image, out: Path) -> None:
    """1024 pixels wide, 128 colours: about 220 KiB instead of 1.2 MB."""
    image = image.convert("RGB")
    image = image.resize((WIDTH, image.height * WIDTH // image.width), Image.Resampling.LANCZOS)
    image.quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(out, optimize=True)
    print(f"{out}: {image.width}x{image.height}, {out.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
