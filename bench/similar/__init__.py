"""Similar images and near-duplicates (issue 27): ``python -m bench similar
[--part search|backlog|photos|all] [--db sqlite|postgresql|both] [--scale F]
[--calls N] [--backlog N]``.

- ``search`` (``search.py``, ``library.py``): the 100k-image bench
  library, on SQLite and/or PostgreSQL (``--db``, default both), with a
  synthetic 1280-float vector per image (500 clustered centres plus noise,
  the same vectors on both), the real dataset service and gateway as
  processes; /getsimilar (by stored image, with a user, and with a tag
  filter) p50/p95 next to a /getuserdata page, interleaved, concurrency 1
  (target: p50 within 2x of the page's); the similarity index's build time
  and memory, and the recall@24 of its two-stage search against exact
  search (below ``DATASET_SIMILAR_ANN_MIN_VECTORS``, 20,000, e.g. at
  ``--scale 0.1``, the index is exact only).
- ``backlog`` (``backlog.py``): duplicate grouping of 100k hashes (2 %
  near-duplicates of another with 0-8 bits flipped, their unit vectors
  close): the hash stage for all of them in one pass, and the
  feature-neighbour stage per image. No database.
- ``photos`` (``photos.py``): precision and recall of duplicate detection
  on real photos (scikit-image's samples) with the tests' variants plus
  drawn look-alikes that are distinct. No database."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from ..harness.dataset import DatasetGenerator, parse_dataset_args
from ..harness.measure import print_table
from .common import loadavg

FULL_CALLS, QUICK_CALLS = 200, 50


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--part", choices=("search", "backlog", "photos", "all"), default="all")
    parser.add_argument("--backlog", type=int, default=100_000, help="Hashes in the backlog (default 100,000).")


def main(argv: list[str] | None = None) -> int:
    args, shape, generator, databases = parse_dataset_args(
        "python -m bench similar", __doc__.split("\n\n")[0], argv, FULL_CALLS, QUICK_CALLS, _options
    )
    print(f"loadavg {loadavg()}", flush=True)
    if args.part in ("photos", "all"):
        from .photos import photos

        photos()
    if args.part in ("backlog", "all"):
        from .backlog import backlog

        backlog(args.backlog)
    if args.part in ("search", "all"):
        return search_part(args, shape.images, generator, databases)
    return 0


def search_part(args: argparse.Namespace, images: int, generator: DatasetGenerator, databases: tuple[str, ...]) -> int:
    from .library import library
    from .search import WARMUP, SearchRun, index_rows, search, service_rows

    args.cache_dir.mkdir(parents=True, exist_ok=True)
    runs: list[SearchRun] = []
    with tempfile.TemporaryDirectory(prefix="bench-similar-") as tmp:
        for database in databases:
            work = Path(tmp) / database
            work.mkdir()
            print(f"{database}: preparing the library ({images} images) and its vectors", flush=True)
            with library(database, generator, args.cache_dir, args.pg_admin_url, work) as lib:
                print(f"  vectors stored in {lib.vector_seconds:.1f} s; loadavg {loadavg()}", flush=True)
                runs.append(search(lib, images, args.calls, work))
    print_table(
        f"/getsimilar at {images} images (concurrency 1, {args.calls} calls each after {WARMUP} to warm up, "
        f"interleaved with the page; first call: the first of those, cold); "
        f"loadavg after each database: " + ", ".join(f"{r.library.database} {r.loadavg_after}" for r in runs),
        [
            "database",
            "request",
            "p50 ms",
            "p95 ms",
            "max ms",
            "p50 / page p50",
            "p95 / page p95",
            "first call ms",
            "target 2x",
        ],
        [row for run in runs for row in service_rows(run)],
    )
    print_table(
        "similarity index, in-process over the same database (recall@24 of the two-stage search against exact)",
        ["database", "search", "vectors", "build s", "memory MiB", "search p50 ms", "search p95 ms", "recall@24"],
        [row for run in runs for row in index_rows(run)],
    )
    for run in runs:
        ix = run.index
        print(
            f"{run.library.database}: projection fitted in {ix.fit_s:.1f} s of the build "
            f"({ix.reduced_bytes / 2**20:.0f} MiB); first /getsimilar answered after {run.first_answer_s:.1f} s "
            f"(503 while the index is built); synthetic vectors stored in {run.library.vector_seconds:.1f} s"
        )
    return 0
