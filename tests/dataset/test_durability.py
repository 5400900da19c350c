"""Durability: the service is SIGKILLed while eight clients are rating;
after a restart on the same data every acknowledged rating is there, every
image row has its complete blob, and the service is healthy."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import grpc
import pytest
from sqlalchemy import text

from tagrate_common.dataset_stubs import DatasetStubs
from tagrate_common.files import TEMP_PREFIX
from tagrate_common.protos import images_pb2, library_pb2, ratings_pb2, users_pb2
from tagrate_dataset.db import create_db_engine
from tests.dataset.conftest import dataset_process, image_file
from tests.imagefactory import make_image
from tests.support import free_port, health_status

THREADS = 8
KILL_AFTER = 40  # acknowledged ratings before the kill


@pytest.mark.slow
def test_acknowledged_ratings_survive_sigkill(tmp_path: Path, database_url: str) -> None:
    port = free_port()
    service = dataset_process(tmp_path, database_url, port).start()
    acknowledged: list[tuple[str, str, float]] = []
    lock = threading.Lock()
    enough = threading.Event()

    def client(worker: int) -> None:
        with grpc.insecure_channel(service.target) as channel:
            stub = DatasetStubs(channel)
            for n in range(1000):
                rating = round((worker * 7 + n) % 11 / 10, 2)
                data = make_image("JPEG", (48, 32), seed=10_000 * (worker + 1) + n)
                request = ratings_pb2.AddRatingRequest(user=f"user{worker % 3}", rating=rating, image=image_file(data))
                try:
                    reply = stub.ratings.AddRating(request, timeout=10)
                except grpc.RpcError:
                    return  # the service is gone
                with lock:
                    acknowledged.append((reply.user, reply.image, reply.rating))
                    if len(acknowledged) >= KILL_AFTER:
                        enough.set()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    assert enough.wait(120), service.log()
    service.kill()  # SIGKILL: no shutdown hook runs
    for thread in threads:
        thread.join(30)
    assert len(acknowledged) >= KILL_AFTER

    restarted = dataset_process(tmp_path, database_url, port).start()
    try:
        assert health_status(restarted.target) == "SERVING"
        engine = create_db_engine(database_url, pool_size=1, max_overflow=0)
        try:
            with engine.connect() as conn:
                stored = {
                    (user, image): rating
                    for user, image, rating in conn.execute(
                        text(
                            "SELECT users.name, images.name, ratings.rating FROM ratings "
                            "JOIN users ON users.id = ratings.user_id JOIN images ON images.id = ratings.image_id"
                        )
                    )
                }
                images = conn.execute(text("SELECT name, sha256, size_bytes FROM images")).all()
        finally:
            engine.dispose()
        for user, image, rating in acknowledged:
            assert stored.get((user, image)) == rating, (user, image)
        blob_dir = tmp_path / "data" / "dataset" / "blobs"
        for name, sha, size in images:
            assert not name.startswith(TEMP_PREFIX)
            blob = blob_dir / name[:2] / name
            data = blob.read_bytes()
            assert (hashlib.sha256(data).hexdigest(), len(data)) == (sha, size), name
        # the restarted service answers from the same data
        with grpc.insecure_channel(restarted.target) as channel:
            stub = DatasetStubs(channel)
            listed = stub.users.ListUsers(users_pb2.ListUsersRequest(), timeout=10).users
            assert set(listed) >= {user for user, _, _ in acknowledged}
            first_user, first_image, _ = acknowledged[0]
            got = stub.images.GetImage(images_pb2.GetImageRequest(image=first_image), timeout=10)
            assert hashlib.sha256(got.data).hexdigest() == first_image[:64]
            rows = stub.library.GetUserData(library_pb2.GetUserDataRequest(user=first_user), timeout=10).images
            assert first_image in {row.image for row in rows}
    finally:
        restarted.terminate()
