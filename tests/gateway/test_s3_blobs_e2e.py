"""Images kept in an S3 bucket (DATASET_BLOB_BACKEND=s3, moto in server
mode): upload, original, resized version, thumbnail and delete through the
gateway, on SQLite and PostgreSQL. Nothing lands on the local disk, every
object sits under the configured prefix, and a delete leaves none of the
image's objects behind."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image

from tests.imagefactory import make_image
from tests.s3server import MotoServer

from .stack import add_rating, start_stack, stored_name


@pytest.fixture
def s3_stack(database_url, tmp_path, moto_server: MotoServer):
    bucket = moto_server.new_bucket()
    settings = {"blob_backend": "s3", "s3_bucket": bucket, "s3_endpoint_url": moto_server.url, "s3_prefix": "lib/"}
    stack = start_stack(database_url, tmp_path / "data", dataset=settings)
    yield stack, bucket
    stack.stop()


def test_images_live_in_the_bucket_from_upload_to_delete(s3_stack, moto_server: MotoServer) -> None:
    stack, bucket = s3_stack
    jpeg, png = make_image("JPEG", (400, 300), seed=31), make_image("PNG", (120, 90), seed=32)
    jpeg_name, png_name = stored_name(jpeg, "jpg"), stored_name(png, "png")
    sha = jpeg_name.split(".")[0]
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        assert add_rating(http, jpeg, "alice", "0.8", "a.jpg").status_code == 200
        added = http.post("/addimage", files={"image": ("b.png", png)})
        assert added.status_code == 200, added.text
        assert moto_server.keys(bucket) == sorted(
            [f"lib/blobs/{jpeg_name[:2]}/{jpeg_name}", f"lib/blobs/{png_name[:2]}/{png_name}"]
        )
        assert not (stack.data_dir / "dataset" / "blobs").exists()

        original = http.get("/getimage", params={"image": jpeg_name})
        assert original.status_code == 200 and original.content == jpeg
        small = http.get("/getimage", params={"image": jpeg_name, "size": "100"})
        assert small.status_code == 200 and Image.open(io.BytesIO(small.content)).size == (100, 75)
        thumb = http.get("/getthumbnail", params={"image": jpeg_name, "size": "64"})
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/webp"
        assert Image.open(io.BytesIO(thumb.content)).size == (64, 64)
        assert f"lib/cache/100/{sha[:2]}/{sha}.jpg" in moto_server.keys(bucket)
        assert f"lib/cache/square-64/{sha[:2]}/{sha}.webp" in moto_server.keys(bucket)
        # Served from the bucket's cache the second time, byte for byte.
        assert http.get("/getthumbnail", params={"image": jpeg_name, "size": "64"}).content == thumb.content

        deleted = http.post("/deleteimage", params={"image": jpeg_name})
        assert deleted.status_code == 200, deleted.text
        assert [key for key in moto_server.keys(bucket) if sha in key] == []
        assert moto_server.keys(bucket) == [f"lib/blobs/{png_name[:2]}/{png_name}"]
        assert http.get("/getimage", params={"image": jpeg_name}).status_code == 404
        assert http.get("/getthumbnail", params={"image": jpeg_name}).status_code == 404
        assert http.get("/getimage", params={"image": png_name}).content == png
