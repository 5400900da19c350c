"""A real tagrate (``make run``'s supervisor on free ports, its own data
directory) and Debian's headless Chromium driven by Playwright, for the
browser UI tests. Screenshots go to ``tests/output/ui/`` (git-ignored)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.run.supervised import RunStack, free_port_block
from tests.support import REPO_ROOT

from .everyday import store_library

SCREENSHOTS = REPO_ROOT / "tests" / "output" / "ui"
# Where Debian's chromium-headless-shell package puts the browser.
BROWSER_CANDIDATES = (
    "chromium-headless-shell",
    "/usr/lib/chromium/chromium-headless-shell",
    "/usr/lib/chromium/chrome-headless-shell",
    "chromium",
)
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
NO_BROWSER = (
    "no headless Chromium: `make test` installs Debian's chromium-headless-shell (apt-get, as root) and "
    "Playwright for Python from requirements-test.txt; install them to run the browser UI tests"
)
# Uploads above this are refused (413), so the upload test can show that error with a small file.
UPLOAD_LIMIT = 1024 * 1024


def browser_path() -> str | None:
    """The headless Chromium binary, or None when none is installed."""
    for candidate in BROWSER_CANDIDATES:
        found = (
            shutil.which(candidate) if "/" not in candidate else (candidate if os.access(candidate, os.X_OK) else None)
        )
        if found:
            return found
    return None


@pytest.fixture(scope="package")
def browser():
    """One headless Chromium for the browser tests (Playwright's sync API).
    Package scope: Playwright's event loop runs in this thread until the
    last of them ends, not until the session does, so a module after them
    on the same xdist worker can still call asyncio.run()."""
    path = browser_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip(NO_BROWSER)
    if path is None:
        pytest.skip(NO_BROWSER)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path, args=BROWSER_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="package")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    print(f"\nUI screenshots: {SCREENSHOTS}")
    return SCREENSHOTS


def start_run_stack(base: Path, env: dict[str, str] | None = None) -> RunStack:
    """``make run`` (the real supervisor and all five processes) on free ports."""
    stack = RunStack(
        base / "data",
        base / "run.log",
        free_port_block(),
        # The flows press Train themselves: no automatic retraining unless asked.
        # Taught tags are looked for every second (the viewer's suggestions test).
        {
            "TAGRATE_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT),
            "TRAINER_RETRAIN_AFTER_RATINGS": "0",
            "TRAINER_TAUGHT_TAG_POLL_SECONDS": "1",
            "TRAINER_TAUGHT_TAG_SETTLE_SECONDS": "0",
            **(env or {}),
        },
    ).start()
    try:
        stack.wait_running(240)
    except BaseException:
        stack.kill_everything()
        raise
    return stack


@pytest.fixture(scope="package")
def run_stack(browser, tmp_path_factory) -> Iterator[RunStack]:
    """The whole system, started once for the UI tests (after the browser, so
    a machine without one does not start it for nothing)."""
    stack = start_run_stack(tmp_path_factory.mktemp("ui-stack"))
    try:
        yield stack
    finally:
        try:
            stack.stop()
        finally:
            stack.kill_everything()


def wait_for_tiles(page, names: list[str]) -> None:
    """Waits until the library grid shows exactly ``names``, in order: the
    previous view's tiles stay until a new listing arrives, so waiting for
    any tile can see the old ones (a view that never shows them fails after
    the timeout)."""
    shown = "[...document.querySelectorAll('#grid .tile')].map(t => t.dataset.image)"
    try:
        page.wait_for_function(f"names => JSON.stringify({shown}) === JSON.stringify(names)", arg=names, timeout=60_000)
    except PlaywrightTimeoutError:
        # Say what the grid shows: slow (nothing yet) and wrong (other names) fail alike otherwise.
        raise AssertionError(f"the grid shows {page.evaluate(shown)}, not {names}") from None


@pytest.fixture(scope="package")
def library_api(run_stack) -> Iterator[httpx.Client]:
    """An API client of the browser tests' ``make run`` stack (test_ui_everyday*.py)."""
    with httpx.Client(base_url=run_stack.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="package")
def library(library_api) -> dict[str, list[str]]:
    """The everyday tests' library, stored once (tests/ui/everyday.py)."""
    return store_library(library_api)
