"""Two replicas of every service on one PostgreSQL (``TAGRATE_RUN_REPLICAS=2``
plus a second gateway) under steady /addrating, /getuserdata, /tag and
training load; one replica of each service is SIGKILLed in turn (the
trainer's: the one running the job). Every acknowledged rating is stored
afterwards with its value, failures reach clients only within
``RETRY_WINDOW`` seconds of a kill, the same image is always tagged the
same, and the training cut off on one trainer finishes on the other.

Starting ten processes takes minutes on a busy two-core machine; the load
and the kills take about a minute after that."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from bench.harness.replica_load import (
    WRITERS,
    MixedLoad,
    job_row,
    kill,
    replica_pids,
    running_job_owner,
    second_gateway,
    stored_ratings,
    wait_http,
)
from bench.harness.supervised_stack import Stack
from tests.support import free_port

pytestmark = pytest.mark.slow

# Seconds after a SIGKILL within which a client may see a failure (the
# measured windows are printed; see docs/replicas.md).
RETRY_WINDOW = 15.0
ENV = {
    "TAGRATE_RUN_REPLICAS": "2",
    "TRAINER_JOB_LEASE_SECONDS": "3",
    "TRAINER_RETRAIN_AFTER_RATINGS": "0",
    # A job that runs long enough to be cut off (no early stop).
    "TRAINER_MAX_EPOCHS": "300",
    "TRAINER_PATIENCE": "300",
    "TAGGER_TORCH_THREADS": "1",
    "RATER_TORCH_THREADS": "1",
}


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory, make_pg_database) -> Iterator[tuple[Stack, str, str]]:
    root = tmp_path_factory.mktemp("replicas")
    url = make_pg_database()
    stack = Stack(root / "data", url, ENV)
    extra = None
    try:
        stack.wait_running(timeout=600)
        port = free_port()
        extra = second_gateway(stack.proc.pid, port, root / "gateway2.log")
        wait_http(f"http://127.0.0.1:{port}")
        yield stack, f"http://127.0.0.1:{port}", url
    finally:
        if extra is not None:
            extra.kill()
            extra.wait()
        stack.stop()


def _wait(what: str, check, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{what} not within {timeout}s")


def test_losing_one_replica_of_each_service_loses_nothing(group: tuple[Stack, str, str]) -> None:
    stack, gateway2, url = group
    load = MixedLoad([stack.url, gateway2]).start()
    kills: dict[str, float] = {}
    try:
        job_id, owner = _wait("a training job", lambda: running_job_owner(url))
        kills["trainer"] = kill(owner)
        for service in ("tagger", "rater", "dataset", "gateway"):
            time.sleep(5.0)
            pids = replica_pids(stack.proc.pid)
            victim = sorted(name for name in pids if name.startswith(f"{service}:"))[-1]
            kills[service] = kill(pids[victim])
        state = _wait(
            "the job's end", lambda: (row := job_row(url, job_id))[0] not in ("running", "stopping") and row, 300
        )
        time.sleep(3.0)
    finally:
        load.finish()

    # Each failure counts for the kill just before it.
    windows = dict.fromkeys(kills, 0.0)
    for request in load.failures():
        before = [(at, service) for service, at in kills.items() if at <= request.ended]
        if before:
            at, service = max(before)
            windows[service] = max(windows[service], request.ended - at)
    print("client-visible failures after each kill (s):", {k: round(v, 2) for k, v in windows.items()})
    print("requests:", len(load.requests), "failed:", [(r.kind, r.status) for r in load.failures()])
    # The training cut off on the killed trainer finished on the other one.
    assert state[0] == "succeeded" and state[1] >= 2, state
    assert str(owner) not in state[2].split("-")

    # Every acknowledged rating is there, with its value, whichever replica took it.
    for user in (f"writer{i}" for i in range(WRITERS)):
        stored = stored_ratings(gateway2, user)
        acked = load.acked.get(user, {})
        assert acked and {image: stored.get(image) for image in acked} == acked

    # The same image was always tagged the same, whichever tagger replica answered.
    assert len(load.tag_answers) == 1

    first_kill = min(kills.values())
    for request in load.failures():
        assert request.started >= first_kill and any(
            0 <= request.started - at <= RETRY_WINDOW for at in kills.values()
        ), request
