"""Interactive calls never wait behind background work, against a real
tagger process: while a flood of background Tag calls (marked the way the
dataset service marks its imports, by a Backend with priority=BACKGROUND)
sits in the tagger's batcher queue, a foreground Tag call runs within a batch
or two and finishes before all but at most two of the flood's calls; sent as
foreground, the same flood is ahead of it: every image queued before it runs
first (the contrast shows the test can fail)."""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from tagrate_common.batcher import BACKGROUND, FOREGROUND, Priority
from tagrate_common.grpc_client import Backend
from tagrate_common.protos import common_pb2, tagger_pb2, tagger_pb2_grpc
from tests.support import ServiceProcess, free_port

FLOOD_CALLS = 6  # well under the server's 16 RPC threads: the foreground call gets one at once
FLOOD_IMAGES = 16  # per call, as the dataset worker's batches
BATCH = 8  # the tagger's batch size (the CPU default, set explicitly): a flood call is two batches
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
        "TAGGER_MAX_BATCH_SIZE": str(BATCH),
        # The flood's size is set for onnx-fp32's speed; auto's int8 model
        # drains it about as fast as it is decoded, so it never queues up.
        "TAGGER_BACKEND": "onnx-fp32",
        # One thread per forward pass while two request threads decode: the
        # model, not the decoding, is the bottleneck, so the flood queues up.
        "TAGGER_TORCH_THREADS": "1",
        "TAGRATE_DATA_DIR": str(tmp_path_factory.mktemp("tagger-data")),
    }
    log = tmp_path_factory.mktemp("tagger-log") / "tagger.log"
    service = ServiceProcess("tagrate_tagger", env, log, f"127.0.0.1:{port}").start(timeout=180)
    try:
        yield f"127.0.0.1:{port}", f"http://127.0.0.1:{metrics}/metrics"
    finally:
        assert service.terminate() == 0


def batcher_metrics(metrics_url: str) -> dict[str, float]:
    """The tagger batcher's series by name, from one scrape (a labelled
    histogram is absent until its first observation)."""
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    return {name: float(value) for name, value in re.findall(r'^(\w+)\{batcher="tagger"\} (\S+)$', text, re.M)}


def queue_depth(metrics_url: str, background: bool) -> float:
    name = "tagrate_batcher_background_queue_depth" if background else "tagrate_batcher_queue_depth"
    found = batcher_metrics(metrics_url)
    assert name in found, f"{name} not in the tagger's metrics"
    return found[name]


def images_run(metrics_url: str) -> float:
    """Images the batcher has finished so far (the batch sizes' sum)."""
    return batcher_metrics(metrics_url).get("tagrate_batcher_batch_size_sum", 0.0)


def tag_request(data: bytes, count: int) -> tagger_pb2.TagRequest:
    return tagger_pb2.TagRequest(
        images=[common_pb2.ImageFile(data=data, filename=f"{i}.jpg") for i in range(count)], limit=5
    )


@dataclass
class Flood:
    foreground_done: float  # when the single foreground call's reply came back (monotonic seconds)
    flood_done: list[float]  # when each flood call's reply came back, sorted
    early: int  # flood calls already finished when the single call was sent
    queued: float  # images queued when it was sent (all of them queued before it)
    run_meanwhile: float  # images the batcher finished between sending it and its reply


def flood_then_one(target: str, metrics_url: str, photo: bytes, flood_priority: Priority) -> Flood:
    """Queues the flood at ``flood_priority``, then sends one foreground
    image once most of the flood is queued. The tagger submits each image to
    its batcher as soon as it is decoded, so the calls' images interleave in
    the queue: which calls were wholly queued is not known, but how many
    images were queued ahead of the single one is (one scrape, just before
    it is sent), and so is how many the batcher finished until its reply (a
    scrape after it: every batch before the single image's own is counted
    by then, since a batch's size is recorded before the next batch runs)."""
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
                assert sum(call.done() for call in calls) <= 1, "the flood ran as fast as it queued; make it larger"
                time.sleep(0.005)
            early = sum(call.done() for call in calls)
            found = batcher_metrics(metrics_url)
            queued, run_before = found["tagrate_batcher_queue_depth"], found.get("tagrate_batcher_batch_size_sum", 0.0)
            reply = client.stub.Tag(tag_request(photo, 1))
            foreground_done = time.monotonic()
            run_meanwhile = images_run(metrics_url) - run_before
            assert "tabby_cat" in [tag.name for tag in reply.results[0].tags]
            for call in calls:
                call.result()
        return Flood(foreground_done, sorted(finished), early, queued, run_meanwhile)
    finally:
        flood_client.close()
        client.close()


@pytest.mark.slow
def test_a_foreground_call_overtakes_a_queued_background_flood(tagger, photos) -> None:
    target, metrics_url = tagger
    photo = photos["chelsea"]
    # Warm the channel and the model's batch sizes with plain calls: the first flood through a cold service
    # can drain as fast as it is decoded, which proves nothing either way.
    warm = Backend("tagger", target, tagger_pb2_grpc.TaggerServiceStub, TIMEOUT, 64 << 20)
    try:
        for _ in range(3):
            warm.stub.Tag(tag_request(photo, FLOOD_IMAGES))
    finally:
        warm.close()

    # Orders of completion, not durations, so a slow or busy machine proves the same. Marked as background,
    # the flood lets the foreground call by: at most two of its calls finish first (the batch running when it
    # arrives, and one more while its own image is decoded on a machine whose cores the model keeps busy).
    background = flood_then_one(target, metrics_url, photo, BACKGROUND)
    overtaken = sum(t > background.foreground_done for t in background.flood_done)
    waiting = FLOOD_CALLS - background.early  # the calls still queued when it was sent
    assert overtaken >= waiting - 2, f"{waiting - overtaken} of {waiting} queued background calls finished first"
    assert queue_depth(metrics_url, background=True) == 0

    # The same flood sent as foreground work is simply ahead in the queue: every image queued before the single
    # call runs before its reply, but for those sharing its own batch (at most BATCH - 1, whose size may not be
    # recorded yet) and one batch more for a scrape that read an image as queued and, a moment later, as run.
    foreground = flood_then_one(target, metrics_url, photo, FOREGROUND)
    assert foreground.run_meanwhile >= foreground.queued - 2 * BATCH + 1, (foreground.run_meanwhile, foreground.queued)
