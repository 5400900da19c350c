"""API fuzzing at a larger budget: ``python -m bench fuzz [--examples N] [--databases sqlite,postgres]``.

Schemathesis generates requests from the gateway's own /openapi.json (as
tests/gateway/test_fuzz.py does with a small, fixed budget) against a real
stack per database: a dataset service behind the gateway with access control
on, called anonymous, as a user and as admin, with fresh random examples
each run. A failure is a 5xx (beyond the documented 503 of the model
services this stack does not run) or an answer its operation does not
document (status code, content type, body schema). Target: 0 failures.
Prints operations x examples run, failures found, time and the load average.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import httpx

from tests.gateway.fuzzing import run_fuzz
from tests.gateway.stack import start_stack
from tests.imagefactory import make_image

from .harness import print_table

ADMIN_TOKEN = "bench-fuzz-admin-token-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PG_ADMIN_URL = os.environ.get("TAGRATE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _pg_database() -> tuple[str, str]:
    """A fresh PostgreSQL database: (its URL, its name)."""
    from sqlalchemy import create_engine, text

    name = f"tagrate_fuzz_{os.getpid()}_{int(time.time())}"
    engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}", name


def _drop_pg(name: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def _one(database: str, examples: int, tmp: Path) -> tuple[list[object], list[str]]:
    pg_name = None
    if database == "postgres":
        url, pg_name = _pg_database()
    else:
        url = f"sqlite:///{tmp / 'tagrate.db'}"
    stack = start_stack(url, tmp / "data", auth="on", admin_token=ADMIN_TOKEN, auth_failures_per_minute=10**9)
    try:
        with httpx.Client(base_url=stack.url, timeout=60, headers=ADMIN) as http:
            data = make_image("JPEG", (40, 32), seed=4242)
            http.post("/addrating", data={"user": "alice", "rating": "0.4"}, files={"image": ("f.jpg", data)})
            user = http.post("/tokens", json={"user": "alice"}).json()["token"]
            schema = http.get("/openapi.json").json()
        start = time.perf_counter()
        result = run_fuzz(
            stack.url,
            schema,
            [("anonymous", {}), ("user", {"Authorization": f"Bearer {user}"}), ("admin", ADMIN)],
            examples,
            derandomize=False,
        )
        seconds = time.perf_counter() - start
    finally:
        stack.stop()
        if pg_name is not None:
            _drop_pg(pg_name)
    server_errors = sum(n for status, n in result.statuses.items() if status >= 500)
    row: list[object] = [
        database,
        result.operations,
        examples,
        result.examples,
        len(result.failures),
        server_errors,
        f"{seconds:.0f}",
    ]
    return row, result.failures


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench fuzz", description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=50, help="generated examples per operation and caller")
    parser.add_argument("--databases", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    args = parser.parse_args(argv)
    rows, failures = [], []
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    for database in [d.strip() for d in args.databases.split(",") if d.strip()]:
        with tempfile.TemporaryDirectory(prefix="tagrate-bench-fuzz-") as tmp:
            row, found = _one(database, args.examples, Path(tmp))
        rows.append(row)
        failures += [f"[{database}] {line}" for line in found]
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    print_table(
        "API fuzzing (schemathesis; operations counted once per caller: anonymous, user, admin)",
        [
            "database",
            "operations",
            "examples/op",
            "requests",
            "failures",
            "5xx answers (allowed 503s incl.)",
            "seconds",
        ],
        rows,
    )
    print(f"load average before {' '.join(load_before)}, after {' '.join(load_after)}")
    for line in failures[:50]:
        print("  " + line)
    return 1 if failures else 0
