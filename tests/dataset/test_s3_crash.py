"""The S3 blob backend under SIGKILL: the dataset service (its own process,
blobs in a bucket on moto) is killed in the middle of an upload, once while
the object's PUT is half sent and once after the bucket stored it but
before the service heard back. Neither leaves anything half-written: the
torn PUT stores nothing, the stored object has no row (never served) and is
removed at the next start, and the same image uploads cleanly afterwards.
(The filesystem backend's crash tests are test_durability.py and
test_delete_crash.py.)"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Literal

import grpc
import pytest

from tagrate_common.dataset_stubs import DatasetStubs
from tagrate_common.protos import images_pb2
from tests.dataset.conftest import dataset_process, image_file
from tests.imagefactory import make_image
from tests.s3server import HoldingProxy, MotoServer
from tests.support import ServiceProcess, free_port


def _service(tmp_path: Path, database_url: str, port: int, bucket: str, endpoint: str) -> ServiceProcess:
    return dataset_process(
        tmp_path,
        database_url,
        port,
        DATASET_BLOB_BACKEND="s3",
        DATASET_S3_BUCKET=bucket,
        DATASET_S3_ENDPOINT_URL=endpoint,
        DATASET_S3_PREFIX="lib",
        # Objects without a row are removed at start at once (no replica is uploading meanwhile).
        DATASET_STALE_TEMP_SECONDS="0",
    )


def _upload(target: str, data: bytes) -> None:
    with grpc.insecure_channel(target) as channel:
        DatasetStubs(channel).images.AddImages(images_pb2.AddImagesRequest(images=[image_file(data)]), timeout=60)


@pytest.mark.slow
@pytest.mark.parametrize("hold", ["body", "response"])
def test_sigkill_during_an_s3_upload_leaves_nothing_half_written(
    tmp_path: Path, database_url: str, moto_server: MotoServer, hold: Literal["body", "response"]
) -> None:
    bucket = moto_server.new_bucket()
    port = free_port()
    data = make_image("JPEG", (640, 480), seed=77)
    name = f"{hashlib.sha256(data).hexdigest()}.jpg"
    key = f"lib/blobs/{name[:2]}/{name}"
    proxy = HoldingProxy(moto_server.port, b"/blobs/", hold)
    service = _service(tmp_path, database_url, port, bucket, proxy.url).start()
    failed: list[BaseException] = []

    def upload() -> None:
        try:
            _upload(service.target, data)
        except grpc.RpcError as exc:
            failed.append(exc)

    uploader = threading.Thread(target=upload)
    uploader.start()
    try:
        assert proxy.held.wait(60), service.log()
        service.kill()  # SIGKILL mid-upload: no shutdown hook runs
        uploader.join(30)
    finally:
        proxy.close()
    assert len(failed) == 1  # never acknowledged
    # A torn PUT stores nothing; a completed one is an object without a row.
    assert moto_server.keys(bucket) == ([key] if hold == "response" else [])

    restarted = _service(tmp_path, database_url, port, bucket, moto_server.url).start()
    try:
        assert moto_server.keys(bucket) == []  # the orphan was collected at start
        with grpc.insecure_channel(restarted.target) as channel:
            stub = DatasetStubs(channel)
            with pytest.raises(grpc.RpcError) as missing:
                stub.images.GetImage(images_pb2.GetImageRequest(image=name), timeout=10)
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        _upload(restarted.target, data)  # the same image stores cleanly now
        assert moto_server.keys(bucket, "lib/blobs/") == [key]
        stored = moto_server.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        assert stored == data
        with grpc.insecure_channel(restarted.target) as channel:
            got = DatasetStubs(channel).images.GetImage(images_pb2.GetImageRequest(image=name), timeout=10)
        assert got.data == data
    finally:
        restarted.terminate()
