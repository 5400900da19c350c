"""A disk that fills up (issue 23, finding 4), on a small tmpfs this test
mounts (as root; skipped otherwise): uploads are refused with 507
``insufficient_storage`` before anything is written once the free space is
below TAGRATE_MIN_FREE_BYTES, a disk that fills up anyway is a 507 too (never
a 500), /readyz reports it, nothing stored before is damaged and nothing
half-written is left, and uploads work again once space is freed, without a
restart. Runs on SQLite and PostgreSQL (the blobs live on the tmpfs either
way; with SQLite the database file does too)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tagrate_common.files import STORAGE_CHECK_SECONDS, TEMP_PREFIX
from tagrate_dataset.server import create_server
from tests.support import dataset_settings

from .conftest import TEST_UPLOAD_LIMIT, GatewayServer, gateway_settings

MiB = 1024 * 1024
TMPFS_BYTES = 8 * MiB
RESERVE = 2 * MiB


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill up needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (a container without CAP_SYS_ADMIN?): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _noise(seed: int, side: int = 280) -> bytes:
    """An incompressible PNG of about side*side*3 bytes."""
    from io import BytesIO

    from PIL import Image

    image = Image.frombytes("RGB", (side, side), hashlib.shake_256(str(seed).encode()).digest(side * side * 3))
    out = BytesIO()
    image.save(out, "PNG", compress_level=0)
    return out.getvalue()


def _wait_ready(http: httpx.Client, want: int) -> httpx.Response:
    deadline = time.monotonic() + STORAGE_CHECK_SECONDS * 5 + 5
    while True:
        response = http.get("/readyz")
        if response.status_code == want or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_full_disk_refuses_uploads_with_507_and_recovers(tmpfs: Path, backend: str, make_pg_database) -> None:
    url = f"sqlite:///{tmpfs / 'tagrate.db'}" if backend == "sqlite" else make_pg_database()
    dataset = create_server(dataset_settings(tmpfs, url, min_free_bytes=RESERVE, max_upload_bytes=TEST_UPLOAD_LIMIT))
    addr = f"127.0.0.1:{dataset.start()}"
    gateway = GatewayServer(gateway_settings(addr, tmpfs, spool_dir=None)).start()
    stored: dict[str, bytes] = {}
    filler = tmpfs / "filler"
    try:
        with httpx.Client(base_url=gateway.url, timeout=60) as http:
            # Ready once the gateway's first health checks answer (under a
            # loaded machine the first one can outlast its 2 s deadline).
            ready = _wait_ready(http, 200)
            assert ready.status_code == 200, ready.text
            statuses = []
            for seed in range(60):
                data = _noise(seed)
                response = http.post(
                    "/addrating", data={"user": "alice", "rating": "0.5"}, files={"image": (f"{seed}.png", data)}
                )
                statuses.append(response.status_code)
                assert response.status_code in (200, 507), response.text
                if response.status_code == 200:
                    stored[response.json()["image"]] = data
                else:
                    assert response.json()["code"] == "insufficient_storage"
                    break
            assert statuses[-1] == 507 and len(stored) >= 2, statuses
            # Refused before writing: the reserve is still free.
            left = os.statvfs(tmpfs).f_bavail * os.statvfs(tmpfs).f_frsize
            assert left >= RESERVE - 300_000
            not_ready = _wait_ready(http, 503)
            assert not_ready.status_code == 503 and not_ready.json()["services"].get("storage") == "LOW_DISK"

            # The disk fills up for real (another writer), with the reserve check out of the way:
            # the blob write itself hits ENOSPC and is a 507, never a 500.
            dataset._blobs.min_free_bytes = 0
            with contextlib.suppress(OSError), open(filler, "wb") as out:
                while True:
                    out.write(b"\0" * 65536)
            full = http.post(
                "/addrating", data={"user": "alice", "rating": "0.5"}, files={"image": ("f.png", _noise(999))}
            )
            assert full.status_code == 507 and full.json()["code"] == "insufficient_storage", full.text
            # A rating change on the full disk: done, or a 507 (never a 500 or "database unavailable").
            first = next(iter(stored))
            change = http.post("/updaterating", json={"filename": first, "user": "alice", "rating": 0.9})
            assert change.status_code in (200, 507), change.text

            # Nothing stored before is damaged, nothing half-written is left.
            for name, data in stored.items():
                got = http.get("/getimage", params={"image": name})
                assert got.status_code == 200 and got.content == data
            assert not [p for p in (tmpfs / "blobs").rglob(f"{TEMP_PREFIX}*")]

            # Space is freed: uploads work again, no restart.
            filler.unlink()
            dataset._blobs.min_free_bytes = RESERVE
            for name in list(stored)[: len(stored) // 2]:
                removed = http.post("/deleteimage", data={"image": name})
                assert removed.status_code == 200, removed.text
                del stored[name]
            assert _wait_ready(http, 200).status_code == 200
            again = http.post(
                "/addrating", data={"user": "alice", "rating": "0.5"}, files={"image": ("g.png", _noise(1000, 200))}
            )
            assert again.status_code == 200, again.text
            listed = http.get("/getuserdata", params={"user": "alice"})
            assert listed.status_code == 200
    finally:
        gateway.stop()
        dataset.stop(0)
