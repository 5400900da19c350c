"""/getuserdata against the SQL floor: ``python -m bench userdata --floor
[--db sqlite|postgresql|both] [--calls N] [--scale F]`` (also ``python -m
bench userdata_floor``).

On bench/userdata.py's dataset (100k images, 20 users, 500k ratings, 2,000
Zipf tags) plus a current prediction of every image for every user (a
trained snapshot per user, as after a publish and its rescoring), each
query shape is measured two ways in the same run, request by request,
alternating which goes first:

- tagrate: GET /getuserdata through the real gateway and dataset service
  processes (the minimal keep-alive HTTP client of ``bench/harness/measure.py``);
- the floor: the most efficient single hand-written SQL statement for the
  shape on that database, sent straight through the driver (psycopg /
  sqlite3, one connection, no ORM). The floor is given every id already
  resolved (user, tags, tagger model and threshold, model version) and
  returns the page's rows and the total in one statement. Several
  equivalent statements are written per shape (tag conditions as IN,
  driven by the rarest included tag, or as EXISTS probes, for the page and
  its count apart; deep pages read from the other end; rated=all as two merged
  index-ordered streams, the rated=no total as a difference of counts);
  the fastest for each request in a trial is its floor.

Every sampled request must return the same image names in the same order
and the same total both ways, or the run fails. Targets per shape: tagrate's
p50 within 1.5 x floor p50 + 3 ms, and (issue 28's last) within 1.25 x floor
p50 + 2 ms (concurrency 1).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

from ..harness import print_table
from ..harness.dataset import parse_dataset_args
from ..harness.dataset_stack import start_stack
from ..harness.workload import PAGE_SIZE
from .run import Result, bench_database, prepared
from .shapes import RATIO, SLACK_MS, STRICT_RATIO, STRICT_SLACK_MS


def report(results: list[Result]) -> bool:
    rows = [
        [r.database, r.shape, len(r.api), r.api_p50, r.floor_p50, r.api_p50 / r.floor_p50, r.allowance,
         "met" if r.met else "MISSED", r.strict_allowance, "met" if r.strict_met else "MISSED", r.statement]
        for r in results
    ]  # fmt: skip
    print_table(
        f"GET /getuserdata vs the SQL floor (p50, concurrency 1, pages of {PAGE_SIZE}; "
        f"targets: tagrate <= {RATIO} x floor + {SLACK_MS:.0f} ms; strict <= {STRICT_RATIO} x floor + "
        f"{STRICT_SLACK_MS:.0f} ms)",
        [
            "database",
            "shape",
            "calls",
            "tagrate ms",
            "floor ms",
            "ratio",
            "allowance ms",
            "",
            "strict ms",
            "",
            "floor stmts",
        ],
        rows,
    )
    return all(r.met for r in results)


def main(argv: list[str] | None = None) -> int:
    keep_pg = ""
    if argv and "--keep-pg" in argv:  # --keep-pg NAME: load PostgreSQL once into NAME and keep it
        at = argv.index("--keep-pg")
        keep_pg, argv = argv[at + 1], argv[:at] + argv[at + 2 :]
    args, dataset, generator, databases = parse_dataset_args(
        "python -m bench userdata --floor", __doc__.split("\n\n")[0], argv, full_calls=60, quick_calls=20
    )
    args.keep_pg = keep_pg
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    loads = []
    with tempfile.TemporaryDirectory(prefix="tagrate-bench-floor-") as tmp:
        for database in databases:
            with prepared(database, generator, args, Path(tmp)) as generation:
                stack = start_stack(generation.url, Path(tmp) / database)
                try:
                    before = os.getloadavg()[0]
                    results += asyncio.run(bench_database(generation.url, stack.gateway_url, database, dataset,
                                                          args.calls))  # fmt: skip
                    loads.append(f"{database} {before:.1f} -> {os.getloadavg()[0]:.1f}")
                finally:
                    stack.stop()
    print(f"1-minute load average on {os.cpu_count()} cores, before -> after measuring: {'; '.join(loads)}")
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
