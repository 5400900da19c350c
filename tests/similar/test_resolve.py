"""Resolving duplicates (issue 27), on SQLite and PostgreSQL: through the
gateway, the ratings (the kept image's rating per user wins, else the
latest of the removed), manual tags, album places and the removed images themselves
move or go exactly; marking images as not duplicates is remembered; and a
SIGKILL of the dataset service while groups are being resolved leaves each
group either fully resolved or untouched."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import httpx
import pytest
from sqlalchemy import text

from tagrate_common.dataset_stubs import DatasetStubs
from tagrate_common.protos import ratings_pb2, similar_pb2
from tagrate_dataset.db import create_db_engine
from tests.dataset.conftest import dataset_process, image_file
from tests.gateway.stack import add_rating, start_stack
from tests.imagefactory import make_image
from tests.support import free_port

pytestmark = pytest.mark.slow


def rate(http: httpx.Client, data: bytes, user: str, rating: float, filename: str) -> str:
    response = add_rating(http, data, user, str(rating), filename)
    assert response.status_code == 200, response.text
    time.sleep(0.01)  # distinct rating times: "the latest" is well defined
    return response.json()["image"]


def ratings_of(http: httpx.Client, user: str) -> dict[str, float]:
    response = http.get("/getuserdata", params={"user": user})
    assert response.status_code == 200, response.text
    return {item["image"]: item["rating"] for item in response.json()["images"]}


def manual_tags(http: httpx.Client, image: str) -> set[str]:
    response = http.get("/getimagetags", params={"image": image, "detail": "true"})
    assert response.status_code == 200, response.text
    return {t["tag"] for t in response.json()["tags"] if t["source"] == "manual"}


def add_tags(http: httpx.Client, image: str, *tags: str) -> None:
    response = http.post("/addtags", json={"image": image, "tags": list(tags)})
    assert response.status_code == 200, response.text


def test_resolving_moves_ratings_tags_and_album_places_exactly(tmp_path: Path, database_url: str) -> None:
    stack = start_stack(database_url, tmp_path / "data")
    try:
        with httpx.Client(base_url=stack.url, timeout=30) as http:
            a_bytes, b_bytes, c_bytes, x_bytes = (make_image("JPEG", (96, 64), seed=s) for s in (1, 2, 3, 4))
            a = rate(http, a_bytes, "alice", 0.2, "kept.jpg")
            b = rate(http, b_bytes, "alice", 0.9, "b.jpg")
            rate(http, b_bytes, "bob", 0.5, "b.jpg")
            c = rate(http, c_bytes, "carol", 0.3, "c.jpg")
            rate(http, b_bytes, "carol", 0.6, "b.jpg")  # carol's latest of the removed
            rate(http, c_bytes, "dave", 0.1, "c.jpg")
            x = rate(http, x_bytes, "erin", 0.7, "x.jpg")
            album = http.post("/createmontagepost", data={"user": "alice", "filenames": f"{b},{x},{c}"})
            assert album.status_code == 200, album.text
            album_id = album.json()["montagepost_id"]
            add_tags(http, a, "cat")
            add_tags(http, b, "cat", "dog")
            add_tags(http, c, "bird")
            add_tags(http, x, "fish")

            response = http.post("/resolveduplicates", json={"keep": a, "remove": [b, c]})
            assert response.status_code == 200, response.text
            assert response.json() == {"kept": a, "removed": [b, c], "ratings_moved": 3}

            assert ratings_of(http, "alice") == {a: 0.2}  # the kept image's rating wins
            assert ratings_of(http, "bob") == {a: 0.5}
            assert ratings_of(http, "carol") == {a: 0.6}  # the latest of the removed
            assert ratings_of(http, "dave") == {a: 0.1}
            assert ratings_of(http, "erin") == {x: 0.7}
            assert manual_tags(http, a) == {"cat", "dog", "bird"}  # the removed images' manual tags, once each
            assert manual_tags(http, x) == {"fish"}
            for gone in (b, c):
                assert http.get("/getimage", params={"image": gone}).status_code == 404
            post = http.get("/getmontagepost", params={"id": album_id}).json()["montagepost"]
            assert [image["filename"] for image in post["images"]] == [a, x]

            # Unknown names change nothing.
            response = http.post("/resolveduplicates", json={"keep": a, "remove": [x, "f" * 64 + ".jpg"]})
            assert response.status_code == 404, response.text
            assert ratings_of(http, "erin") == {x: 0.7}
            response = http.post("/resolveduplicates", json={"keep": a, "remove": [a]})
            assert response.status_code == 400 and response.json()["code"] == "invalid_remove"

            marked = http.post("/resolveduplicates", data={"not_duplicates": f"{a},{x}"})
            assert marked.status_code == 200, marked.text
            assert marked.json() == {"not_duplicates": [a, x], "pairs": 1}
    finally:
        stack.stop()
    engine = create_db_engine(database_url, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM not_duplicates")).scalar_one() == 1
    finally:
        engine.dispose()


GROUPS = 60
KILL_AFTER = 12
USERS = ("u0", "u1", "u2")


def test_a_sigkill_while_resolving_leaves_each_group_whole_or_resolved(tmp_path: Path, database_url: str) -> None:
    port = free_port()
    env = {"DATASET_TAGGER_ADDR": "", "DATASET_RATER_ADDR": "", "DATASET_STALE_TEMP_SECONDS": "0"}
    service = dataset_process(tmp_path, database_url, port, **env).start()
    groups: list[tuple[str, list[str]]] = []
    with grpc.insecure_channel(service.target) as channel:
        stub = DatasetStubs(channel)

        def add(seed: int, user: str, rating: float) -> str:
            request = ratings_pb2.AddRatingRequest(
                user=user, rating=rating, image=image_file(make_image("JPEG", (40, 30), seed=seed))
            )
            return stub.ratings.AddRating(request, timeout=30).image

        for g in range(GROUPS):
            keep = add(10_000 + g, "u0", 0.5)
            removed = [add(20_000 + g, "u1", 0.25), add(30_000 + g, "u2", 0.75)]
            groups.append((keep, removed))

    done: list[str] = []
    lock = threading.Lock()
    enough = threading.Event()

    def client(worker: int) -> None:
        with grpc.insecure_channel(service.target) as channel:
            stub = DatasetStubs(channel)
            for keep, removed in groups[worker::4]:
                try:
                    stub.similar.ResolveDuplicates(
                        similar_pb2.ResolveDuplicatesRequest(keep=keep, remove=removed), timeout=10
                    )
                except grpc.RpcError:
                    return
                with lock:
                    done.append(keep)
                    if len(done) >= KILL_AFTER:
                        enough.set()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    assert enough.wait(120), service.log()
    service.kill()
    for thread in threads:
        thread.join(30)

    restarted = dataset_process(tmp_path, database_url, port, **env).start()
    try:
        engine = create_db_engine(database_url, pool_size=1, max_overflow=0)
        try:
            with engine.connect() as conn:
                images = {name for (name,) in conn.execute(text("SELECT name FROM images"))}
                rows = conn.execute(
                    text(
                        "SELECT u.name, i.name, r.rating FROM ratings r JOIN users u ON u.id = r.user_id "
                        "JOIN images i ON i.id = r.image_id"
                    )
                ).all()
        finally:
            engine.dispose()
        rated = {(user, image): rating for user, image, rating in rows}
        resolved = whole = 0
        for keep, removed in groups:
            assert keep in images
            if all(name in images for name in removed):  # untouched
                whole += 1
                assert rated == rated | {("u0", keep): 0.5, ("u1", removed[0]): 0.25, ("u2", removed[1]): 0.75}
                assert ("u1", keep) not in rated and ("u2", keep) not in rated
            else:  # resolved: nothing of the removed is left, every rating moved
                resolved += 1
                assert not any(name in images for name in removed), (keep, removed)
                assert {u: rated.get((u, keep)) for u in USERS} == {"u0": 0.5, "u1": 0.25, "u2": 0.75}
        assert resolved >= KILL_AFTER and whole > 0, (resolved, whole)
    finally:
        restarted.terminate()
