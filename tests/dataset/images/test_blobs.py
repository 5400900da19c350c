"""BlobStore: content-addressed, atomic, idempotent originals and a
generate-once cache of resized versions, on both backends: a folder and an
S3 bucket (moto in server mode, tests/s3server.py)."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from PIL import Image

from tagrate_common import files as files_module
from tagrate_common.errors import Unavailable
from tagrate_common.files import TEMP_PREFIX, write_atomically
from tagrate_common.objectstore import FsObjects, S3Objects
from tagrate_dataset.images import blobs as blobs_module
from tagrate_dataset.images.blobs import BlobStore
from tests.imagefactory import make_image
from tests.s3server import MotoServer
from tests.support import free_port


def _name(data: bytes, ext: str = "jpg") -> str:
    return f"{hashlib.sha256(data).hexdigest()}.{ext}"


@pytest.fixture
def fs_store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs", tmp_path / "cache")


@pytest.fixture(params=["fs", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    """Each test using this runs once on each backend."""
    if request.param == "fs":
        return BlobStore(tmp_path / "blobs", tmp_path / "cache")
    moto: MotoServer = request.getfixturevalue("moto_server")
    bucket = moto.new_bucket()
    client = moto.client()
    return BlobStore(S3Objects(client, bucket, "t/blobs/"), S3Objects(client, bucket, "t/cache/"))


def _all_files(store: BlobStore) -> list[str]:
    return sorted(item.key for item in store.originals.list())


def _fs_root(store: BlobStore) -> Path:
    assert isinstance(store.originals, FsObjects)
    return store.originals.root


def test_put_stores_content_addressed_and_get_returns_the_bytes(store: BlobStore) -> None:
    data = make_image("JPEG", seed=1)
    name = _name(data)
    assert not store.exists(name)
    with pytest.raises(FileNotFoundError):
        store.get(name)
    assert store.put(name, data) is True
    assert store.exists(name)
    assert store.get(name) == data
    assert _all_files(store) == [f"{name[:2]}/{name}"]


def test_objects_land_under_the_configured_prefix_in_the_bucket(moto_server: MotoServer) -> None:
    bucket = moto_server.new_bucket()
    client = moto_server.client()
    store = BlobStore(S3Objects(client, bucket, "lib/blobs"), S3Objects(client, bucket, "lib/cache/"))
    data = make_image("JPEG", (300, 200), seed=11)
    name = _name(data)
    store.put(name, data)
    store.thumbnail(name, "JPEG", 64)
    sha = name.split(".")[0]
    assert moto_server.keys(bucket) == [f"lib/blobs/{sha[:2]}/{name}", f"lib/cache/square-64/{sha[:2]}/{sha}.webp"]
    assert store.remove(name) == 2
    assert moto_server.keys(bucket) == []


def test_put_is_idempotent(store: BlobStore) -> None:
    data = make_image("PNG", seed=2)
    name = _name(data, "png")
    assert store.put(name, data) is True
    assert store.put(name, data) is False
    assert _all_files(store) == [f"{name[:2]}/{name}"]


def test_put_does_not_rewrite_a_stored_file(fs_store: BlobStore) -> None:
    data = make_image("PNG", seed=2)
    name = _name(data, "png")
    path = _fs_root(fs_store) / name[:2] / name
    fs_store.put(name, data)
    mtime = path.stat().st_mtime_ns
    assert fs_store.put(name, data) is False
    assert path.stat().st_mtime_ns == mtime


def test_put_leaves_no_temp_files_even_when_the_write_fails(fs_store: BlobStore, monkeypatch) -> None:
    store = fs_store
    data = make_image("JPEG", seed=3)
    name = _name(data)

    def failing_fsync(fd: int) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(files_module.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk gone"):
        store.put(name, data)
    assert not store.exists(name)
    assert [p for p in _fs_root(store).rglob("*") if p.is_file()] == []


def test_a_half_written_file_is_never_visible_under_its_name(fs_store: BlobStore, monkeypatch) -> None:
    """The final name appears only by rename, after the data is complete."""
    store = fs_store
    data = make_image("JPEG", (256, 256), seed=4)
    name = _name(data)
    seen_during_write: list[bool] = []
    real_fsync = os.fsync

    def observing_fsync(fd: int) -> None:
        seen_during_write.append((_fs_root(store) / name[:2] / name).exists())
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
    assert _all_files(store) == [f"{name[:2]}/{name}"]


def test_resized_versions_fit_the_size_keep_the_aspect_and_are_cached(store: BlobStore) -> None:
    data = make_image("JPEG", (400, 200), seed=6)
    name = _name(data)
    store.put(name, data)
    small, content_type = store.resized(name, "JPEG", 100)
    assert content_type == "image/jpeg"
    assert Image.open(io.BytesIO(small)).size == (100, 50)
    cached = store.resized_key(name, "JPEG", 100)
    assert store.cache.get(cached) == small
    store.cache.put(cached, b"marker")  # what the cache holds is what is served: no regeneration
    again, _ = store.resized(name, "JPEG", 100)
    assert again == b"marker"


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


def test_stale_temp_files_are_removed_and_fresh_ones_kept(fs_store: BlobStore) -> None:
    store = fs_store
    assert isinstance(store.cache, FsObjects)
    old = _fs_root(store) / "ab" / f"{TEMP_PREFIX}old"
    fresh = store.cache.root / "64" / "cd" / f"{TEMP_PREFIX}fresh"
    for path in (old, fresh):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    assert store.remove_stale_temp_files(600) == 1
    assert not old.exists() and fresh.exists()
    assert store.remove_stale_temp_files(0) == 1
    assert not fresh.exists()


def test_orphans_without_a_row_are_collected_once_old_enough(store: BlobStore) -> None:
    kept, orphan = make_image("JPEG", seed=12), make_image("JPEG", seed=13)
    for data in (kept, orphan):
        store.put(_name(data), data)
        store.thumbnail(_name(data), "JPEG", 32)
    rows = {_name(kept).split(".")[0]}

    def stored(shas) -> set[str]:
        return rows & set(shas)

    assert store.collect_orphans(stored, 3600, 60) == 0  # young: may be an upload in progress elsewhere
    assert store.exists(_name(orphan))
    assert store.collect_orphans(stored, -1, 60) == 2
    assert not store.exists(_name(orphan)) and store.exists(_name(kept))
    assert [o for o in store.cache.list() if _name(orphan).split(".")[0] in o.key] == []
    assert len(list(store.cache.list())) == 1


def test_an_unreachable_bucket_is_unavailable_and_a_missing_key_not_found(moto_server: MotoServer) -> None:
    """What the servicers turn into 503 and 404: never an internal error."""
    dead = boto3.client(
        "s3", endpoint_url=f"http://127.0.0.1:{free_port()}", config=Config(retries={"max_attempts": 1})
    )
    store = BlobStore(S3Objects(dead, "bucket", "blobs/"), S3Objects(dead, "bucket", "cache/"))
    data = make_image("JPEG", seed=14)
    with pytest.raises(Unavailable) as caught:
        store.put(_name(data), data)
    assert caught.value.code == "storage_unavailable" and "127.0.0.1" not in caught.value.message
    with pytest.raises(Unavailable):
        store.get(_name(data))
    missing_bucket = S3Objects(moto_server.client(), "no-such-bucket-here", "")
    with pytest.raises(Unavailable):
        missing_bucket.put("a/b.jpg", b"x")
    live = S3Objects(moto_server.client(), moto_server.new_bucket(), "p/")
    with pytest.raises(FileNotFoundError):
        live.get("ab/missing.jpg")
    assert live.size("ab/missing.jpg") is None
    live.delete("ab/missing.jpg")  # deleting nothing is no error


def test_a_thumbnail_stored_while_the_original_is_being_deleted_is_removed_too(store: BlobStore) -> None:
    """The warmer stores a thumbnail after checking that the original is
    there; a delete that lists the image's files before that and deletes the
    original after it must still find the thumbnail (it lists the cache only
    once the original is gone)."""
    data = make_image("JPEG", seed=7)
    name = _name(data)
    store.put(name, data)
    thumbnail_key = store.thumbnail_key(name, 305)
    real_delete = store.originals.delete

    def delete_after_the_warmer(key: str) -> None:
        # The warmer's thumbnail lands just before the original goes.
        store.thumbnail(name, "JPEG", 305)
        assert store.cache.exists(thumbnail_key)
        real_delete(key)

    store.originals.delete = delete_after_the_warmer  # type: ignore[method-assign]
    removed = store.remove(name)
    assert not store.exists(name) and not store.cache.exists(thumbnail_key)
    assert removed == 2
