"""Collection management over real gRPC, on SQLite and PostgreSQL:
UpdateRating, RemoveRating, DeleteImage, AddImages, GetThumbnail, ListTags,
GetStats and GetImageNeighbours, their refusals, and the snapshots they move."""

from __future__ import annotations

import io
import threading
from collections import Counter

import grpc
import pytest
from PIL import Image
from sqlalchemy import text

from tagrate_common.dataset_stubs import DatasetStubs
from tagrate_common.protos import images_pb2, library_pb2, ratings_pb2, tags_pb2, training_data_pb2, users_pb2, work_pb2
from tagrate_dataset.images import blobs as blobs_module
from tagrate_dataset.server import create_server
from tests.dataset.conftest import Served, image_file, rpc_error
from tests.dataset.test_server import add, assert_refused, name_of, put_tags, user_info
from tests.imagefactory import encode, make_image, rotated_jpeg
from tests.support import free_port

NOT_FOUND, INVALID = grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT


def update(served: Served, user: str, image: str, rating: float) -> ratings_pb2.UpdateRatingResponse:
    return served.stub.ratings.UpdateRating(
        ratings_pb2.UpdateRatingRequest(user=user, image=image, rating=rating), timeout=30
    )


def files(served: Served) -> list[str]:
    return [f for f in served.state()["files"] if isinstance(f, str)]  # type: ignore[union-attr]


def record_trained(served: Served, user: str) -> None:
    snap = user_info(served, user).snapshot_id
    served.stub.training.RecordTrainedSnapshot(
        training_data_pb2.RecordTrainedSnapshotRequest(
            user=user, snapshot_id=snap, model_version="v1", metrics={"mae": 0.1}
        ),
        timeout=30,
    )


def up_to_date(served: Served, user: str) -> bool:
    users = served.stub.work.VerifyDatasets(work_pb2.VerifyDatasetsRequest(), timeout=30).users
    return {u.user: u.model_up_to_date for u in users}[user]


# ---- ratings ----------------------------------------------------------------


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


# ---- delete -------------------------------------------------------------------


def test_delete_image_removes_every_trace(served: Served) -> None:
    keep = add(served, "alice", make_image(seed=6), 0.5).image
    data = make_image(seed=7, size=(400, 300))
    image = add(served, "alice", data, 0.5).image
    update(served, "bob", image, 1.0)
    put_tags(served, image, "m1", 0.5, [("cat", 0.9), ("dog", 0.2)])
    served.stub.images.PutImageFeatures(
        images_pb2.PutImageFeaturesRequest(image=image, extractor_id="x1", vector={"values": [1.0, 2.0]}), timeout=30
    )
    served.stub.images.GetImage(images_pb2.GetImageRequest(image=image, size=64), timeout=30)
    served.stub.images.GetThumbnail(images_pb2.GetThumbnailRequest(image=image), timeout=30)
    sha = image.split(".")[0]
    assert sum(sha in f for f in files(served)) == 3  # original, resized, thumbnail
    record_trained(served, "alice")
    record_trained(served, "bob")

    reply = served.stub.images.DeleteImage(images_pb2.DeleteImageRequest(image=image), timeout=30)
    assert (reply.image, reply.ratings_removed) == (image, 2)
    assert not any(sha in f for f in files(served))
    image_id_rows = {}
    with served.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM images WHERE name = :n"), {"n": image}).scalar_one() == 0
        for table in ("ratings", "image_tags", "image_taggings", "image_features", "work_items"):
            image_id_rows[table] = conn.execute(
                text(f"SELECT count(*) FROM {table} WHERE image_id NOT IN (SELECT id FROM images)")
            ).scalar_one()
    assert image_id_rows == dict.fromkeys(image_id_rows, 0)
    assert not up_to_date(served, "alice") and not up_to_date(served, "bob")

    for call, request in [
        (served.stub.images.GetImage, images_pb2.GetImageRequest(image=image)),
        (served.stub.images.GetThumbnail, images_pb2.GetThumbnailRequest(image=image)),
        (served.stub.tags.GetImageTags, tags_pb2.GetImageTagsRequest(image=image)),
        (served.stub.images.DeleteImage, images_pb2.DeleteImageRequest(image=image)),
        (served.stub.tags.PutImageTags, tags_pb2.PutImageTagsRequest(image=image, model_id="m1", threshold=0.5)),
        (
            served.stub.images.PutImageFeatures,
            images_pb2.PutImageFeaturesRequest(image=image, extractor_id="x1", vector={"values": [1.0]}),
        ),
    ]:
        assert rpc_error(call, request)[:2] == (NOT_FOUND, "image_not_found")
    served.stub.images.GetImage(images_pb2.GetImageRequest(image=keep), timeout=30)  # the other image is untouched
    tags = served.stub.tags.ListTags(tags_pb2.ListTagsRequest(), timeout=30)
    assert list(tags.tags) == []  # the deleted image's tags are no longer counted


def test_a_row_whose_file_is_missing_is_not_found(served: Served) -> None:
    image = add(served, "alice", make_image(seed=8), 0.5).image
    (served.settings.blob_path / image[:2] / image).unlink()
    assert rpc_error(served.stub.images.GetImage, images_pb2.GetImageRequest(image=image))[:2] == (
        NOT_FOUND,
        "image_not_found",
    )
    assert rpc_error(served.stub.images.GetThumbnail, images_pb2.GetThumbnailRequest(image=image))[:2] == (
        NOT_FOUND,
        "image_not_found",
    )


# ---- add images -------------------------------------------------------------


def test_add_images_without_rating(served: Served) -> None:
    rated = add(served, "alice", make_image(seed=9), 0.5).image
    first, second = make_image(seed=10), make_image("PNG", seed=11)
    reply = served.stub.images.AddImages(
        images_pb2.AddImagesRequest(
            images=[image_file(first), image_file(second, "b.png"), image_file(make_image(seed=9))],
            source="https://example.org/post/1",
        ),
        timeout=30,
    )
    got = [(i.image, i.new_image) for i in reply.images]
    assert got == [(name_of(first), True), (name_of(second, "png"), True), (rated, False)]
    unrated = served.stub.library.GetUserData(
        library_pb2.GetUserDataRequest(user="alice", rated=library_pb2.RATED_FILTER_NO), timeout=30
    ).images
    assert {r.image for r in unrated} == {name_of(first), name_of(second, "png")}
    tags = served.stub.tags.GetImageTags(tags_pb2.GetImageTagsRequest(image=name_of(first)), timeout=30)
    assert tags.source == "https://example.org/post/1"
    # the rated image had no source: it gets this one; a second source does not replace it
    assert served.stub.tags.GetImageTags(tags_pb2.GetImageTagsRequest(image=rated), timeout=30).source == tags.source
    again = served.stub.images.AddImages(
        images_pb2.AddImagesRequest(images=[image_file(first)], source="other"), timeout=30
    )
    assert [i.new_image for i in again.images] == [False]
    assert (
        served.stub.tags.GetImageTags(tags_pb2.GetImageTagsRequest(image=name_of(first)), timeout=30).source
        == tags.source
    )
    with served.engine.connect() as conn:
        queued = conn.execute(text("SELECT count(*) FROM work_items")).scalar_one()
    assert queued == 3 * 2  # tag and embed for each stored image

    too_long = images_pb2.AddImagesRequest(images=[image_file(make_image(seed=12))], source="x" * 2049)
    assert "source" in assert_refused(served, served.stub.images.AddImages, too_long, INVALID, "invalid_source")
    bad = images_pb2.AddImagesRequest(images=[image_file(make_image(seed=13)), image_file(b"not an image", "x.jpg")])
    assert "file 2" in assert_refused(
        served, served.stub.images.AddImages, bad, INVALID, rpc_error(served.stub.images.AddImages, bad)[1]
    )


# ---- thumbnails ---------------------------------------------------------------


def _decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    assert img.format == "WEBP"
    return img.convert("RGB")


def test_thumbnail_square_webp_upright_never_upscaled(served: Served, monkeypatch) -> None:
    # upright: 300 wide, 200 high, left half red, right half blue
    upright = Image.new("RGB", (300, 200), (255, 0, 0))
    upright.paste((0, 0, 255), (150, 0, 300, 200))
    rotated = rotated_jpeg(upright, 6)
    image = add(served, "alice", rotated, 0.5).image

    generated = Counter()
    real = blobs_module.square_thumbnail

    def counting(data: bytes, fmt: str, size: int) -> bytes:
        generated[size] += 1
        return real(data, fmt, size)

    monkeypatch.setattr(blobs_module, "square_thumbnail", counting)
    replies: list[images_pb2.GetImageResponse] = []

    def fetch() -> None:
        replies.append(
            served.stub.images.GetThumbnail(images_pb2.GetThumbnailRequest(image=image, size=100), timeout=30)
        )

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(replies) == 8 and generated[100] == 1
    assert len({r.data for r in replies}) == 1 and replies[0].content_type == "image/webp"
    thumb = _decode(replies[0].data)
    assert thumb.size == (100, 100)
    # upright and centre-cropped: red on the left, blue on the right
    left, right = thumb.getpixel((10, 50)), thumb.getpixel((90, 50))
    assert left[0] > 200 and left[2] < 60, left
    assert right[2] > 200 and right[0] < 60, right

    # default 305; a 200 px short side is not upscaled
    default = served.stub.images.GetThumbnail(images_pb2.GetThumbnailRequest(image=image), timeout=30)
    assert _decode(default.data).size == (200, 200)
    not_modified = served.stub.images.GetThumbnail(
        images_pb2.GetThumbnailRequest(image=image, if_none_match=f'"{default.etag}"'), timeout=30
    )
    assert not_modified.not_modified and not not_modified.data
    for size in (15, 1025):
        assert_refused(
            served,
            served.stub.images.GetThumbnail,
            images_pb2.GetThumbnailRequest(image=image, size=size),
            INVALID,
            "invalid_size",
        )
    unknown = images_pb2.GetThumbnailRequest(image=name_of(make_image(seed=14)))
    assert rpc_error(served.stub.images.GetThumbnail, unknown)[:2] == (NOT_FOUND, "image_not_found")
    png = add(served, "alice", encode(Image.new("RGBA", (40, 90), (0, 255, 0, 128))), 0.5).image
    assert _decode(
        served.stub.images.GetThumbnail(images_pb2.GetThumbnailRequest(image=png), timeout=30).data
    ).size == (40, 40)


def test_new_images_get_their_default_thumbnail_in_the_background(settings, monkeypatch) -> None:
    """With background work on (a tagger is configured, here one that is not
    listening, so its lane just backs off), every newly stored image gets its
    305 px thumbnail made ahead of time: the first GetThumbnail generates
    nothing. Other sizes are still made on request, and an image deleted
    right after it was stored leaves no thumbnail behind."""
    settings = settings.model_copy(update={"tagger_addr": f"127.0.0.1:{free_port()}"})
    generated = Counter()
    real = blobs_module.square_thumbnail

    def counting(data: bytes, fmt: str, size: int) -> bytes:
        generated[size] += 1
        return real(data, fmt, size)

    monkeypatch.setattr(blobs_module, "square_thumbnail", counting)
    server = create_server(settings)
    port = server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = DatasetStubs(channel)
    try:
        blobs = server.tagging.blobs
        assert blobs._warmer is not None
        rated = stub.ratings.AddRating(
            ratings_pb2.AddRatingRequest(
                user="alice", rating=0.5, image=image_file(make_image(size=(640, 480), seed=40))
            ),
            timeout=30,
        ).image
        png = encode(Image.new("RGB", (500, 700), (0, 128, 255)))
        added = stub.images.AddImages(
            images_pb2.AddImagesRequest(
                images=[image_file(make_image(size=(400, 320), seed=41)), image_file(png, "b.png")]
            ),
            timeout=30,
        )
        names = [rated, *(i.image for i in added.images)]
        assert blobs._warmer.wait_idle(30)
        assert generated[305] == 3
        for name in names:
            assert blobs.thumbnail_path(name, 305).is_file()
            reply = stub.images.GetThumbnail(images_pb2.GetThumbnailRequest(image=name), timeout=30)
            assert _decode(reply.data).size == (305, 305)
        assert generated[305] == 3  # every first request was a cache hit
        stub.images.GetThumbnail(images_pb2.GetThumbnailRequest(image=rated, size=100), timeout=30)
        assert generated[100] == 1  # other sizes: made on request

        # Stored again: nothing to make.
        stub.images.AddImages(images_pb2.AddImagesRequest(images=[image_file(png, "b.png")]), timeout=30)
        assert blobs._warmer.wait_idle(30) and generated[305] == 3

        # Deleted at once, possibly while its thumbnail is being made.
        for seed in range(42, 46):
            doomed = stub.images.AddImages(
                images_pb2.AddImagesRequest(images=[image_file(make_image(seed=seed))]), timeout=30
            )
            stub.images.DeleteImage(images_pb2.DeleteImageRequest(image=doomed.images[0].image), timeout=30)
            assert blobs._warmer.wait_idle(30)
            sha = doomed.images[0].image.split(".")[0]
            left = [p for root in (settings.blob_path, settings.cache_path) for p in root.rglob(f"{sha}.*")]
            assert left == []
    finally:
        channel.close()
        server.stop(0)


# ---- tags ---------------------------------------------------------------------


def test_list_tags_counts_equal_a_brute_force_count(served: Served) -> None:
    tagsets = [
        [("cat", 0.9), ("Ünicode", 0.8), ("dog", 0.3)],
        [("cat", 0.6), ("caterpillar", 0.7), ("zebra", 0.9)],
        [("cat", 0.5), ("dog", 0.95), ("Apple", 0.99)],
        [("catalogue", 0.1)],
    ]
    names = []
    for seed, tags in enumerate(tagsets):
        name = add(served, "alice" if seed < 2 else "bob", make_image(seed=100 + seed), 0.5).image
        put_tags(served, name, "m1", 0.5, tags)
        names.append(name)
    expected: Counter[str] = Counter(t.lower() for tags in tagsets for t, s in tags if s >= 0.5)
    got = served.stub.tags.ListTags(tags_pb2.ListTagsRequest(), timeout=30)
    assert got.model == "m1"
    assert list(zip(got.tags, got.counts, strict=True)) == sorted(expected.items())  # code-point order
    cat = served.stub.tags.ListTags(tags_pb2.ListTagsRequest(prefix="CAT"), timeout=30)
    assert list(zip(cat.tags, cat.counts, strict=True)) == [("cat", 3), ("caterpillar", 1)]
    mine = served.stub.tags.ListTags(tags_pb2.ListTagsRequest(user="alice"), timeout=30)
    assert dict(zip(mine.tags, mine.counts, strict=True)) == {"cat": 2, "caterpillar": 1, "zebra": 1, "ünicode": 1}
    assert list(served.stub.tags.ListTags(tags_pb2.ListTagsRequest(limit=2), timeout=30).tags) == sorted(expected)[:2]
    assert_refused(served, served.stub.tags.ListTags, tags_pb2.ListTagsRequest(limit=100_001), INVALID, "invalid_limit")
    assert_refused(
        served, served.stub.tags.ListTags, tags_pb2.ListTagsRequest(user="nobody"), NOT_FOUND, "user_not_found"
    )


# ---- stats --------------------------------------------------------------------


def test_stats_buckets_half_to_even(served: Served) -> None:
    ratings = [0.0, 1 / 12, 3 / 12, 5 / 12, 7 / 12, 9 / 12, 11 / 12, 1.0, 0.5, 0.2]
    for seed, rating in enumerate(ratings):
        add(served, "alice", make_image(seed=200 + seed), rating)
    stats = served.stub.users.GetStats(users_pb2.GetStatsRequest(user="alice"), timeout=30)
    expected = [0] * 7
    for rating in ratings:
        expected[round(rating * 6)] += 1
    assert list(stats.rating_distribution) == expected
    assert stats.image_count == len(ratings)
    assert not stats.personal_up_to_date and not stats.global_up_to_date and not stats.HasField("model")
    record_trained(served, "alice")
    stats = served.stub.users.GetStats(users_pb2.GetStatsRequest(user="alice"), timeout=30)
    assert stats.personal_up_to_date and stats.model.version == "v1"
    assert stats.model.trained_on_ratings == len(ratings) and dict(stats.model.metrics) == {"mae": pytest.approx(0.1)}
    assert_refused(
        served, served.stub.users.GetStats, users_pb2.GetStatsRequest(user="nobody"), NOT_FOUND, "user_not_found"
    )


# ---- neighbours -----------------------------------------------------------------


def test_neighbours_match_the_full_listing(served: Served) -> None:
    names = []
    for seed in range(14):
        rating = [0.2, 0.5, 0.5, 0.8, 1.0, 0.0, 0.5][seed % 7]
        if seed % 4 == 3:
            names.append(
                served.stub.images.AddImages(
                    images_pb2.AddImagesRequest(images=[image_file(make_image(seed=300 + seed))]), timeout=30
                )
                .images[0]
                .image
            )
        else:
            names.append(add(served, "alice", make_image(seed=300 + seed), rating).image)
        put_tags(served, names[-1], "m1", 0.5, [("odd" if seed % 2 else "even", 0.9), ("all", 0.9)])
    cases = [
        (library_pb2.SORT_ORDER_UNSPECIFIED, library_pb2.RATED_FILTER_UNSPECIFIED, [], []),
        (library_pb2.SORT_ORDER_RATING_DESC, library_pb2.RATED_FILTER_ALL, [], []),
        (library_pb2.SORT_ORDER_RATING_ASC, library_pb2.RATED_FILTER_ALL, ["all"], []),
        (library_pb2.SORT_ORDER_RATING_DESC, library_pb2.RATED_FILTER_YES, ["all"], ["odd"]),
        (library_pb2.SORT_ORDER_DATE_ASC, library_pb2.RATED_FILTER_ALL, [], []),
        (library_pb2.SORT_ORDER_NAME_DESC, library_pb2.RATED_FILTER_NO, [], []),
        (library_pb2.SORT_ORDER_RATING_DESC, library_pb2.RATED_FILTER_NO, ["odd"], []),
    ]
    for sort, rated, include, exclude in cases:
        listing = served.stub.library.GetUserData(
            library_pb2.GetUserDataRequest(
                user="alice", sort=sort, rated=rated, include_tags=include, exclude_tags=exclude
            ),
            timeout=30,
        ).images
        paged = []
        for page in (1, 2, 3, 4):
            paged += served.stub.library.GetUserData(
                library_pb2.GetUserDataRequest(
                    user="alice", sort=sort, rated=rated, include_tags=include, exclude_tags=exclude, page=page, limit=4
                ),
                timeout=30,
            ).images
        assert [r.image for r in paged] == [r.image for r in listing]
        assert listing, (sort, rated)
        for index, row in enumerate(listing):
            got = served.stub.library.GetImageNeighbours(
                library_pb2.GetImageNeighboursRequest(
                    image=row.image, user="alice", sort=sort, rated=rated, include_tags=include, exclude_tags=exclude
                ),
                timeout=30,
            )
            case = (sort, rated, include, index)
            assert (got.position, got.max_image) == (index + 1, len(listing)), case
            prev = listing[index - 1] if index else None
            nxt = listing[index + 1] if index + 1 < len(listing) else None
            assert got.HasField("prev") == (prev is not None), case
            assert got.HasField("next") == (nxt is not None), case
            if prev is not None:
                assert got.prev.image == prev.image and got.prev.HasField("rating") == prev.HasField("rating"), case
                if prev.HasField("rating"):
                    assert got.prev.rating == prev.rating
            if nxt is not None:
                assert got.next.image == nxt.image, case
        outside = {n for n in names} - {r.image for r in listing}
        if outside:
            request = library_pb2.GetImageNeighboursRequest(
                image=sorted(outside)[0],
                user="alice",
                sort=sort,
                rated=rated,
                include_tags=include,
                exclude_tags=exclude,
            )
            assert rpc_error(served.stub.library.GetImageNeighbours, request)[:2] == (NOT_FOUND, "image_not_in_list")
    unknown = library_pb2.GetImageNeighboursRequest(image=name_of(make_image(seed=999)), user="alice")
    assert rpc_error(served.stub.library.GetImageNeighbours, unknown)[:2] == (NOT_FOUND, "image_not_found")
    nobody = library_pb2.GetImageNeighboursRequest(image=names[0], user="nobody")
    assert rpc_error(served.stub.library.GetImageNeighbours, nobody)[:2] == (NOT_FOUND, "user_not_found")


def test_background_results_for_a_deleted_image_are_dropped(settings, engine) -> None:
    """The worker's tagging and embedding of an image deleted while the
    model ran store nothing for it, finish the rest of the batch, and raise
    nothing (the deleted image's work is done)."""
    import numpy as np

    from tagrate_dataset.peers import ExtractorInfo, TaggerModelInfo
    from tagrate_dataset.records import StoredImage
    from tagrate_dataset.server import create_server
    from tagrate_dataset.tags import tagging as tagging_module
    from tagrate_dataset.work.imagework import BatchOutcome

    server = create_server(settings)
    servicer_tagging, servicer_features = server.tagging, server.features
    port = server.start()
    try:
        import grpc as _grpc

        from tagrate_common.protos import (
            images_pb2,
        )

        with _grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = DatasetStubs(channel)
            served = Served(settings, stub, f"127.0.0.1:{port}", engine)
            doomed = add(served, "alice", make_image(seed=400), 0.5).image
            kept = add(served, "alice", make_image(seed=401), 0.5).image
            with engine.connect() as conn:
                ids = dict(conn.execute(text("SELECT name, id FROM images")).all())
            batch = [StoredImage(ids[doomed], doomed), StoredImage(ids[kept], kept)]
            stub.images.DeleteImage(images_pb2.DeleteImageRequest(image=doomed), timeout=30)
            tagger = TaggerModelInfo("m1", 0.5, 2)
            # The tagger's result type is changing ("one backbone pass"): a
            # Tagged where it exists, the plain tag list before.
            result = getattr(tagging_module, "Tagged", lambda tags: tags)
            servicer_tagging.store(tagger, BatchOutcome([(image, result([("cat", 0.9)])) for image in batch], []))
            vector = np.ones(4, dtype="<f4")
            servicer_features.store(ExtractorInfo("x1", 4), BatchOutcome([(image, vector) for image in batch], []))
            with engine.connect() as conn:
                tagged = {n for (n,) in conn.execute(text("SELECT image_id FROM image_taggings"))}
                embedded = {n for (n,) in conn.execute(text("SELECT image_id FROM image_features"))}
                images = {n for (n,) in conn.execute(text("SELECT name FROM images"))}
            assert tagged == embedded == {ids[kept]}
            assert images == {kept}
    finally:
        server.stop(0)
