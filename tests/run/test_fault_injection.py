"""``make run`` contains crashes: the real supervisor runs the whole group on
free ports while a few clients keep adding ratings (distinct real JPEGs) and
reading them back; each child in turn is SIGKILLed. The rest keep answering,
the gateway answers 503 naming the missing service (fast, never past its
deadline), the victim is back within a bound, and every rating the gateway
acknowledged is there afterwards. A child that cannot start again (its port
taken) is reported as a crash loop and recovers once the port is free. A
second copy of the group on the same ports is refused at start and leaves
the first one's data alone. Ctrl-C stops everything in order."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.imagefactory import make_image

from .supervised import RunStack, bind_listener, free_port_block, http

pytestmark = pytest.mark.slow

DATASET_DEADLINE = 10.0  # the gateway's dataset deadline (its default, set explicitly below)
BACK_WITHIN = 60.0  # seconds from SIGKILL until the killed service answers through the gateway again
CRASH_LOOP_WITHIN = 120.0  # seconds for three failed starts of the trainer
WRITERS = 3
STACK_ENV = {
    "GATEWAY_DATASET_TIMEOUT_SECONDS": str(DATASET_DEADLINE),
    # Short waits so the crash loop below is reached, and left, in seconds.
    "TAGRATE_RUN_RESTART_BACKOFF_MAX_SECONDS": "2",
    "TAGRATE_RUN_CRASH_LOOP_EXITS": "3",
    # Wide enough for three slow starts (the trainer imports torch) on a busy machine.
    "TAGRATE_RUN_CRASH_LOOP_WINDOW_SECONDS": "300",
    "TAGRATE_RUN_STOP_TIMEOUT_SECONDS": "30",
    # Two cores are shared by five services and the load.
    "TAGGER_TORCH_THREADS": "1",
    "RATER_TORCH_THREADS": "1",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunStack]:
    root = tmp_path_factory.mktemp("run")
    running = RunStack(root / "data", root / "run.log", free_port_block(), STACK_ENV).start()
    try:
        yield running.wait_running()
    finally:
        running.kill_everything()


@dataclass
class Request:
    kind: str
    started: float
    ended: float
    status: int | None  # None: no HTTP answer (connection refused or reset)
    body: dict = field(default_factory=dict)


@dataclass
class Load:
    """Writers adding ratings (one user each, a new image every time) and a
    reader listing a user's ratings, until stopped."""

    url: str
    requests: list[Request] = field(default_factory=list)
    acked: dict[str, dict[str, str]] = field(default_factory=dict)  # user -> image -> rating
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def _record(self, kind: str, send: Callable[[], httpx.Response]) -> Request:
        started = time.monotonic()
        try:
            response = send()
            status, body = response.status_code, response.json()
        except httpx.TransportError:
            status, body = None, {}
        request = Request(kind, started, time.monotonic(), status, body)
        with self.lock:
            self.requests.append(request)
        return request

    def writer(self, index: int) -> None:
        user = f"writer{index}"
        # The client waits longer than any gateway deadline, so a hang shows as latency, not as a timeout.
        with httpx.Client(base_url=self.url, timeout=3 * DATASET_DEADLINE) as client:
            n = 0
            while not self.stop.is_set():
                n += 1
                image = make_image("JPEG", (48, 32), seed=index * 100_000 + n)
                rating = f"0.{(index * 7 + n) % 10}"
                files = {"image": (f"{user}-{n}.jpg", image)}
                request = self._record(
                    "addrating",
                    lambda form={"user": user, "rating": rating}, files=files: client.post(
                        "/addrating", data=form, files=files
                    ),
                )
                if request.status == 200:
                    with self.lock:
                        self.acked.setdefault(user, {})[request.body["image"]] = rating
                time.sleep(0.1)

    def reader(self) -> None:
        with httpx.Client(base_url=self.url, timeout=3 * DATASET_DEADLINE) as client:
            while not self.stop.is_set():
                self._record("getuserdata", lambda: client.get("/getuserdata", params={"user": "writer0"}))
                time.sleep(0.05)

    def start(self) -> Load:
        self.threads = [threading.Thread(target=self.writer, args=(i,)) for i in range(WRITERS)]
        self.threads.append(threading.Thread(target=self.reader))
        for thread in self.threads:
            thread.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    def between(self, kind: str, start: float, end: float) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.kind == kind and r.started >= start and r.ended <= end]


# How each service shows through the gateway: a request that needs it.
def _probe(client: httpx.Client, victim: str) -> tuple[int | None, str]:
    image = {"image": ("probe.jpg", make_image("JPEG", seed=7))}
    try:
        if victim == "tagger":
            response = client.post("/tag", files=image)
        elif victim == "rater":
            response = client.post("/rate", data={"user": "all"}, files=image)
        elif victim == "dataset":
            response = client.get("/getuserdata", params={"user": "writer0"})
        elif victim == "trainer":
            response = client.get("/trainerstatus")
        else:
            response = client.get("/healthz")
    except httpx.TransportError:
        return None, ""
    return response.status_code, response.json().get("code", "") if response.status_code != 200 else ""


def _is_down(victim: str, status: int | None, code: str) -> bool:
    if victim == "gateway":
        return status is None
    return status == 503 and code == f"{victim}_unavailable"


@dataclass
class Outage:
    victim: str
    killed_at: float
    back_at: float
    slowest_probe: float


def _kill_and_watch(stack: RunStack, victim: str, during: Callable[[], None] | None = None) -> Outage:
    """SIGKILLs ``victim``; sees it missing through the gateway, runs
    ``during`` while it is down, then waits until it answers again."""
    old = stack.pids()[victim]
    with http(stack, timeout=90) as client:
        os.kill(old, signal.SIGKILL)
        killed_at = time.monotonic()
        slowest = 0.0
        while True:  # the first restart waits 0.5 s, so a down window is always there to see
            t = time.monotonic()
            status, code = _probe(client, victim)
            slowest = max(slowest, time.monotonic() - t)
            if _is_down(victim, status, code):
                break
            assert time.monotonic() - killed_at < 5, f"{victim} never showed as down: {status} {code}"
            time.sleep(0.02)
        if during is not None:
            during()
        while True:
            t = time.monotonic()
            status, code = _probe(client, victim)
            slowest = max(slowest, time.monotonic() - t)
            if status is not None and not _is_down(victim, status, code):
                break
            assert time.monotonic() - killed_at < BACK_WITHIN + (CRASH_LOOP_WITHIN if during else 0), f"{victim}"
            time.sleep(0.1)
    back_at = time.monotonic()
    assert stack.pids()[victim] != old
    assert status != 503, (victim, status, code)
    return Outage(victim, killed_at, back_at, slowest)


def _block_port_until_crash_loop(stack: RunStack, victim: str) -> Callable[[], None]:
    """Takes ``victim``'s port so its restarts fail, until the supervisor
    reports a crash loop; then frees it."""

    def during() -> None:
        deadline = time.monotonic() + 5
        while True:
            try:
                blocker = bind_listener(stack.port(victim))
                break
            except OSError:  # the dying process may still hold it for a moment
                assert time.monotonic() < deadline, f"{victim}'s port never came free"
                time.sleep(0.01)
        with blocker:
            deadline = time.monotonic() + CRASH_LOOP_WITHIN
            while not any(line.startswith(f"CRASH LOOP: {victim}") for line in stack.run_lines()):
                assert time.monotonic() < deadline, f"no crash loop reported:\n{stack.log()[-4000:]}"
                time.sleep(0.2)
        port = stack.port(victim)
        lines = stack.run_lines()
        at = next(i for i, line in enumerate(lines) if line.startswith(f"CRASH LOOP: {victim}"))
        assert "died 3 times within 300s (last: exit code 1)" in lines[at]
        assert "retrying every 2s" in lines[at]
        said = "\n".join(lines[at + 1 : at + 11])
        assert f"cannot listen on 127.0.0.1:{port}: the port is in use (set TRAINER_PORT" in said

    return during


def test_a_second_group_on_the_same_ports_is_refused(stack: RunStack, tmp_path: Path) -> None:
    # Once up, the first group said where it is and how to fill it.
    assert f"tagrate is running: {stack.url}" in stack.log()
    assert f"import a folder of images: .venv/bin/tagrate --url {stack.url} import DIR" in stack.log()
    with http(stack) as client:
        added = client.post(
            "/addrating",
            data={"user": "first", "rating": "0.5"},
            files={"image": ("x.jpg", make_image("JPEG", seed=424242))},
        )
        assert added.status_code == 200, added.text
        before = client.get("/getuserdata", params={"user": "first"}).json()
    blobs = stack.data_dir / "dataset" / "blobs"
    files_before = sorted(blobs.rglob("*"))

    second = RunStack(tmp_path / "data", tmp_path / "second.log", stack.base_port).start()
    assert second.proc.wait(60) == 1, second.log()
    assert (
        f"startup failed: cannot listen on 127.0.0.1:{stack.port('tagger')}: the port is in use "
        "(set TAGGER_PORT or TAGRATE_RUN_BASE_PORT)"
    ) in second.log()
    assert list((tmp_path / "data").rglob("*")) == []  # no child was started, nothing written

    # One service's own port setting is named when that is what collides.
    third = RunStack(
        tmp_path / "data3", tmp_path / "third.log", free_port_block(), {"DATASET_PORT": str(stack.port("dataset"))}
    ).start()
    assert third.proc.wait(60) == 1, third.log()
    assert f"{stack.port('dataset')}: the port is in use (set DATASET_PORT or TAGRATE_RUN_BASE_PORT)" in third.log()

    with http(stack) as client:
        assert client.get("/getuserdata", params={"user": "first"}).json() == before
        assert client.get("/readyz").status_code == 200
    assert sorted(blobs.rglob("*")) == files_before


def test_killed_children_are_restarted_while_the_rest_keep_serving(stack: RunStack) -> None:
    load = Load(stack.url).start()
    outages: list[Outage] = []
    try:
        time.sleep(2)
        for victim in ("tagger", "rater", "dataset"):
            outages.append(_kill_and_watch(stack, victim))
        outages.append(_kill_and_watch(stack, "trainer", during=_block_port_until_crash_loop(stack, "trainer")))
        outages.append(_kill_and_watch(stack, "gateway"))
        time.sleep(2)  # ratings after the last restart too
    finally:
        load.finish()

    for outage in outages:
        # The other services kept answering while this one was down.
        if outage.victim not in ("dataset", "gateway"):
            for kind in ("getuserdata", "addrating"):
                during = load.between(kind, outage.killed_at, outage.back_at)
                assert during, f"no {kind} while the {outage.victim} was down"
                assert {r.status for r in during} == {200}, (outage.victim, kind, [r.body for r in during])
        assert outage.back_at - outage.killed_at < BACK_WITHIN + (
            CRASH_LOOP_WITHIN if outage.victim == "trainer" else 0
        )
        assert outage.slowest_probe < 30, outage  # probes fail fast too (the 503 is immediate)

    # While the dataset was down its callers got a 503 naming it, never a hang.
    dataset = next(o for o in outages if o.victim == "dataset")
    refused = [r for r in load.between("addrating", dataset.killed_at, dataset.back_at) if r.status != 200]
    assert refused and {r.body.get("code") for r in refused} == {"dataset_unavailable"}

    # No call outlived the gateway's deadline.
    slowest = max(r.ended - r.started for r in load.requests)
    assert slowest < DATASET_DEADLINE + 2, slowest
    # Every rating the gateway acknowledged is stored.
    with http(stack) as client:
        total = 0
        for user, ratings in load.acked.items():
            listed = client.get("/getuserdata", params={"user": user})
            assert listed.status_code == 200, listed.text
            stored = {row["image"]: row["rating"] for row in listed.json()["images"]}
            for image, rating in ratings.items():
                assert stored.get(image) == float(rating), (user, image)
            total += len(ratings)
    assert total >= 30, f"only {total} ratings were acknowledged; the load did not run"
    print(f"\n{total} ratings acknowledged; slowest call {slowest * 1000:.0f} ms; outages (s): ", end="")
    print({o.victim: round(o.back_at - o.killed_at, 1) for o in outages})


def test_ctrl_c_stops_every_child_in_order_even_one_waiting_to_restart(stack: RunStack) -> None:
    pids = stack.pids()
    assert set(pids) == {"gateway", "tagger", "rater", "dataset", "trainer"}
    seen = len(stack.run_lines())
    os.kill(pids["rater"], signal.SIGKILL)
    deadline = time.monotonic() + 5
    while not any(line.startswith("rater died") for line in stack.run_lines()[seen:]):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert stack.stop(signal.SIGINT) == 0, stack.log()[-3000:]
    for name, pid in pids.items():
        assert not Path(f"/proc/{pid}").exists(), f"{name} still runs"
    stopping = [line.removeprefix("stopping ") for line in stack.run_lines()[seen:] if line.startswith("stopping ")]
    assert stopping == ["gateway", "trainer", "dataset", "tagger"]  # the rater was down: nothing to stop
    assert stack.run_lines()[-1] == "stopped"
