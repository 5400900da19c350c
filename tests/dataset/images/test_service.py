"""ImageService over real gRPC, on SQLite and PostgreSQL, with the images in
folders and in an S3 bucket (moto): AddImages, GetImage (original, resized,
ETags), GetThumbnail, DeleteImage and PutImageFeatures, their refusals
(status, tagrate error code, and proof that a refused call stored nothing)."""

from __future__ import annotations

import io
import math
import threading
from collections import Counter

import grpc
import pytest
from PIL import Image
from sqlalchemy import text

from tagrate_common.dataset_stubs import DatasetStubs
from tagrate_common.protos import common_pb2, images_pb2, library_pb2, ratings_pb2, tags_pb2
from tagrate_dataset.images import blobs as blobs_module
from tagrate_dataset.server import create_server
from tests.dataset.calls import (
    INVALID,
    NOT_FOUND,
    add,
    assert_refused,
    files,
    name_of,
    put_tags,
    record_trained,
    up_to_date,
    update,
)
from tests.dataset.conftest import Served, image_file, make_settings, rpc_error, stored_files
from tests.imagefactory import encode, make_image, rotated_jpeg
from tests.s3server import MotoServer
from tests.support import free_port


@pytest.fixture(params=["fs", "s3"])
def settings(request: pytest.FixtureRequest, tmp_path, database_url: str):
    """Each test runs with the images in folders and in a fresh bucket."""
    if request.param == "fs":
        return make_settings(tmp_path, database_url)
    moto: MotoServer = request.getfixturevalue("moto_server")
    s3 = {"blob_backend": "s3", "s3_bucket": moto.new_bucket(), "s3_endpoint_url": moto.url, "s3_prefix": "t/"}
    return make_settings(tmp_path, database_url, **s3)


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
    served.settings.blob_stores()[0].delete(f"{image[:2]}/{image}")
    assert rpc_error(served.stub.images.GetImage, images_pb2.GetImageRequest(image=image))[:2] == (
        NOT_FOUND,
        "image_not_found",
    )
    assert rpc_error(served.stub.images.GetThumbnail, images_pb2.GetThumbnailRequest(image=image))[:2] == (
        NOT_FOUND,
        "image_not_found",
    )


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
            assert blobs.cache.exists(blobs.thumbnail_key(name, 305))
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
            assert [key for key in stored_files(settings) if sha in key] == []
    finally:
        channel.close()
        server.stop(0)
