"""BlobStore: content-addressed, atomic, idempotent originals and a
generate-once cache of resized versions."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from tagrate_common import files as files_module
from tagrate_common.files import TEMP_PREFIX, write_atomically
from tagrate_dataset.images import blobs as blobs_module
from tagrate_dataset.images.blobs import BlobStore
from tests.imagefactory import make_image


def _name(data: bytes, ext: str = "jpg") -> str:
    return f"{hashlib.sha256(data).hexdigest()}.{ext}"


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs", tmp_path / "cache")


def _all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_put_stores_content_addressed_and_get_returns_the_bytes(store: BlobStore) -> None:
    data = make_image("JPEG", seed=1)
    name = _name(data)
    assert not store.exists(name)
    assert store.put(name, data) is True
    assert store.exists(name)
    assert store.get(name) == data
    assert store.path(name) == store.blob_dir / name[:2] / name
    assert _all_files(store.blob_dir) == [f"{name[:2]}/{name}"]


def test_put_is_idempotent(store: BlobStore) -> None:
    data = make_image("PNG", seed=2)
    name = _name(data, "png")
    assert store.put(name, data) is True
    mtime = store.path(name).stat().st_mtime_ns
    assert store.put(name, data) is False
    assert store.path(name).stat().st_mtime_ns == mtime
    assert _all_files(store.blob_dir) == [f"{name[:2]}/{name}"]


def test_put_leaves_no_temp_files_even_when_the_write_fails(store: BlobStore, monkeypatch) -> None:
    data = make_image("JPEG", seed=3)
    name = _name(data)

    def failing_fsync(fd: int) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(files_module.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk gone"):
        store.put(name, data)
    assert not store.exists(name)
    assert _all_files(store.blob_dir) == []


def test_a_half_written_file_is_never_visible_under_its_name(store: BlobStore, monkeypatch) -> None:
    """The final name appears only by rename, after the data is complete."""
    data = make_image("JPEG", (256, 256), seed=4)
    name = _name(data)
    seen_during_write: list[bool] = []
    real_fsync = os.fsync

    def observing_fsync(fd: int) -> None:
        seen_during_write.append(store.path(name).exists())
        real_fsync(fd)

    monkeypatch.setattr(files_module.os, "fsync", observing_fsync)
    store.put(name, data)
    assert seen_during_write[0] is False  # the file's own fsync happens before the rename
    assert store.get(name) == data


def test_concurrent_puts_of_the_same_bytes_end_with_one_complete_file(store: BlobStore) -> None:
    data = make_image("JPEG", (128, 128), seed=5)
    name = _name(data)
    errors: list[BaseException] = []

    def put() -> None:
        try:
            store.put(name, data)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=put) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.get(name) == data
    assert _all_files(store.blob_dir) == [f"{name[:2]}/{name}"]


def test_resized_versions_fit_the_size_keep_the_aspect_and_are_cached(store: BlobStore) -> None:
    data = make_image("JPEG", (400, 200), seed=6)
    name = _name(data)
    store.put(name, data)
    small, content_type = store.resized(name, "JPEG", 100)
    assert content_type == "image/jpeg"
    assert Image.open(io.BytesIO(small)).size == (100, 50)
    cached = store.resized_path(name, "JPEG", 100)
    assert cached.read_bytes() == small
    mtime = cached.stat().st_mtime_ns
    again, _ = store.resized(name, "JPEG", 100)
    assert again == small
    assert cached.stat().st_mtime_ns == mtime  # served from the cache, not regenerated


def test_resized_never_upscales_and_non_jpeg_becomes_png(store: BlobStore) -> None:
    data = make_image("BMP", (40, 30), seed=7)
    name = _name(data, "bmp")
    store.put(name, data)
    out, content_type = store.resized(name, "BMP", 1000)
    assert content_type == "image/png"
    image = Image.open(io.BytesIO(out))
    assert (image.format, image.size) == ("PNG", (40, 30))


def test_concurrent_requests_generate_a_resized_version_once(store: BlobStore, monkeypatch) -> None:
    data = make_image("JPEG", (300, 300), seed=8)
    name = _name(data)
    store.put(name, data)
    calls: list[int] = []
    real_resize = blobs_module.resize_to_fit

    def counting_resize(*args, **kwargs):
        calls.append(1)
        time.sleep(0.05)  # widen the window in which a second generation could start
        return real_resize(*args, **kwargs)

    monkeypatch.setattr(blobs_module, "resize_to_fit", counting_resize)
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(store.resized(name, "JPEG", 64)[0])) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert len(set(results)) == 1 and len(results) == 6


def test_write_atomically_replaces_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b.bin"
    write_atomically(target, b"one")
    write_atomically(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["b.bin"]


def test_stale_temp_files_are_removed_and_fresh_ones_kept(store: BlobStore) -> None:
    old = store.blob_dir / "ab" / f"{TEMP_PREFIX}old"
    fresh = store.cache_dir / "64" / "cd" / f"{TEMP_PREFIX}fresh"
    for path in (old, fresh):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    assert sorted(p.name for p in store.temp_files()) == [f"{TEMP_PREFIX}fresh", f"{TEMP_PREFIX}old"]
    assert store.remove_stale_temp_files(600) == 1
    assert not old.exists() and fresh.exists()
    assert store.remove_stale_temp_files(0) == 1
    assert list(store.temp_files()) == []
