"""Soak: the whole stack under steady mixed load for minutes, watching for
errors, latency drift and memory growth.

    python -m bench soak [--clients 32] [--duration 600] [--warmup 30]
        [--database postgresql://...] [--mix getuserdata=50,addrating=20,tag=15,ratebulk=15]

The stack is the one ``make run`` starts: the real supervisor
(``python -m tagrate_common.supervisor``) with every service and the gateway
as its children, a temporary ``TAGRATE_DATA_DIR``, and free ports (given to
the supervisor both as ``TAGRATE_RUN_BASE_PORT`` and as each
``<SERVICE>_PORT``; the gateway's address is read from the supervisor's
"tagrate is running" line, so either way works). Metrics ports are off.
SQLite by default; ``--database`` names a PostgreSQL server, on which a fresh
database is created for the run and dropped after it.

Setup (not measured): ``--users`` users each rate 12 new photos through
/addrating, by a taste a model can learn (the source photo sets the
rating); the first user's personal model is trained (/trainuser, then
/trainerstatus until it succeeded) so /ratebulk has a model to answer from;
once the background work has tagged a sample of the photos, their most
common tags (/getimagetags) become the tag filters. A sort the gateway
refuses (``predicted-desc``, a later part of the API) is left out of the
run, and the report says so.

Then ``--clients`` closed-loop clients (each one kept-alive HTTP/1.1
connection, no think time; asyncio in this one process, so the load
generator stays cheap, and its own CPU time is measured and printed) send
requests drawn by the ``--mix`` weights:

- /getuserdata: pages (``page`` 1-3, limit 60) of a random user: unfiltered
  with a random sort, 1-2 tag filters, a ``-tag`` exclusion, ``rated=no``
  (by date or by prediction), ``rated=all`` by name;
- /addrating: a new photo every time (one of scikit-image's sample photos
  or its mirror image at 320x240, with one random pixel changed, encoded as
  JPEG; uploads are checked distinct by sha256), rated by a random user, so
  the dataset and the background tagging/embedding/prediction work grow all
  run long;
- /tag: one photo from a fixed pool;
- /ratebulk: 4 photos from the pool, for the trained user or ``all``.

Every request must answer 200 with a well-formed body; anything else
(another status, a malformed body, a connection error, no answer within
``--timeout``) is an error, and the target is none. The first ``--warmup``
seconds are load but not counted; the ``--duration`` seconds after them are
measured. The supervisor's children's resident memory (VmRSS from
/proc/<pid>/status) is sampled every ``--rss-interval`` seconds; the report
prints it at the end of the warm-up, at each 20% of the run and at the end,
with the growth after warm-up (target: flat). The supervisor restarts a
child that dies; a restart counts as a failure. /verifydatasets' backlog
(images not yet tagged) is read at the same moments.

Printed: requests and errors by endpoint and status, p50/p95/p99 latency
(of the requests that succeeded) and throughput per endpoint, the same per
fifth of the run (drift), each process's CPU time and RSS over time, and the
load generator's own CPU time. Every sample (each request's start, endpoint,
variant, status and latency; every RSS reading) is saved as JSON under
``bench/results/`` (or ``--output``). The exit status is 0 only when no
request failed and no child was restarted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from ..harness.photos import Photos
from ..harness.supervised_stack import Stack, fresh_postgres
from .load import drive
from .plan import DEFAULT_MIX, ENDPOINTS, RESULTS_DIR, parse_mix
from .report import log_problems, report, save
from .world import setup

# The names a caller (tests/bench) uses beside main.
__all__ = ["ENDPOINTS", "Photos", "main", "parse_mix"]


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32, help="Concurrent closed-loop clients (default 32).")
    parser.add_argument("--duration", type=float, default=600, help="Measured seconds after the warm-up (default 600).")
    parser.add_argument("--warmup", type=float, default=30, help="Seconds of load before measuring (default 30).")
    parser.add_argument(
        "--database",
        default=None,
        help="A PostgreSQL URL (postgresql://user@host:port/db): the run gets a fresh database on that server, "
        "dropped after it. Default: SQLite in the temporary data directory.",
    )
    parser.add_argument(
        "--mix", type=parse_mix, default=parse_mix(DEFAULT_MIX), help=f"Endpoint weights (default {DEFAULT_MIX})."
    )
    parser.add_argument("--users", type=int, default=8, help="Users rating and reading (default 8).")
    parser.add_argument("--timeout", type=float, default=120, help="Seconds before a request counts as failed.")
    parser.add_argument("--rss-interval", type=float, default=5, help="Seconds between RSS samples (default 5).")
    parser.add_argument("--seed", type=int, default=2026, help="Seed of the photos and ratings.")
    parser.add_argument("--output", type=Path, default=None, help="The JSON of raw samples (default bench/results/).")
    args = parser.parse_args(argv or [])
    if args.clients < 1 or args.duration <= 0 or args.warmup < 0 or args.users < 1 or args.rss_interval <= 0:
        parser.error("--clients and --users must be 1 or more, --duration and --rss-interval positive")
    if args.database and not args.database.startswith(("postgresql://", "postgres://")):
        parser.error("--database must be a postgresql:// URL (SQLite is the default)")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    output = args.output or RESULTS_DIR / f"soak-{stamp}.json"

    database = "postgresql" if args.database else "sqlite"
    print(f"{os.cpu_count()} cores; {args.clients} clients, {args.warmup:.0f} s warm-up + {args.duration:.0f} s, "
          f"{database}, mix {args.mix}", flush=True)  # fmt: skip
    photos = Photos(args.seed)
    # A SIGTERM (``timeout``, a CI runner) unwinds like Ctrl-C, so the stack
    # and the temporary database are still cleaned up.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(signal.signal, signal.SIGTERM, previous)
        tmp = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="tagrate-soak-")))
        database_url = cleanup.enter_context(fresh_postgres(args.database)) if args.database else None
        started = time.perf_counter()
        stack = Stack(tmp / "data", database_url)
        cleanup.callback(stack.stop)
        stack.wait_running()
        print(f"stack up in {time.perf_counter() - started:.1f} s at {stack.url}: "
              f"{', '.join(f'{n} (pid {p})' for n, p in stack.children.items())}", flush=True)  # fmt: skip
        try:
            world = setup(stack.url, args.users, photos, args.seed)
        except Exception:
            print(stack.log_tail(), file=sys.stderr)
            raise
        print(f"setup done: {', '.join(f'{k} {v:.1f} s' for k, v in world.setup_seconds.items())}", flush=True)
        load_before = os.getloadavg()[0]
        run = asyncio.run(drive(stack, world, args.mix, args))
        load_after = os.getloadavg()[0]
        problems = log_problems(stack)
        failed = report(run, world, stack, database, (load_before, load_after))
        restarts = run.restarts()
        if restarts:  # a child died and the supervisor restarted it
            print(f"\nprocesses restarted during the run (target: none): {restarts}")
            failed += sum(restarts.values())
        print(f"\nlog lines at WARNING or above: {len(problems)}")
        for line in problems[:10]:
            print(f"  {line[:300]}")
        save(output, run, world, stack, args, problems)
        print(f"raw samples: {output}")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
