"""The dataset service over real gRPC, on SQLite and PostgreSQL: every RPC's
happy path and its refusals (status, tagrate error code, and proof that a
refused call stored nothing)."""

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
from tagrate_common.protos import (
    common_pb2,
    images_pb2,
    library_pb2,
    ratings_pb2,
    tags_pb2,
    training_data_pb2,
    users_pb2,
    work_pb2,
)
from tests.dataset.conftest import MAX_UPLOAD, Served, image_file, rpc_error
from tests.imagefactory import bomb_png, make_image, truncated_jpeg
from tests.support import health_status

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def add(served: Served, user: str, data: bytes, rating: float, filename: str = "photo.jpg"):
    request = ratings_pb2.AddRatingRequest(user=user, rating=rating, image=image_file(data, filename))
    return served.stub.ratings.AddRating(request, timeout=30)


def name_of(data: bytes, ext: str = "jpg") -> str:
    return f"{hashlib.sha256(data).hexdigest()}.{ext}"


def put_tags(served: Served, image: str, model: str, threshold: float, tags: list[tuple[str, float]]) -> None:
    request = tags_pb2.PutImageTagsRequest(
        image=image,
        model_id=model,
        threshold=threshold,
        tags=[tags_pb2.ImageTagScore(name=n, score=s) for n, s in tags],
    )
    served.stub.tags.PutImageTags(request, timeout=30)


def user_info(served: Served, user: str) -> users_pb2.UserInfo:
    return served.stub.users.GetUser(users_pb2.GetUserRequest(user=user), timeout=30)


def assert_refused(served: Served, call, request, status: grpc.StatusCode, code: str) -> str:
    """The call fails with ``status`` and tagrate ``code``, storing nothing."""
    before = served.state()
    got_status, got_code, message = rpc_error(call, request)
    assert (got_status, got_code) == (status, code), message
    assert served.state() == before
    return message


# ---- AddRating ------------------------------------------------------------


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


# ---- GetImage ---------------------------------------------------------------


def test_get_image_returns_the_original_and_cached_resized_versions(served: Served) -> None:
    data = make_image("PNG", (200, 100), seed=7)
    name = add(served, "alice", data, 0.3).image
    sha = name[:64]
    original = served.stub.images.GetImage(images_pb2.GetImageRequest(image=name), timeout=30)
    assert (original.data, original.content_type, original.etag, original.not_modified) == (
        data,
        "image/png",
        sha,
        False,
    )
    small = served.stub.images.GetImage(images_pb2.GetImageRequest(image=name, size=50), timeout=30)
    assert small.etag == f"{sha}-50" and small.content_type == "image/png"
    assert Image.open(io.BytesIO(small.data)).size == (50, 25)
    assert f"dataset/cache/50/{sha[:2]}/{sha}.png" in served.state()["files"]
    big = served.stub.images.GetImage(images_pb2.GetImageRequest(image=name, size=4096), timeout=30)
    assert Image.open(io.BytesIO(big.data)).size == (200, 100)  # never upscaled


IF_NONE_MATCH = [
    ('"{sha}"', 0, True),
    ("{sha}", 0, True),
    ('W/"{sha}"', 0, True),
    ('"other", "{sha}"', 0, True),
    ("*", 0, True),
    ('"{sha}-64"', 64, True),
    ('"{sha}"', 64, False),
    ('"{sha}-64"', 0, False),
    ('"other"', 0, False),
    ("", 0, False),
]


def test_if_none_match(served: Served) -> None:
    data = make_image("JPEG", (100, 100), seed=8)
    name = add(served, "alice", data, 0.3).image
    for header, size, matches in IF_NONE_MATCH:
        request = images_pb2.GetImageRequest(image=name, size=size, if_none_match=header.format(sha=name[:64]))
        reply = served.stub.images.GetImage(request, timeout=30)
        assert reply.not_modified is matches, header
        assert (reply.data == b"") is matches, header
        assert reply.etag == (f"{name[:64]}-{size}" if size else name[:64])
        assert reply.content_type == "image/jpeg"


BAD_IMAGE_NAMES = [
    "../../etc/passwd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/etc/passwd",
    "a" * 64 + ".jpg\x00.png",
    "\x00",
    "A" * 64 + ".jpg",
    "a" * 64 + ".exe",
    "a" * 63 + ".jpg",
    "a" * 64,
    "a" * 64 + ".jpg/../../x",
    " " + "a" * 64 + ".jpg",
]


def test_get_image_refuses_anything_but_a_stored_name(served: Served) -> None:
    add(served, "alice", make_image(seed=9), 0.3)
    for image in BAD_IMAGE_NAMES:
        request = images_pb2.GetImageRequest(image=image)
        message = assert_refused(served, served.stub.images.GetImage, request, INVALID, "invalid_image_name")
        assert "'image'" in message, image


def test_get_image_errors(served: Served) -> None:
    name = add(served, "alice", make_image(seed=9), 0.3).image
    assert_refused(
        served, served.stub.images.GetImage, images_pb2.GetImageRequest(image=""), INVALID, "missing_parameter"
    )
    for size in (1, 15, 4097, 100000):
        request = images_pb2.GetImageRequest(image=name, size=size)
        assert "'size'" in assert_refused(served, served.stub.images.GetImage, request, INVALID, "invalid_size")
    unknown = images_pb2.GetImageRequest(image="b" * 64 + ".png")
    assert_refused(served, served.stub.images.GetImage, unknown, grpc.StatusCode.NOT_FOUND, "image_not_found")


# ---- tags -----------------------------------------------------------------


def test_image_tags_follow_the_current_model_and_its_threshold(served: Served) -> None:
    name = add(served, "alice", make_image(seed=10), 0.3).image
    get = lambda: served.stub.tags.GetImageTags(tags_pb2.GetImageTagsRequest(image=name), timeout=30)  # noqa: E731
    assert (get().tagged, list(get().tags), get().model_id) == (False, [], "")
    put_tags(served, name, "tagger-1", 0.5, [("Cat", 0.9), (" dog ", 0.5), ("car", 0.2), ("hat", 0.75)])
    reply = get()
    assert (reply.image, reply.tagged, reply.model_id) == (name, True, "tagger-1")
    assert [(t.name, round(t.score, 4)) for t in reply.tags] == [("cat", 0.9), ("hat", 0.75), ("dog", 0.5)]
    put_tags(served, name, "tagger-1", 0.5, [("cat", 0.6)])  # replaces that model's scores
    assert [t.name for t in get().tags] == ["cat"]
    put_tags(served, name, "tagger-1", 0.7, [("cat", 0.6)])  # no tag passes: still tagged
    assert (get().tagged, list(get().tags)) == (True, [])
    # a new model becomes current; the image is untagged for it
    other = add(served, "alice", make_image(seed=11), 0.3).image
    put_tags(served, other, "tagger-2", 0.1, [("tree", 0.3)])
    assert (get().tagged, get().model_id) == (False, "tagger-2")
    verify = served.stub.work.VerifyDatasets(work_pb2.VerifyDatasetsRequest(), timeout=30)
    assert verify.untagged_images == 1


def test_put_image_tags_refusals(served: Served) -> None:
    name = add(served, "alice", make_image(seed=12), 0.3).image

    def request(**kw):
        fields = dict(image=name, model_id="m", threshold=0.5, tags=[tags_pb2.ImageTagScore(name="cat", score=0.9)])
        fields.update(kw)
        return tags_pb2.PutImageTagsRequest(**fields)

    put = served.stub.tags.PutImageTags
    assert_refused(served, put, request(image="../x"), INVALID, "invalid_image_name")
    assert_refused(served, put, request(image="c" * 64 + ".jpg"), grpc.StatusCode.NOT_FOUND, "image_not_found")
    assert_refused(served, put, request(model_id=""), INVALID, "missing_parameter")
    assert_refused(served, put, request(model_id="m" * 201), INVALID, "invalid_parameter")
    for threshold in (math.nan, 1.5, -0.5):
        assert_refused(served, put, request(threshold=threshold), INVALID, "invalid_threshold")
    for tag in ("", "  ", "x" * 201):
        bad = [tags_pb2.ImageTagScore(name=tag, score=0.9)]
        assert_refused(served, put, request(tags=bad), INVALID, "invalid_tag")
    nan = [tags_pb2.ImageTagScore(name="cat", score=math.nan)]
    assert_refused(served, put, request(tags=nan), INVALID, "invalid_parameter")


def test_get_image_tags_refusals(served: Served) -> None:
    get = served.stub.tags.GetImageTags
    assert_refused(served, get, tags_pb2.GetImageTagsRequest(image="/etc/passwd"), INVALID, "invalid_image_name")
    unknown = tags_pb2.GetImageTagsRequest(image="d" * 64 + ".gif")
    assert_refused(served, get, unknown, grpc.StatusCode.NOT_FOUND, "image_not_found")


# ---- GetUserData ------------------------------------------------------------


def _userdata(served: Served, **kw) -> library_pb2.GetUserDataResponse:
    return served.stub.library.GetUserData(library_pb2.GetUserDataRequest(**kw), timeout=30)


def test_get_user_data_filters_sorts_and_pages(served: Served) -> None:
    names = [add(served, "alice", make_image(seed=20 + i), r).image for i, r in enumerate((0.2, 0.9, 0.5, 0.7))]
    unrated = add(served, "bob", make_image(seed=30), 0.1).image
    put_tags(served, names[0], "m", 0.5, [("cat", 0.9), ("outdoor", 0.8)])
    put_tags(served, names[1], "m", 0.5, [("cat", 0.6)])
    put_tags(served, names[2], "m", 0.5, [("cat", 0.4), ("outdoor", 0.9)])
    everything = _userdata(served, user="alice")
    assert everything.user == "alice" and everything.total == 4
    assert [r.image for r in everything.images] == names[::-1]  # most recently rated first
    assert all(r.HasField("rating") and r.rated_at.seconds > 0 for r in everything.images)
    by_rating = _userdata(served, user="alice", sort=library_pb2.SORT_ORDER_RATING_DESC)
    assert [r.rating for r in by_rating.images] == [0.9, 0.7, 0.5, 0.2]
    cats = _userdata(served, user="alice", include_tags=["CAT "], sort=library_pb2.SORT_ORDER_RATING_ASC)
    assert [r.image for r in cats.images] == [names[0], names[1]]
    both = _userdata(served, user="alice", include_tags=["cat", "outdoor"])
    assert [r.image for r in both.images] == [names[0]]
    not_outdoor = _userdata(served, user="alice", exclude_tags=["outdoor"], sort=library_pb2.SORT_ORDER_RATING_ASC)
    assert [r.image for r in not_outdoor.images] == [names[3], names[1]]
    page = _userdata(served, user="alice", page=2, limit=3)
    assert (page.total, [r.image for r in page.images]) == (4, [names[0]])
    past = _userdata(served, user="alice", page=9, limit=3)
    assert (past.total, list(past.images)) == (4, [])
    unrated_rows = _userdata(served, user="alice", rated=library_pb2.RATED_FILTER_NO).images
    assert [r.image for r in unrated_rows] == [unrated]
    assert not unrated_rows[0].HasField("rating") and not unrated_rows[0].HasField("rated_at")
    all_rows = _userdata(
        served, user="alice", rated=library_pb2.RATED_FILTER_ALL, sort=library_pb2.SORT_ORDER_RATING_DESC
    )
    assert [r.image for r in all_rows.images][-1] == unrated and all_rows.total == 5
    hostile = _userdata(served, user="alice", include_tags=["' OR 1=1 --", "cat"], page=1, limit=10)
    assert (hostile.total, list(hostile.images)) == (0, [])
    assert _userdata(served, user="alice", exclude_tags=["'; DROP TABLE images; --"]).total == 4
    assert served.state()["images"] == 5


def test_get_user_data_refusals(served: Served) -> None:
    add(served, "alice", make_image(seed=40), 0.5)
    call = served.stub.library.GetUserData

    def refused(code: str, status: grpc.StatusCode = INVALID, **kw) -> str:
        return assert_refused(served, call, library_pb2.GetUserDataRequest(**kw), status, code)

    refused("user_not_found", grpc.StatusCode.NOT_FOUND, user="nobody")
    refused("invalid_user", user="all")
    refused("invalid_user", user="bad name")
    refused("missing_parameter", user="")
    assert "'limit'" in refused("invalid_limit", user="alice", page=1, limit=1001)
    refused("invalid_filters", user="alice", include_tags=[f"t{i}" for i in range(51)])
    refused("invalid_filters", user="alice", include_tags=["x" * 201])
    refused("invalid_filters", user="alice", exclude_tags=["x" * 100_000])
    refused("invalid_sort", user="alice", sort=99)
    refused("invalid_rated", user="alice", rated=42)
    refused("invalid_filters", user="alice", include_tags=["cat\x00"])
    # page 0 = everything: a valid limit does not matter, an invalid one is still refused
    assert _userdata(served, user="alice", page=0, limit=5).total == 1
    refused("invalid_limit", user="alice", page=0, limit=5000)
    # the page size used is in the answer (the default when none was given)
    assert _userdata(served, user="alice", page=1).limit == 60


# ---- users, snapshots and training data --------------------------------------


def test_list_users_get_user_and_all(served: Served) -> None:
    for user in ("zed", "Amy", "bob", "42"):
        add(served, user, make_image(seed=50), 0.5)
    add(served, "bob", make_image(seed=51), 0.5)
    assert list(served.stub.users.ListUsers(users_pb2.ListUsersRequest(), timeout=30).users) == [
        "42",
        "Amy",
        "bob",
        "zed",
    ]
    everyone = user_info(served, "all")
    assert (everyone.user, everyone.ratings) == ("all", 5)
    assert not everyone.HasField("created_at")
    assert rpc_error(served.stub.users.GetUser, users_pb2.GetUserRequest(user="nobody"))[:2] == (
        grpc.StatusCode.NOT_FOUND,
        "user_not_found",
    )
    assert rpc_error(served.stub.users.GetUser, users_pb2.GetUserRequest(user="no way"))[:2] == (
        INVALID,
        "invalid_user",
    )


def _stream(
    served: Served, user: str, extractor: str = "", chunk_size: int = 0
) -> list[training_data_pb2.TrainingDataChunk]:
    request = training_data_pb2.StreamTrainingDataRequest(user=user, extractor_id=extractor, chunk_size=chunk_size)
    return list(served.stub.training.StreamTrainingData(request, timeout=30))


def test_stream_training_data_chunks_with_features_and_snapshot(served: Served) -> None:
    names = [add(served, "alice", make_image(seed=60 + i), i / 10).image for i in range(5)]
    add(served, "bob", make_image(seed=60), 0.9)
    vector = common_pb2.FeatureVector(values=[0.5, -1.25, 3.0])
    served.stub.images.PutImageFeatures(
        images_pb2.PutImageFeaturesRequest(image=names[1], extractor_id="effnet", vector=vector), timeout=30
    )
    chunks = _stream(served, "alice", "effnet", chunk_size=2)
    assert [len(c.examples) for c in chunks] == [2, 2, 1]
    assert chunks[0].snapshot_id == user_info(served, "alice").snapshot_id and chunks[0].total == 5
    examples = [e for c in chunks for e in c.examples]
    assert sorted((e.image, e.user, e.rating) for e in examples) == sorted(
        (n, "alice", i / 10) for i, n in enumerate(names)
    )
    with_features = {e.image: list(e.features.values) for e in examples if e.HasField("features")}
    assert with_features == {names[1]: [0.5, -1.25, 3.0]}
    assert not any(e.HasField("features") for c in _stream(served, "alice", "other") for e in c.examples)
    everyone = _stream(served, "all")
    assert everyone[0].snapshot_id == user_info(served, "all").snapshot_id
    assert sum(len(c.examples) for c in everyone) == everyone[0].total == 6
    call = served.stub.training.StreamTrainingData
    assert rpc_error(call, training_data_pb2.StreamTrainingDataRequest(user="nobody"))[:2] == (
        grpc.StatusCode.NOT_FOUND,
        "user_not_found",
    )
    too_big = training_data_pb2.StreamTrainingDataRequest(user="alice", chunk_size=1_000_000)
    assert rpc_error(call, too_big)[:2] == (INVALID, "invalid_chunk_size")


def test_a_rating_that_lands_mid_stream_does_not_change_the_streamed_snapshot(served: Served) -> None:
    for i in range(6):
        add(served, "alice", make_image(seed=70 + i), 0.5)
    request = training_data_pb2.StreamTrainingDataRequest(user="alice", chunk_size=1)
    stream = served.stub.training.StreamTrainingData(request, timeout=30)
    first = next(stream)
    add(served, "alice", make_image(seed=99), 0.7)  # lands while the stream is open
    add(served, "alice", make_image(seed=70), 0.9)  # and a change
    rest = list(stream)
    examples = [e for c in [first, *rest] for e in c.examples]
    assert first.total == 6 and len(examples) == 6
    assert all(e.rating == 0.5 for e in examples)
    assert first.snapshot_id != user_info(served, "alice").snapshot_id


def test_record_trained_snapshot_and_verify_datasets(served: Served) -> None:
    add(served, "bob", make_image(seed=80), 0.5)
    add(served, "alice", make_image(seed=81), 0.5)
    add(served, "alice", make_image(seed=82), 0.6)
    verify = lambda: served.stub.work.VerifyDatasets(work_pb2.VerifyDatasetsRequest(), timeout=30)  # noqa: E731
    state = verify()
    assert not state.valid and state.untagged_images == 3
    assert [(u.user, u.ratings, u.model_up_to_date) for u in state.users] == [("alice", 2, False), ("bob", 1, False)]
    assert not state.users[0].HasField("trained_on_ratings") and not state.users[0].HasField("trained_at")
    assert state.users[0].last_rating_at.seconds > 0
    record = served.stub.training.RecordTrainedSnapshot
    for user in ("alice", "bob"):
        snapshot = _stream(served, user)[0].snapshot_id
        record(
            training_data_pb2.RecordTrainedSnapshotRequest(user=user, snapshot_id=snapshot, model_version="v1"),
            timeout=30,
        )
    state = verify()
    assert state.valid
    assert [(u.user, u.trained_on_ratings, u.model_up_to_date) for u in state.users] == [
        ("alice", 2, True),
        ("bob", 1, True),
    ]
    assert user_info(served, "alice").trained_snapshot_id == user_info(served, "alice").snapshot_id
    old = user_info(served, "alice").snapshot_id
    add(served, "alice", make_image(seed=83), 0.7)  # newer ratings: alice's model is stale
    state = verify()
    assert not state.valid and [u.model_up_to_date for u in state.users] == [False, True]
    assert state.users[0].trained_on_ratings == 2 and state.users[0].ratings == 3
    # recording an older snapshot keeps that snapshot's count
    record(
        training_data_pb2.RecordTrainedSnapshotRequest(user="alice", snapshot_id=old, model_version="v2"), timeout=30
    )
    assert verify().users[0].trained_on_ratings == 2
    everyone = user_info(served, "all").snapshot_id
    record(
        training_data_pb2.RecordTrainedSnapshotRequest(user="all", snapshot_id=everyone, model_version="g1"), timeout=30
    )
    assert user_info(served, "all").trained_snapshot_id == everyone


def test_record_trained_snapshot_refusals(served: Served) -> None:
    add(served, "alice", make_image(seed=90), 0.5)
    add(served, "bob", make_image(seed=91), 0.5)
    alice, bob = user_info(served, "alice").snapshot_id, user_info(served, "bob").snapshot_id
    call = served.stub.training.RecordTrainedSnapshot

    def refused(user: str, snapshot: str, code: str, status: grpc.StatusCode = INVALID) -> None:
        request = training_data_pb2.RecordTrainedSnapshotRequest(user=user, snapshot_id=snapshot, model_version="v")
        assert_refused(served, call, request, status, code)

    for bad in ("abc", "1:2", "1:2:3:4", "-1:1:1", "x:1:1", bob, "all:1:1", "1:1:1'; --", alice + "0"):
        refused("alice", bad, "invalid_snapshot_id")
    user_id, version, count = alice.split(":")
    refused("alice", f"{user_id}:{int(version) + 1}:{count}", "invalid_snapshot_id")  # from the future
    refused("all", alice, "invalid_snapshot_id")
    refused("alice", "", "missing_parameter")
    refused("nobody", alice, "user_not_found", grpc.StatusCode.NOT_FOUND)
    refused("bad user", alice, "invalid_user")
    long_version = training_data_pb2.RecordTrainedSnapshotRequest(
        user="alice", snapshot_id=alice, model_version="v" * 201
    )
    assert_refused(served, call, long_version, INVALID, "invalid_parameter")


def test_put_image_features_upserts_and_refuses_bad_vectors(served: Served) -> None:
    name = add(served, "alice", make_image(seed=95), 0.5).image
    put = served.stub.images.PutImageFeatures

    def request(values, image=name, extractor="effnet"):
        vector = common_pb2.FeatureVector(values=values)
        return images_pb2.PutImageFeaturesRequest(image=image, extractor_id=extractor, vector=vector)

    put(request([1.0, 2.0]), timeout=30)
    put(request([3.0, 4.0, 5.0]), timeout=30)
    with served.engine.connect() as conn:
        assert conn.execute(text("SELECT dim FROM image_features")).scalars().all() == [3]
    assert_refused(served, put, request([]), INVALID, "invalid_vector")
    assert_refused(served, put, request([1.0, math.nan]), INVALID, "invalid_vector")
    assert_refused(served, put, request([math.inf]), INVALID, "invalid_vector")
    assert_refused(served, put, request([1.0], extractor=""), INVALID, "missing_parameter")
    assert_refused(served, put, request([1.0], image="e" * 64 + ".jpg"), grpc.StatusCode.NOT_FOUND, "image_not_found")
    assert_refused(served, put, request([1.0], image="..\\x"), INVALID, "invalid_image_name")


def test_update_tags_is_unavailable_until_the_tagger_exists(served: Served) -> None:
    status, code, message = rpc_error(served.stub.tags.UpdateTags, tags_pb2.UpdateTagsRequest())
    assert (status, code) == (grpc.StatusCode.UNAVAILABLE, "tagger_unavailable")
    assert "tagger" in message


def test_health_is_serving(served: Served) -> None:
    assert health_status(served.target) == "SERVING"
