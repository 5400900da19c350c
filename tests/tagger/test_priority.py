"""Interactive calls never wait behind background work, against a real
tagger process: while a flood of background Tag calls (marked the way the
dataset service marks its imports, by a Backend with priority=BACKGROUND)
sits in the tagger's batcher queue, a foreground Tag call runs in the next
batch and finishes before all but at most one of the flood's calls; sent as
foreground, the same flood is ahead of it (the contrast shows the test can
fail)."""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from tagrate_common.batcher import BACKGROUND, FOREGROUND, Priority
from tagrate_common.grpc_client import Backend
from tagrate_common.protos import common_pb2, tagger_pb2, tagger_pb2_grpc
from tests.support import ServiceProcess, free_port

FLOOD_CALLS = 6  # well under the server's 16 RPC threads: the foreground call gets one at once
FLOOD_IMAGES = 16  # per call, as the dataset worker's batches
TIMEOUT = 120.0


@pytest.fixture(scope="module")
def tagger(tmp_path_factory):
    """A tagger process on the default model; (gRPC target, metrics URL)."""
    port, metrics = free_port(), free_port()
    env = {
        "TAGGER_PORT": str(port),
        "TAGGER_METRICS_PORT": str(metrics),
        "TAGGER_DEVICE": "cpu",
        "TAGGER_MAX_BULK_FILES": str(FLOOD_IMAGES),
        "TAGRATE_DATA_DIR": str(tmp_path_factory.mktemp("tagger-data")),
    }
    log = tmp_path_factory.mktemp("tagger-log") / "tagger.log"
    service = ServiceProcess("tagrate_tagger", env, log, f"127.0.0.1:{port}").start(timeout=180)
    try:
        yield f"127.0.0.1:{port}", f"http://127.0.0.1:{metrics}/metrics"
    finally:
        assert service.terminate() == 0


def queue_depth(metrics_url: str, background: bool) -> float:
    name = "tagrate_batcher_background_queue_depth" if background else "tagrate_batcher_queue_depth"
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    match = re.search(rf'^{name}{{batcher="tagger"}} (\S+)$', text, re.MULTILINE)
    assert match, f"{name} not in the tagger's metrics"
    return float(match.group(1))


def tag_request(data: bytes, count: int) -> tagger_pb2.TagRequest:
    return tagger_pb2.TagRequest(
        images=[common_pb2.ImageFile(data=data, filename=f"{i}.jpg") for i in range(count)], limit=5
    )


def flood_then_one(
    target: str, metrics_url: str, photo: bytes, flood_priority: Priority
) -> tuple[float, float, list[float]]:
    """Queues the flood at ``flood_priority``, then sends one foreground
    image once most of the flood is queued. Returns when the foreground
    call was sent and finished, and when each flood call finished
    (monotonic seconds)."""
    flood_client = Backend("tagger", target, tagger_pb2_grpc.TaggerServiceStub, TIMEOUT, 64 << 20, flood_priority)
    client = Backend("tagger", target, tagger_pb2_grpc.TaggerServiceStub, TIMEOUT, 64 << 20)
    finished: list[float] = []
    lock = threading.Lock()

    def flood_call() -> None:
        reply = flood_client.stub.Tag(tag_request(photo, FLOOD_IMAGES))
        assert len(reply.results) == FLOOD_IMAGES
        with lock:
            finished.append(time.monotonic())

    try:
        with ThreadPoolExecutor(FLOOD_CALLS) as pool:
            calls = [pool.submit(flood_call) for _ in range(FLOOD_CALLS)]
            deadline = time.monotonic() + 60
            # Wait until most of the flood has been decoded and queued.
            while queue_depth(metrics_url, background=False) < FLOOD_CALLS * FLOOD_IMAGES * 0.6:
                assert time.monotonic() < deadline, "the flood never queued up"
                assert not any(call.done() for call in calls), "the flood ran as fast as it queued; make it larger"
                time.sleep(0.005)
            sent = time.monotonic()
            reply = client.stub.Tag(tag_request(photo, 1))
            foreground_done = time.monotonic()
            assert "tabby_cat" in [tag.name for tag in reply.results[0].tags]
            for call in calls:
                call.result()
        return sent, foreground_done, sorted(finished)
    finally:
        flood_client.close()
        client.close()


@pytest.mark.slow
def test_a_foreground_call_overtakes_a_queued_background_flood(tagger, photos) -> None:
    target, metrics_url = tagger
    photo = photos["chelsea"]
    # Warm the channels and the model's batch sizes.
    flood_then_one(target, metrics_url, photo, BACKGROUND)

    # Orders of completion, not durations, so a slow or busy machine proves the same: each flood call is two
    # batches of 8, and the batch running when the foreground call arrives may be the one that completes a
    # flood call, so at most that one call finishes first; every other waits behind the foreground call.
    sent, foreground_done, flood_done = flood_then_one(target, metrics_url, photo, BACKGROUND)
    overtaken = sum(t > foreground_done for t in flood_done)
    timing = (
        f"foreground {foreground_done - sent:.3f}s, the flood drained {flood_done[-1] - sent:.3f}s after it was sent"
    )
    assert overtaken >= FLOOD_CALLS - 1, f"{FLOOD_CALLS - overtaken} background calls finished first ({timing})"
    assert queue_depth(metrics_url, background=True) == 0

    # The same flood sent as foreground work is simply ahead in the queue: at most one of its calls finishes
    # after the single call, where marked as background at least all but one did.
    _, foreground_done, flood_done = flood_then_one(target, metrics_url, photo, FOREGROUND)
    assert sum(t > foreground_done for t in flood_done) <= 1
