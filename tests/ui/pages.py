"""Opening the UI in a browser page that records every uncaught error and
console error, and checks at the end that there were none."""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

# Chromium logs every 4xx/5xx fetch as a console error ("Failed to load
# resource ..."), also one the page asked for on purpose and handled (a 404
# from an unknown user, a 409 "already up to date"). Those are checked as
# what they are: the HTTP status, never a 5xx. Anything else is a bug.
RESOURCE_ERROR = re.compile(r"Failed to load resource: the server responded with a status of (\d{3})")

PHONE = {"width": 360, "height": 740}
PHONE_390 = {"width": 390, "height": 844}  # a current phone (issue 22's size)
DESKTOP = {"width": 1280, "height": 800}


class Recorder:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.statuses: list[int] = []

    def console(self, message) -> None:
        if message.type != "error":
            return
        match = RESOURCE_ERROR.search(message.text)
        if match:
            self.statuses.append(int(match.group(1)))
        else:
            self.errors.append(f"console: {message.text}")

    def page_error(self, error) -> None:
        self.errors.append(f"uncaught: {error}")

    def check(self) -> None:
        assert not self.errors, "\n".join(self.errors)
        assert not [s for s in self.statuses if s >= 500], f"server errors seen by the page: {self.statuses}"


@contextmanager
def ui_page(browser, base_url: str, viewport: dict[str, int] = DESKTOP, **options) -> Iterator:
    """A fresh browser context (own cookies and storage) and page on
    ``base_url``; ``options`` go to the context (``color_scheme``, ``has_touch``)."""
    context = browser.new_context(base_url=base_url, viewport=viewport, **options)
    context.set_default_timeout(20_000)
    page = context.new_page()
    recorder = Recorder()
    page.on("console", recorder.console)
    page.on("pageerror", recorder.page_error)
    page.recorder = recorder
    try:
        yield page
        recorder.check()
    finally:
        context.close()


def shoot(page, folder: Path, name: str) -> None:
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)


def sign_in(page, user: str) -> None:
    """With access control off: pick a user name."""
    page.goto("/")
    page.fill("#user-name", user)
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("#who-name")


def distinct_image(fmt: str, seed: int, size: tuple[int, int] = (64, 64)) -> bytes:
    """A picture of its own per seed: a random 4x4 pattern of colour blocks
    plus noise. (The shared gradients of tests.imagefactory look alike to a
    perceptual hash: dozens of them would be near-duplicates of each other
    for the duplicate finder's tests that share this session's stack.)"""
    rng = np.random.default_rng(seed)
    blocks = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), "RGB").resize(size, Image.NEAREST)
    pixels = np.clip(np.asarray(blocks, np.float32) + rng.normal(0, 12, (size[1], size[0], 3)), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), "RGB").save(buf, format=fmt)
    return buf.getvalue()


def wait_for(check, timeout: float = 120.0, what: str = "condition"):
    """``check()``'s first truthy answer, polled every 0.25 s; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)
