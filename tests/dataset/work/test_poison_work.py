"""Poison work items, against a real tagger process that dies (``os._exit``,
as an OOM kill would) whenever it is asked to tag one particular image and
is restarted at once, like a supervisor would: the images around the poison
one are tagged, the poison one is tried a bounded number of times and parked
as failed with its error, /verifydatasets (VerifyDatasets) shows it, a
restart of the dataset service does not bring the crash loop back, and a
retry queues it again. On SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from sqlalchemy import text

from tagrate_common.protos import tags_pb2, work_pb2
from tests.dataset.conftest import Served, rpc_error
from tests.dataset.peers import DEADLINE, add_rating, dataset_service, images, tagged, wait_for
from tests.support import REPO_ROOT, free_port

MAX_ATTEMPTS = 3


class RestartingTagger:
    """``tests/dataset/crashing_tagger.py`` in a child process on a fixed
    port, started again whenever it dies, until :meth:`stop`."""

    def __init__(self, port: int, state: Path) -> None:
        self.port, self.state = port, state
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._keep_running, daemon=True)

    def _keep_running(self) -> None:
        while not self._stopping.is_set():
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.dataset.crashing_tagger", str(self.port), str(self.state)], cwd=REPO_ROOT
            )
            self.proc.wait()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self.proc is not None:
            self.proc.terminate()
        self._thread.join(10)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()

    def crashes(self) -> int:
        path = self.state / "crashes"
        return len(path.read_text().split()) if path.exists() else 0


@contextmanager
def restarting_tagger(tmp_path: Path) -> Iterator[tuple[RestartingTagger, str]]:
    state = tmp_path / "tagger-state"
    state.mkdir()
    port = free_port()
    tagger = RestartingTagger(port, state)
    tagger.start()
    try:
        yield tagger, f"127.0.0.1:{port}"
    finally:
        tagger.stop()


def tag_work(served: Served) -> list[tuple[str, str, int, str]]:
    """(image name, state, attempts, error) of every tag work item, by name."""
    with served.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT i.name, w.state, w.attempts, w.error FROM work_items w JOIN images i ON i.id = w.image_id "
                "WHERE w.kind = 'tag' ORDER BY 1"
            )
        ).all()
    return [tuple(row) for row in rows]


def verify(served: Served) -> work_pb2.VerifyDatasetsResponse:
    return served.stub.work.VerifyDatasets(work_pb2.VerifyDatasetsRequest(), timeout=DEADLINE)


def test_an_image_that_kills_the_tagger_is_parked_not_looped(tmp_path: Path, database_url: str) -> None:
    poison_data, *good_data = images(4, start=20)
    poison = hashlib.sha256(poison_data).hexdigest() + ".png"
    options = {
        "tag_batch_size": 8,
        "tagger_timeout_seconds": 10,
        "work_max_attempts": MAX_ATTEMPTS,
        "work_retry_seconds": 0.2,
    }
    with restarting_tagger(tmp_path) as (tagger, addr):
        (tagger.state / "poison").write_text(poison)
        with dataset_service(tmp_path, database_url, tagger_addr=addr, **options) as (served, _):
            # The poison image goes in among good ones, so it is batched with some.
            names = [add_rating(served, "alice", data) for data in (good_data[0], poison_data, *good_data[1:])]
            assert names[1] == poison
            good = [name for name in names if name != poison]
            for name in good:
                wait_for(f"{name} to be tagged", lambda name=name: tagged(served, name), timeout=60)
            wait_for("the poison image to be parked", lambda: tag_work(served) and tag_work(served)[0][1] == "failed")
            [(name, state, attempts, error)] = tag_work(served)
            assert (name, state, attempts) == (poison, "failed", MAX_ATTEMPTS)
            assert "tagger" in error
            assert tagger.crashes() == MAX_ATTEMPTS  # bounded: one death per attempt, no more
            assert tagged(served, poison) is None

            reply = verify(served)
            work = {state.kind: (state.pending, state.failed) for state in reply.work}
            assert work == {"tag": (0, 1), "embed": (len(names), 0), "hash": (0, 0)}  # no rater: embedding waits
            [failed] = reply.failed_work
            assert (failed.image, failed.kind, failed.attempts, failed.failed_by) == (
                poison,
                "tag",
                MAX_ATTEMPTS,
                "crashing-tagger@1",
            )
            assert failed.error == error

        # A restarted dataset service (its queue is durable) does not start
        # the crash loop again.
        with dataset_service(tmp_path, database_url, tagger_addr=addr, **options) as (served, dataset):
            assert dataset.worker is not None
            time.sleep(1.5)  # several polls of the queue
            assert tagger.crashes() == MAX_ATTEMPTS
            assert tag_work(served)[0][1:3] == ("failed", MAX_ATTEMPTS)

            # Fixed (say, the tagger got more memory): /updatetags queues the
            # failed work again and the worker tags it; it is not tagged
            # inside /updatetags itself.
            (tagger.state / "poison").write_text("")
            reply = served.stub.tags.UpdateTags(tags_pb2.UpdateTagsRequest(), timeout=DEADLINE)
            assert reply.updated_images_count == 0
            wait_for("the retried image to be tagged", lambda: tagged(served, poison))
            wait_for("its work to be done", lambda: tag_work(served) == [])
            assert tagger.crashes() == MAX_ATTEMPTS
            reply = verify(served)
            assert {state.kind: state.failed for state in reply.work} == {"tag": 0, "embed": 0, "hash": 0}
            assert list(reply.failed_work) == []


def test_retry_failed_work_queues_parked_work_again(tmp_path: Path, database_url: str) -> None:
    """RetryFailedWork makes parked work pending with fresh attempts, for
    one kind or all; a kind it does not know is a 400-type error."""
    with dataset_service(tmp_path, database_url, work_max_attempts=1) as (served, _):
        names = [add_rating(served, "alice", data) for data in images(2)]
        with served.engine.begin() as conn:
            conn.execute(
                text("UPDATE work_items SET state = 'failed', attempts = 1, error = 'boom', failed_by = 'm@1'")
            )
        assert [(f.image, f.kind) for f in verify(served).failed_work] == sorted(
            [(name, kind) for name in names for kind in ("embed", "tag")], key=lambda pair: (pair[1], pair[0])
        )

        retry = served.stub.work.RetryFailedWork
        assert retry(work_pb2.RetryFailedWorkRequest(kind="tag"), timeout=DEADLINE).retried == 2
        assert tag_work(served) == [(name, "pending", 0, "boom") for name in sorted(names)]
        assert retry(work_pb2.RetryFailedWorkRequest(kind="tag"), timeout=DEADLINE).retried == 0
        assert retry(work_pb2.RetryFailedWorkRequest(), timeout=DEADLINE).retried == 2  # the embed work
        assert {state.kind: state.failed for state in verify(served).work} == {"tag": 0, "embed": 0, "hash": 0}

        status, code, message = rpc_error(retry, work_pb2.RetryFailedWorkRequest(kind="resize"))
        assert (status, code) == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_kind")
        assert "tag, embed" in message
