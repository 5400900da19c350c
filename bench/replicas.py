"""Replicas benchmark (issue 29): the mixed load of the failover test
(bench/harness/replica_load.py: three rating writers, a reader, a tagger
client, a training kept going) against ``make run`` with one and with two
replicas of every service (and as many gateways), on one PostgreSQL.

    python -m bench replicas [--seconds 30] [--pg postgresql://postgres@127.0.0.1:5432/test]

* **throughput**: answered requests per second over ``--seconds`` after a
  warm-up, by kind, and the CPU seconds all the group's processes used per
  request (from /proc), so the scaling on more cores can be estimated: on
  this 2-core machine two replicas mostly share the same two cores.
* **recovery** (two replicas): one replica of each service SIGKILLed in
  turn under the load: how long clients saw failures after the kill (and
  how many), and how long until the supervisor had the replica serving
  again; for the trainer, how long until the other replica took the job over.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.harness.measure import print_table
from bench.harness.processes import cpu_seconds
from bench.harness.replica_load import (
    MixedLoad,
    job_row,
    kill,
    replica_pids,
    running_job_owner,
    second_gateway,
    wait_http,
)
from bench.harness.supervised_stack import Stack, fresh_postgres
from tests.support import free_port

ENV = {
    "TRAINER_JOB_LEASE_SECONDS": "3",
    "TRAINER_RETRAIN_AFTER_RATINGS": "0",
    "TRAINER_MAX_EPOCHS": "300",
    "TRAINER_PATIENCE": "300",
    "TAGGER_TORCH_THREADS": "1",
    "RATER_TORCH_THREADS": "1",
}


def _serving(name: str) -> bool:
    service, port = name.split(":")
    if service == "gateway":
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING


def _cpu(pids: list[int]) -> float:
    return sum(value for value in map(cpu_seconds, pids) if value == value)


def throughput(load: MixedLoad, pids: list[int], seconds: float) -> tuple[dict[str, float], float, int]:
    """(answered requests per second by kind, CPU seconds per request, failures) over ``seconds``."""
    start, cpu = time.monotonic(), _cpu(pids)
    time.sleep(seconds)
    used = _cpu(pids) - cpu
    done = [r for r in load.since(start) if r.status is not None and r.status < 500]
    kinds = Counter(r.kind for r in done)
    failed = sum(1 for r in load.since(start) if r.failed)
    return {k: n / seconds for k, n in kinds.items()}, used / max(1, len(done)), failed


def recovery(stack: Stack, load: MixedLoad, url: str) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    for service in ("trainer", "tagger", "rater", "dataset", "gateway"):
        pids = replica_pids(stack.proc.pid)
        takeover = None
        if service == "trainer":
            job = running_job_owner(url)
            deadline = time.monotonic() + 60
            while job is None and time.monotonic() < deadline:
                time.sleep(0.2)
                job = running_job_owner(url)
            assert job is not None, "no training job ran"
            job_id, pid = job
            name = next(n for n, p in pids.items() if p == pid)
        else:
            name = sorted(n for n in pids if n.startswith(f"{service}:"))[-1]
            pid = pids[name]
        killed_at = kill(pid)
        back = None
        while time.monotonic() - killed_at < 120 and (back is None or (service == "trainer" and takeover is None)):
            now = time.monotonic()
            if back is None and replica_pids(stack.proc.pid).get(name, pid) != pid and _serving(name):
                back = now - killed_at
            if service == "trainer" and takeover is None and job_row(url, job_id)[1] >= 2:
                takeover = now - killed_at
            time.sleep(0.1)
        time.sleep(3.0)
        failures = [r for r in load.since(killed_at) if r.failed]
        window = max((r.ended - killed_at for r in failures), default=0.0)
        rows.append((service, len(failures), window, back if back is not None else "-", takeover or "-"))
    return rows


def run_group(replicas: int, pg: str, seconds: float, work: Path) -> tuple[list, list | None]:
    with fresh_postgres(pg) as url:
        sa_url = url.replace("postgresql://", "postgresql+psycopg://", 1)
        stack = Stack(work / f"data{replicas}", sa_url, {**ENV, "TAGRATE_RUN_REPLICAS": str(replicas)})
        extra = None
        try:
            stack.wait_running(timeout=900)
            gateways = [stack.url]
            if replicas > 1:
                port = free_port()
                extra = second_gateway(stack.proc.pid, port, work / "gateway2.log")
                gateways.append(f"http://127.0.0.1:{port}")
                wait_http(gateways[-1])
            load = MixedLoad(gateways).start()
            time.sleep(10)  # warm-up: first requests load models, the first training starts
            pids = list(replica_pids(stack.proc.pid).values()) + ([extra.pid] if extra else [])
            rates, cpu, failed = throughput(load, pids, seconds)
            total = sum(rates.values())
            row = [replicas, total, *(rates.get(k, 0.0) for k in ("addrating", "getuserdata", "tag")), cpu, failed]
            rows = recovery(stack, load, url) if replicas > 1 else None
            load.finish()
            return row, rows
        finally:
            if extra is not None:
                extra.kill()
                extra.wait()
            stack.stop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench replicas")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured load per group (after a 10 s warm-up)")
    parser.add_argument("--pg", default=os.environ.get("TAGRATE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args(argv)
    print(f"load average before: {Path('/proc/loadavg').read_text().strip()}  ({os.cpu_count()} cores)")
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp:
        one, _ = run_group(1, args.pg, args.seconds, Path(tmp))
        two, rows = run_group(2, args.pg, args.seconds, Path(tmp))
    headers = ["replicas", "req/s", "addrating/s", "getuserdata/s", "tag/s", "CPU s/request", "failed"]
    print_table("mixed load, one vs two replicas of every service", headers, [one, two])
    print_table(
        "losing one replica under the load (two of each)",
        ["service", "client failures", "failure window s", "replica back s", "job taken over s"],
        rows or [],
    )
    print(f"load average after: {Path('/proc/loadavg').read_text().strip()}")
    return 0
