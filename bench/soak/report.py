"""The soak's report: the tables printed, the log's problems, the raw samples
saved as JSON."""

from __future__ import annotations

import argparse
import json
import os
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from ..harness import print_table
from ..harness.processes import UNSET
from ..harness.supervised_stack import Stack
from .load import Run, Sample
from .plan import CHECKPOINTS, ENDPOINTS, SORTS
from .world import World


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else UNSET


def report(run: Run, world: World, stack: Stack, database: str, load: tuple[float, float]) -> int:
    """Prints the tables; returns the number of failed requests."""
    measured = run.measured()
    by_endpoint: dict[str, list[Sample]] = defaultdict(list)
    for s in measured:
        by_endpoint[s.endpoint].append(s)

    print_table(
        f"Requests and errors by endpoint and status ({run.duration:.0f} s measured after {run.warmup:.0f} s "
        f"warm-up; target: 0 errors)",
        ["endpoint", "status", "requests", "share %"],
        [
            [f"/{endpoint}", status, count, 100 * count / max(1, len(by_endpoint[endpoint]))]
            for (endpoint, status), count in sorted(
                Counter((s.endpoint, str(s.status)) for s in measured).items(),
                key=lambda kv: (ENDPOINTS.index(kv[0][0]), kv[0][1]),
            )
        ],
    )

    rows = []
    for endpoint in [e for e in ENDPOINTS if e in by_endpoint] + ["(all)"]:
        samples = measured if endpoint == "(all)" else by_endpoint[endpoint]
        ok = [s.ms for s in samples if s.status == 200]
        errors = len(samples) - len(ok)
        name = endpoint if endpoint == "(all)" else f"/{endpoint}"
        rows.append([name, len(samples), errors, len(samples) / run.duration, percentile(ok, 50),
                     percentile(ok, 95), percentile(ok, 99), max(ok, default=UNSET)])  # fmt: skip
    print_table(
        f"Latency (successful requests) and throughput, {run.clients} clients",
        ["endpoint", "requests", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms"],
        rows,
    )

    variants = Counter((s.endpoint, s.variant) for s in measured)
    rows = []
    for (endpoint, variant), count in sorted(variants.items(), key=lambda kv: (ENDPOINTS.index(kv[0][0]), kv[0][1])):
        ok = [s.ms for s in by_endpoint[endpoint] if s.variant == variant and s.status == 200]
        rows.append([f"/{endpoint}", variant, count, percentile(ok, 50), percentile(ok, 95)])
    print_table("By request variant", ["endpoint", "variant", "requests", "p50 ms", "p95 ms"], rows)

    # Drift: the same figures per fifth of the run.
    present = [e for e in ENDPOINTS if e in by_endpoint]
    rows = []
    for k in range(CHECKPOINTS):
        lo = run.warmup + run.duration * k / CHECKPOINTS
        hi = run.warmup + run.duration * (k + 1) / CHECKPOINTS
        part = [s for s in measured if lo <= s.start < hi]
        row: list[object] = [f"{100 * k // CHECKPOINTS}-{100 * (k + 1) // CHECKPOINTS}%", len(part) / (hi - lo)]
        row.append(sum(1 for s in part if s.status != 200))
        row += [percentile([s.ms for s in part if s.endpoint == e and s.status == 200], 95) for e in present]
        rows.append(row)
    print_table(
        "Over time (target: flat)", ["part of run", "req/s", "errors", *(f"/{e} p95 ms" for e in present)], rows
    )

    names = [*stack.children, "load generator"]
    rows = [[label, round(at - run.warmup, 1), *(readings.get(n, UNSET) for n in names)]
            for label, at, readings in run.checkpoints]  # fmt: skip
    if run.checkpoints:
        first, last = run.checkpoints[0][2], run.checkpoints[-1][2]
        rows.append(["growth after warm-up", "", *(last.get(n, UNSET) - first.get(n, UNSET) for n in names)])
        peak = {n: max((r.get(n, UNSET) for t, r in run.rss if t >= run.warmup), default=UNSET) for n in names}
        rows.append(["peak after warm-up", "", *(peak[n] for n in names)])
    print_table(
        f"Resident memory (VmRSS, MiB), sampled every {run.rss_interval:g} s; target: flat after warm-up",
        ["when", "s into run", *names],
        rows,
    )

    print_table(
        "Background work backlog (/verifydatasets): photos stored but not yet tagged, scores not yet computed",
        ["when", "untagged images", "pending predictions"],
        [list(row) for row in run.backlog],
    )

    cores = os.cpu_count() or 1
    rows = [[name, stack.children[name], seconds, 100 * seconds / run.duration] for name, seconds in run.cpu.items()]
    rows.append(
        ["load generator (this process)", os.getpid(), run.generator_cpu, 100 * run.generator_cpu / run.duration]
    )
    print_table(
        f"CPU time during the measured {run.duration:.0f} s ({cores} cores; 100% = one core)",
        ["process", "pid", "CPU s", "% of a core"],
        rows,
    )
    per_request_ms = 1000 * run.generator_cpu / max(1, len(measured))
    print(f"\nload generator: {per_request_ms:.2f} ms of CPU per request (building bodies, new JPEGs, parsing)")
    print(f"database: {database}; users {len(world.users)}, trained: {world.trained_user}; "
          f"filter tags: {', '.join(world.tags[:5]) or '(none)'}{' ...' if len(world.tags) > 5 else ''}")  # fmt: skip
    setup_text = ", ".join(f"{k} {v:.1f} s" for k, v in world.setup_seconds.items())
    print(f"setup: {setup_text}")
    refused = [sort for sort in SORTS if sort not in world.sorts]
    if refused:
        print(f"sorts this gateway refuses, left out of the run: {', '.join(refused)}")
    print(f"1-minute load average on {cores} cores, before -> after the run: {load[0]:.1f} -> {load[1]:.1f}")

    failed = sum(1 for s in measured if s.status != 200)
    warmup_failed = sum(1 for s in run.samples if s.start < run.warmup and s.status != 200)
    if warmup_failed:
        print(f"\nduring the warm-up (not counted above): {warmup_failed} failed requests")
    for (endpoint, status), example in run.examples.items():
        print(f"first /{endpoint} {status}: {example}")
    return failed


def log_problems(stack: Stack) -> list[str]:
    """The supervisor log's lines at WARNING or above (children's logs included)."""
    lines = stack.log_path.read_text(errors="replace").splitlines()
    return [line for line in lines if re.search(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback", line)]


def save(path: Path, run: Run, world: World, stack: Stack, args: argparse.Namespace, problems: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "arguments": {k: v for k, v in vars(args).items() if k != "output"},
        "database": "postgresql" if args.database else "sqlite",
        "cores": os.cpu_count(),
        "processes": {**stack.children, "load generator": os.getpid()},
        "users": world.users,
        "trained_user": world.trained_user,
        "filter_tags": world.tags,
        "sorts": world.sorts,
        "setup_seconds": world.setup_seconds,
        "warmup_seconds": run.warmup,
        "duration_seconds": run.duration,
        "samples_fields": ["start_s", "endpoint", "variant", "status", "ms"],
        "samples": [[round(s.start, 4), s.endpoint, s.variant, s.status, round(s.ms, 3)] for s in run.samples],
        "rss_mib": [{"at_s": round(t, 3), **readings} for t, readings in run.rss],
        "checkpoints": [{"label": label, "at_s": round(t, 3), "rss_mib": r} for label, t, r in run.checkpoints],
        "backlog": [{"label": label, "untagged_images": u, "pending_predictions": p} for label, u, p in run.backlog],
        "cpu_seconds": {**run.cpu, "load generator": run.generator_cpu},
        "pids": run.pids,
        "log_problems": problems[:200],
    }
    path.write_text(json.dumps(document, allow_nan=True))
