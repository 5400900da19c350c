"""A real dataset service and gateway for the command line's tests, the
``tagrate`` command run as its own process, and real photographs."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import skimage.data
from PIL import Image

from tests.gateway.stack import Stack, start_stack
from tests.support import REPO_ROOT

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def photo_jpegs(count: int, seed: int = 0, side: int = 160) -> list[bytes]:
    """``count`` distinct JPEGs: random crops of scikit-image's photographs
    with a colour shift, ``side`` pixels square."""
    rng = np.random.default_rng(seed)
    sources = [getattr(skimage.data, name)() for name in PHOTOS]
    out = []
    for i in range(count):
        photo = sources[i % len(sources)]
        h, w = photo.shape[:2]
        crop = int(rng.integers(min(h, w) // 3, min(h, w)))
        y, x = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
        pixels = photo[y : y + crop, x : x + crop].astype(np.float32) * rng.uniform(0.7, 1.2, 3)
        img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).resize((side, side))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def start_cli_stack(tmp_path: Path, name: str = "server") -> Stack:
    """SQLite dataset service + gateway with the default upload limits."""
    return start_stack(
        f"sqlite:///{tmp_path / f'{name}.db'}", tmp_path / f"{name}-data", max_upload_bytes=20 << 20, max_bulk_files=256
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Stack]:
    stack = start_cli_stack(tmp_path)
    try:
        yield stack
    finally:
        stack.stop()


def cli_command(url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "tagrate_cli", "--url", url, *args]


def run_cli(
    url: str, *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``tagrate --url URL ARGS...`` in its own process (``env`` added to this one's environment)."""
    return subprocess.run(
        cli_command(url, *args),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
        check=False,
        env={**os.environ, **env} if env else None,
    )


def run_import(url: str, tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    """``tagrate import ARGS`` and its JSON summary."""
    summary = tmp_path / "summary.json"
    summary.unlink(missing_ok=True)
    result = run_cli(url, "import", *args, "--summary-json", str(summary))
    assert summary.exists(), result.stdout + result.stderr
    return result, json.loads(summary.read_text())


def ratings_of(url: str, user: str) -> dict[str, float]:
    """``user``'s ratings by stored name ({} for a user who does not exist)."""
    response = httpx.get(f"{url}/getuserdata", params={"user": user}, timeout=30)
    if response.status_code == 404:
        return {}
    assert response.status_code == 200, response.text
    return {item["image"]: item["rating"] for item in response.json()["images"]}


def stored_images(url: str, user: str) -> list[str]:
    """Every stored image's name (``user`` must exist), in name order."""
    response = httpx.get(f"{url}/getuserdata", params={"user": user, "rated": "all", "sort": "name-asc"}, timeout=30)
    assert response.status_code == 200, response.text
    return [item["image"] for item in response.json()["images"]]


@pytest.fixture
def write_files(tmp_path: Path) -> Callable[[dict[str, bytes]], Path]:
    """Writes {relative path: bytes} under tmp_path/collection; returns that folder."""

    def write(files: dict[str, bytes]) -> Path:
        root = tmp_path / "collection"
        for relative, data in files.items():
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return root

    return write
