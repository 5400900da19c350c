"""Predictions on the whole library (issue 13): ``python -m bench predictions
[--db sqlite|postgresql|both] [--users N] [--calls N] [--scale F]``.

On bench/userdata.py's dataset (100,000 images, 20 users, seeded; the SQLite
file cached under ``bench/results/`` and copied, PostgreSQL loaded fresh),
every image gets a synthetic 1280-d float32 feature vector of the real
rater's extractor (random: the cost of scoring does not depend on what the
vectors show), written straight into ``image_features`` before the
services start. Then the real rater and the real dataset service run as
their own processes and:

- Rescoring after a publish: for each of ``--users`` users a linear head is
  published to the rater and recorded with RecordTrainedSnapshot (what the
  trainer does), and the time until /verifydatasets' ``pending_predictions``
  is 0 again is measured: seconds per user and rows/s. The peak resident
  memory (VmHWM) of the dataset service and of the rater is reported:
  bounded memory means it does not grow with the library (vectors are
  streamed in chunks of ``DATASET_SCORE_CHUNK_IMAGES``).
- GetUserData page 1 with ``rated=no``, sorted ``predicted-desc`` next to
  ``date-desc`` on the same query, unfiltered and with a 2-tag filter
  (pairs of popular tags), p50 over ``--calls`` calls straight to the
  dataset service (the gateway adds the same cost to both).

Targets: under 10 s per user on this 2-core machine; the predicted page
within 1.5x of the date page.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, text

from tagrate_common.protos import library_pb2, rater_pb2, training_data_pb2, users_pb2, work_pb2
from tagrate_common.vision.rating_heads import serialize_weights
from tagrate_dataset.db import create_db_engine
from tests.support import ServiceProcess

from .harness import print_table
from .harness.dataset import (
    PG_ADMIN_URL,
    RESULTS_DIR,
    DatasetGenerator,
    DatasetShape,
    postgres_database,
    sqlite_database,
)
from .harness.vectors_stack import DEADLINE, Services, services

TARGET_SECONDS_PER_USER = 10.0
TARGET_RATIO = 1.5
# Popular tag pairs (tag_N is the N-th most common), as people filter by the tags they see.
TAG_PAIRS = [("tag_2", "tag_5"), ("tag_3", "tag_8"), ("tag_6", "tag_11"), ("tag_4", "tag_15")]


@dataclass
class Rescoring:
    database: str
    user: str
    seconds: float
    rows: int


def _peak_rss_mib(process: ServiceProcess) -> float:
    """The process's peak resident set (VmHWM), MiB."""
    assert process.proc is not None
    for line in Path(f"/proc/{process.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _job_open(engine: Engine, user: str) -> bool:
    """Whether ``user``'s rescoring job is still in the database (it is
    deleted in the transaction after its last chunk). Read directly rather
    than through VerifyDatasets: that RPC also sums every user's ratings,
    and polling it would take CPU from the very rescoring being timed."""
    with engine.connect() as conn:
        found = conn.execute(text("SELECT 1 FROM prediction_jobs WHERE subject = :user"), {"user": user}).first()
    return found is not None


def rescore(stack: Services, engine: Engine, user: str, images: int, seed: int) -> float:
    """Publishes a random linear head for ``user``, records it as the
    trainer does, and returns the seconds until every image is rescored
    (checked at the end through VerifyDatasets' pending_predictions)."""
    info = stack.rater_stub.GetExtractorInfo(rater_pb2.GetExtractorInfoRequest(), timeout=DEADLINE)
    rng = np.random.default_rng(seed)
    weights = serialize_weights({"weight": rng.normal(0, 0.05, info.dimensions), "bias": np.array(0.0)})
    meta = rater_pb2.HeadMetadata(user=user, kind="linear", extractor_id=info.extractor_id)
    version = stack.rater_stub.PublishHead(
        rater_pb2.PublishHeadRequest(metadata=meta, weights=weights), timeout=DEADLINE
    ).metadata.version
    snapshot = stack.dataset_stub.users.GetUser(users_pb2.GetUserRequest(user=user), timeout=DEADLINE).snapshot_id
    start = time.perf_counter()
    stack.dataset_stub.training.RecordTrainedSnapshot(
        training_data_pb2.RecordTrainedSnapshotRequest(user=user, snapshot_id=snapshot, model_version=version),
        timeout=DEADLINE,
    )
    while _job_open(engine, user):
        time.sleep(0.05)
        if time.perf_counter() - start > 600:
            raise TimeoutError(f"{user}'s rescoring of {images} images did not finish in 10 minutes")
    seconds = time.perf_counter() - start
    pending = stack.dataset_stub.work.VerifyDatasets(work_pb2.VerifyDatasetsRequest(), timeout=DEADLINE)
    if pending.pending_predictions:
        raise RuntimeError(f"{user}'s job finished with {pending.pending_predictions} predictions still pending")
    return seconds


def page_p50(stack: Services, users: list[str], sort: int, tags: list[tuple[str, ...]], calls: int) -> float:
    """p50 ms of GetUserData page 1 (rated=no), users and tag pairs rotating."""
    times = []
    for call in range(calls):
        request = library_pb2.GetUserDataRequest(
            user=users[call % len(users)],
            include_tags=list(tags[call % len(tags)]),
            sort=sort,
            rated=library_pb2.RATED_FILTER_NO,
            page=1,
            limit=60,
        )
        start = time.perf_counter()
        stack.dataset_stub.library.GetUserData(request, timeout=DEADLINE)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def bench_database(
    database: str, url: str, work_dir: Path, count: int, calls: int
) -> tuple[list[Rescoring], dict[str, float], list[list[object]]]:
    with services(url, work_dir) as stack:
        engine = create_db_engine(url, pool_size=1, max_overflow=0)
        with engine.connect() as conn:
            images = conn.execute(text("SELECT count(*) FROM images")).scalar_one()
            users = list(conn.execute(text("SELECT name FROM users ORDER BY id LIMIT :n"), {"n": count}).scalars())
        rescorings = []
        for n, user in enumerate(users):
            seconds = rescore(stack, engine, user, images, seed=n)
            rescorings.append(Rescoring(database, user, seconds, images))
            print(f"  {user}: {images} images rescored in {seconds:.2f} s", flush=True)
        engine.dispose()
        memory = {"dataset": _peak_rss_mib(stack.dataset), "rater": _peak_rss_mib(stack.rater)}
        rows: list[list[object]] = []
        for label, tags in (("unfiltered", [()]), ("2-tag filter", TAG_PAIRS)):
            page_p50(stack, users, library_pb2.SORT_ORDER_PREDICTED_DESC, tags, 3)  # warm up
            date = page_p50(stack, users, library_pb2.SORT_ORDER_DATE_DESC, tags, calls)
            predicted = page_p50(stack, users, library_pb2.SORT_ORDER_PREDICTED_DESC, tags, calls)
            ratio = predicted / date
            verdict = "ok" if ratio <= TARGET_RATIO else "MISSED"
            rows.append([database, label, f"{date:.1f}", f"{predicted:.1f}", f"{ratio:.2f}x", verdict])
    return rescorings, memory, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench predictions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both", help="Default: both.")
    parser.add_argument("--users", type=int, default=3, help="Users whose model is published (default 3).")
    parser.add_argument("--calls", type=int, default=41, help="GetUserData calls per figure (default 41).")
    parser.add_argument("--scale", type=float, default=1.0, help="Fraction of the 100k images (default 1).")
    parser.add_argument("--cache-dir", type=Path, default=RESULTS_DIR, help="Where the SQLite file is cached.")
    parser.add_argument("--pg-admin-url", default=PG_ADMIN_URL, help="A PostgreSQL database to create others from.")
    args = parser.parse_args(argv or [])
    if not 1 <= args.users <= 20 or args.calls < 1 or not 0 < args.scale <= 1:
        parser.error("--users must be 1-20, --calls 1 or more, --scale in (0, 1]")
    shape = DatasetShape().scaled(args.scale)
    generator = DatasetGenerator(shape)
    databases = ("sqlite", "postgresql") if args.db == "both" else (args.db,)
    print(f"{os.cpu_count()} cores; {shape}; {args.users} users rescored; {args.calls} calls per page figure")
    rescorings: list[Rescoring] = []
    pages: list[list[object]] = []
    memory_rows: list[list[object]] = []
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tagrate-bench-predictions-") as tmp:
        for database in databases:
            work = Path(tmp) / database
            work.mkdir()
            print(f"{database}: preparing the database", flush=True)
            with contextlib.ExitStack() as cleanup:
                if database == "sqlite":
                    cached = sqlite_database(generator, args.cache_dir)
                    # A copy: the vectors and predictions must not change the cached file.
                    copy = work / "tagrate.db"
                    shutil.copyfile(cached.url.removeprefix("sqlite:///"), copy)
                    url = f"sqlite:///{copy}"
                else:
                    url = cleanup.enter_context(postgres_database(generator, args.pg_admin_url)).url
                done, memory, rows = bench_database(database, url, work, args.users, args.calls)
            rescorings += done
            pages += rows
            memory_rows.append([database, f"{memory['dataset']:.0f}", f"{memory['rater']:.0f}"])
    print_table(
        "Rescoring after a publish (every stored image, from cached vectors)",
        ["database", "user", "images", "seconds", "rows/s", f"< {TARGET_SECONDS_PER_USER:.0f} s"],
        [
            [r.database, r.user, r.rows, f"{r.seconds:.2f}", f"{r.rows / r.seconds:,.0f}",
             "ok" if r.seconds < TARGET_SECONDS_PER_USER else "MISSED"]
            for r in rescorings
        ],
    )  # fmt: skip
    print_table("Peak resident memory (VmHWM, MiB) over the whole run", ["database", "dataset", "rater"], memory_rows)
    print_table(
        f"GetUserData page 1, rated=no, p50 ms (target: predicted within {TARGET_RATIO}x of date)",
        ["database", "query", "date-desc", "predicted-desc", "ratio", "verdict"],
        pages,
    )
    missed = [r for r in rescorings if r.seconds >= TARGET_SECONDS_PER_USER] + [p for p in pages if p[-1] != "ok"]
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
