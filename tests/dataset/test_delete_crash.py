"""Deletes and crashes: the dataset service is SIGKILLed while four clients
delete images; after a restart every image is either fully there (row and
file, GetImage answers) or fully gone (no row, no file, NOT_FOUND), and the
files of rows deleted before the kill are collected by the start-up sweep."""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
import pytest
from sqlalchemy import text

from tagrate_common.dataset_stubs import DatasetStubs
from tagrate_common.protos import images_pb2, ratings_pb2
from tagrate_dataset.db import create_db_engine
from tests.dataset.conftest import dataset_process, image_file
from tests.imagefactory import make_image
from tests.support import ServiceProcess, free_port

IMAGES = 120
THREADS = 4
KILL_AFTER = 30  # acknowledged deletes before the kill


def _service(tmp_path: Path, database_url: str, port: int) -> ServiceProcess:
    # Every file without a row is collected at once (no replica writes next
    # to this one).
    return dataset_process(
        tmp_path, database_url, port, DATASET_STALE_TEMP_SECONDS="0", DATASET_TAGGER_ADDR="", DATASET_RATER_ADDR=""
    )


@pytest.mark.slow
def test_no_image_is_half_there_after_a_sigkill_during_deletes(tmp_path: Path, database_url: str) -> None:
    port = free_port()
    service = _service(tmp_path, database_url, port).start()
    names: list[str] = []
    with grpc.insecure_channel(service.target) as channel:
        stub = DatasetStubs(channel)
        for n in range(IMAGES):
            request = ratings_pb2.AddRatingRequest(
                user=f"user{n % 3}", rating=0.5, image=image_file(make_image("JPEG", (48, 32), seed=n))
            )
            names.append(stub.ratings.AddRating(request, timeout=30).image)
            if n % 10 == 0:  # cached versions must go too
                stub.images.GetThumbnail(images_pb2.GetThumbnailRequest(image=names[-1], size=32), timeout=30)

    deleted: list[str] = []
    lock = threading.Lock()
    enough = threading.Event()

    def client(worker: int) -> None:
        with grpc.insecure_channel(service.target) as channel:
            stub = DatasetStubs(channel)
            for name in names[worker::THREADS]:
                try:
                    stub.images.DeleteImage(images_pb2.DeleteImageRequest(image=name), timeout=10)
                except grpc.RpcError:
                    return  # the service is gone
                with lock:
                    deleted.append(name)
                    if len(deleted) >= KILL_AFTER:
                        enough.set()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    assert enough.wait(120), service.log()
    service.kill()  # SIGKILL: no shutdown hook runs
    for thread in threads:
        thread.join(30)

    # A crash between a delete's commit and its file removal, for certain:
    # the files of an acknowledged delete put back.
    gone = deleted[0]
    blob_dir, cache_dir = tmp_path / "data" / "dataset" / "blobs", tmp_path / "data" / "dataset" / "cache"
    (blob_dir / gone[:2]).mkdir(parents=True, exist_ok=True)
    (blob_dir / gone[:2] / gone).write_bytes(b"left behind")
    (cache_dir / "square-32" / gone[:2]).mkdir(parents=True, exist_ok=True)
    (cache_dir / "square-32" / gone[:2] / f"{gone[:64]}.webp").write_bytes(b"left behind")

    restarted = _service(tmp_path, database_url, port).start()
    try:
        engine = create_db_engine(database_url, pool_size=1, max_overflow=0)
        try:
            with engine.connect() as conn:
                rows = {name for (name,) in conn.execute(text("SELECT name FROM images"))}
                dangling = conn.execute(
                    text("SELECT count(*) FROM ratings WHERE image_id NOT IN (SELECT id FROM images)")
                ).scalar_one()
        finally:
            engine.dispose()
        assert dangling == 0
        assert not rows & set(deleted)  # an acknowledged delete stays done
        data_dir = tmp_path / "data" / "dataset"
        on_disk = {path.name.split(".")[0] for path in data_dir.rglob("*") if path.is_file() and len(path.stem) == 64}
        stored_shas = {name.split(".")[0] for name in rows}
        assert on_disk == stored_shas  # no file without a row, no row without its original
        with grpc.insecure_channel(restarted.target) as channel:
            stub = DatasetStubs(channel)
            for name in names:
                request = images_pb2.GetImageRequest(image=name)
                if name in rows:
                    assert stub.images.GetImage(request, timeout=10).data
                else:
                    with pytest.raises(grpc.RpcError) as info:
                        stub.images.GetImage(request, timeout=10)
                    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        restarted.terminate()
