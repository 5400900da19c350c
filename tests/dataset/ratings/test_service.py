"""RatingService over real gRPC, on SQLite and PostgreSQL: AddRating,
UpdateRating and RemoveRating, their refusals, and the snapshots they move."""

from __future__ import annotations

import hashlib
import io
import math
import threading

import grpc
import pytest
from PIL import Image
from sqlalchemy import text

from tagrate_common.errors import ERROR_CODE_KEY, ERROR_KIND_KEY
from tagrate_common.protos import library_pb2, ratings_pb2
from tests.dataset.calls import (
    INVALID,
    NOT_FOUND,
    add,
    assert_refused,
    name_of,
    record_trained,
    up_to_date,
    update,
    user_info,
)
from tests.dataset.conftest import MAX_UPLOAD, Served, image_file
from tests.imagefactory import bomb_png, make_image, truncated_jpeg


def test_add_rating_stores_user_image_blob_and_rating(served: Served) -> None:
    data = make_image("PNG", (40, 30), seed=1)
    reply = add(served, "alice", data, 0.75, filename="holiday.png")
    name = name_of(data, "png")
    assert (reply.image, reply.user, reply.rating, reply.new_image, reply.new_user) == (name, "alice", 0.75, True, True)
    blob = served.settings.blob_path / name[:2] / name
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == name[:64]
    with served.engine.connect() as conn:
        row = conn.execute(text("SELECT format, width, height, size_bytes, original_filename FROM images")).one()
        assert tuple(row) == ("PNG", 40, 30, len(data), "holiday.png")
        assert conn.execute(text("SELECT rating FROM ratings")).scalar_one() == 0.75
    info = user_info(served, "alice")
    assert info.ratings == 1 and info.snapshot_id and not info.HasField("trained_snapshot_id")
    assert info.created_at.seconds > 0


def test_the_same_bytes_are_stored_once(served: Served) -> None:
    data = make_image("JPEG", seed=2)
    first = add(served, "alice", data, 0.5, filename="a.jpg")
    second = add(served, "bob", data, 0.1, filename="b.jpg")
    third = add(served, "bob", data, 0.2)
    assert (first.new_image, first.new_user) == (True, True)
    assert (second.new_image, second.new_user) == (False, True)
    assert (third.new_image, third.new_user) == (False, False)
    state = served.state()
    assert (state["images"], state["users"], state["ratings"]) == (1, 2, 2)
    assert state["files"] == [f"dataset/blobs/{first.image[:2]}/{first.image}"]


def test_a_changed_rating_moves_the_snapshot_and_the_same_value_does_not(served: Served) -> None:
    data = make_image("JPEG", seed=3)
    add(served, "alice", data, 0.5)
    first = user_info(served, "alice").snapshot_id
    add(served, "alice", data, 0.5)
    assert user_info(served, "alice").snapshot_id == first
    add(served, "alice", data, 0.9)
    second = user_info(served, "alice")
    assert second.snapshot_id != first and second.ratings == 1
    rows = served.stub.library.GetUserData(library_pb2.GetUserDataRequest(user="alice"), timeout=30).images
    assert [(r.image, r.rating) for r in rows] == [(name_of(data), 0.9)]


BAD_USERS = {
    "": "missing_parameter",
    "has space": "invalid_user",
    "a" * 65: "invalid_user",
    "all": "invalid_user",
    "All": "invalid_user",
    "ünïcødé": "invalid_user",
    "名前": "invalid_user",
    "../etc": "invalid_user",
    "a/b": "invalid_user",
    "..": "invalid_user",
    "x\x00y": "invalid_user",
}


def test_add_rating_refuses_bad_user_names(served: Served) -> None:
    image = image_file(make_image(seed=4))
    for user, code in BAD_USERS.items():
        request = ratings_pb2.AddRatingRequest(user=user, rating=0.5, image=image)
        message = assert_refused(served, served.stub.ratings.AddRating, request, INVALID, code)
        assert "user" in message, user


def test_add_rating_refuses_bad_ratings(served: Served) -> None:
    image = image_file(make_image(seed=5))
    for rating in (math.nan, math.inf, -math.inf, -0.1, 1.5, 1e308, -1e-9, 1.0000001):
        request = ratings_pb2.AddRatingRequest(user="alice", rating=rating, image=image)
        message = assert_refused(served, served.stub.ratings.AddRating, request, INVALID, "invalid_rating")
        assert "'rating'" in message, rating


def _noise_png(size: int) -> bytes:
    import numpy as np

    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format="PNG")
    return buf.getvalue()


BAD_FILES = {
    "text": (b"just some text, not an image\n", "unsupported_image", "unsupported_image"),
    "empty": (b"", "empty_file", "unsupported_image"),
    "truncated-jpeg": (truncated_jpeg(), "truncated_image", "unsupported_image"),
    "bomb-png": (bomb_png(), "too_many_pixels", "too_large"),
    "oversize": (_noise_png(300), "file_too_large", "too_large"),
    "png-magic-only": (b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "unsupported_image", "unsupported_image"),
}


def test_add_rating_refuses_bad_files(served: Served) -> None:
    assert len(BAD_FILES["oversize"][0]) > MAX_UPLOAD
    for label, (data, code, kind) in BAD_FILES.items():
        request = ratings_pb2.AddRatingRequest(user="alice", rating=0.5, image=image_file(data, "upload.jpg"))
        before = served.state()
        with pytest.raises(grpc.RpcError) as info:
            served.stub.ratings.AddRating(request, timeout=30)
        trailing = dict(info.value.trailing_metadata())
        # the kind tells the gateway 415 from 413
        assert (info.value.code(), trailing[ERROR_CODE_KEY], trailing[ERROR_KIND_KEY]) == (INVALID, code, kind), label
        assert "upload.jpg" in info.value.details(), label
        assert served.state() == before, label


def test_concurrent_ratings_of_the_same_new_user_and_image_all_succeed(served: Served) -> None:
    data = make_image("JPEG", (80, 80), seed=6)
    replies: list[ratings_pb2.AddRatingResponse] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def rate(i: int) -> None:
        try:
            barrier.wait()
            replies.append(add(served, "crowd", data, i / 10))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=rate, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(r.new_user for r in replies) == 1
    assert sum(r.new_image for r in replies) == 1
    state = served.state()
    assert (state["users"], state["images"], state["ratings"]) == (1, 1, 1)
    assert user_info(served, "crowd").ratings == 1


def test_update_rating_inserts_updates_and_moves_the_snapshot(served: Served) -> None:
    data = make_image(seed=1)
    image = add(served, "alice", data, 0.5).image
    record_trained(served, "alice")
    assert up_to_date(served, "alice")

    same = update(served, "alice", image, 0.5)
    assert (same.rating, same.previous_rating, same.new_user) == (0.5, 0.5, False)
    assert up_to_date(served, "alice")  # the same value: the snapshot stays

    changed = update(served, "alice", image, 0.9)
    assert changed.HasField("previous_rating") and changed.previous_rating == 0.5
    assert not up_to_date(served, "alice")

    fresh = update(served, "bob", image, 0.25)
    assert fresh.new_user and not fresh.HasField("previous_rating")
    rows = served.stub.library.GetUserData(library_pb2.GetUserDataRequest(user="bob"), timeout=30).images
    assert [(r.image, r.rating) for r in rows] == [(image, 0.25)]

    unknown = name_of(make_image(seed=2))
    message = assert_refused(
        served,
        served.stub.ratings.UpdateRating,
        ratings_pb2.UpdateRatingRequest(user="carol", image=unknown, rating=0.5),
        NOT_FOUND,
        "image_not_found",
    )
    assert unknown in message
    assert_refused(
        served,
        served.stub.ratings.UpdateRating,
        ratings_pb2.UpdateRatingRequest(user="alice", image=image, rating=1.5),
        INVALID,
        "invalid_rating",
    )
    assert_refused(
        served,
        served.stub.ratings.UpdateRating,
        ratings_pb2.UpdateRatingRequest(user="alice", image="nope", rating=0.5),
        INVALID,
        "invalid_image_name",
    )


def test_remove_rating(served: Served) -> None:
    image = add(served, "alice", make_image(seed=3), 0.75).image
    other = add(served, "bob", make_image(seed=4), 0.5).image
    record_trained(served, "alice")
    before_id = user_info(served, "alice").snapshot_id

    for request, code in [
        (ratings_pb2.RemoveRatingRequest(user="nobody", image=image), "user_not_found"),
        (ratings_pb2.RemoveRatingRequest(user="alice", image=name_of(make_image(seed=5))), "image_not_found"),
        (ratings_pb2.RemoveRatingRequest(user="alice", image=other), "rating_not_found"),
    ]:
        assert_refused(served, served.stub.ratings.RemoveRating, request, NOT_FOUND, code)

    removed = served.stub.ratings.RemoveRating(ratings_pb2.RemoveRatingRequest(user="alice", image=image), timeout=30)
    assert (removed.image, removed.user, removed.rating) == (image, "alice", 0.75)
    assert user_info(served, "alice").snapshot_id != before_id
    assert not up_to_date(served, "alice")
    # the image stays, unrated
    unrated = served.stub.library.GetUserData(
        library_pb2.GetUserDataRequest(user="alice", rated=library_pb2.RATED_FILTER_NO), timeout=30
    ).images
    assert image in {r.image for r in unrated}
    # rated again with the same value: a new snapshot, not the old one
    update(served, "alice", image, 0.75)
    assert user_info(served, "alice").snapshot_id != before_id
