"""The rater and the dataset service as their own processes over a bench
database whose every image has a synthetic feature vector of the rater's
extractor (random: the cost of scoring and training does not depend on what
the vectors show), written straight into ``image_features`` before the
dataset service starts. Shared by bench/predictions.py and bench/freshness.py
(moved verbatim from predictions.py)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import numpy as np
from sqlalchemy import literal, select, text
from sqlalchemy.dialects import postgresql, sqlite

from tagrate_common.dataset_stubs import DatasetStubs
from tagrate_common.protos import rater_pb2, rater_pb2_grpc
from tagrate_dataset.db import create_db_engine, migrate
from tagrate_dataset.models import Image, ImageFeatures, WorkItem, WorkKind, WorkState
from tagrate_dataset.similar.hashing import HASH_KEY
from tests.support import ServiceProcess, free_port

DEADLINE = 120.0
VECTOR_BATCH = 2000


@dataclass
class Services:
    dataset: ServiceProcess
    rater: ServiceProcess
    dataset_stub: DatasetStubs
    rater_stub: rater_pb2_grpc.RaterServiceStub
    channels: list[grpc.Channel]


# Given the generator, a function drawing n vectors (so a draw can set up
# state from the same generator first, e.g. cluster centres).
Draw = Callable[[np.random.Generator], Callable[[int], np.ndarray]]


def add_vectors(
    url: str,
    extractor_id: str,
    dimensions: int,
    draw: Draw | None = None,
    seed: int = 13,
    batch_size: int = VECTOR_BATCH,
    stored_at: datetime | None = None,
) -> float:
    """A float32 vector of ``extractor_id`` for every stored image that has
    none, in id order (so a seed gives both databases the same vectors):
    standard normal, or as ``draw`` makes them; returns the seconds it took."""
    start = time.perf_counter()
    engine = create_db_engine(url, pool_size=1, max_overflow=0)
    rng = np.random.default_rng(seed)
    vectors_of = (draw or (lambda r: lambda n: r.normal(0.0, 1.0, (n, dimensions))))(rng)
    now = stored_at or datetime.now(UTC)
    try:
        with engine.begin() as conn:
            ids = conn.execute(
                text("SELECT id FROM images WHERE id NOT IN (SELECT image_id FROM image_features) ORDER BY id")
            ).scalars()
            ids = list(ids)
        table = ImageFeatures.__table__  # type: ignore[attr-defined]
        for begin in range(0, len(ids), batch_size):
            batch = ids[begin : begin + batch_size]
            vectors = vectors_of(len(batch)).astype("<f4")
            rows = [
                {
                    "image_id": i,
                    "extractor_id": extractor_id,
                    "dim": dimensions,
                    "vector": v.tobytes(),
                    "created_at": now,
                }
                for i, v in zip(batch, vectors, strict=True)
            ]
            with engine.begin() as conn:
                conn.execute(table.insert(), rows)
        if engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("ANALYZE"))
    finally:
        engine.dispose()
    return time.perf_counter() - start


def park_hash_backfill(url: str) -> None:
    """Every image's perceptual-hash work recorded as failed by the current
    hasher, as after a finished backfill: the bench images have no files,
    so the dataset service's hash backfill (issue 27) would otherwise fail on
    each of them during the measurement, a write and an ERROR line per
    image, on the same two cores as the work measured."""
    engine = create_db_engine(url, pool_size=1, max_overflow=0)
    try:
        migrate(engine)  # the cached library may predate the work table
        table = WorkItem.__table__  # type: ignore[attr-defined]
        rows = select(
            Image.id,
            literal(WorkKind.HASH.value),
            literal(WorkState.FAILED.value),
            literal(datetime.now(UTC), table.c.enqueued_at.type),
            literal(HASH_KEY),
            literal("bench: no image file"),
            literal(1),
        ).where(Image.id > 0)  # SQLite's upsert after INSERT ... SELECT needs a WHERE
        dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
        columns = ["image_id", "kind", "state", "enqueued_at", "failed_by", "error", "attempts"]
        with engine.begin() as conn:
            conn.execute(dialect.insert(table).from_select(columns, rows).on_conflict_do_nothing())
    finally:
        engine.dispose()


@contextlib.contextmanager
def services(url: str, work_dir: Path) -> Iterator[Services]:
    """The rater, then the vectors, then the dataset service (so the
    vectors are not queued as new images to score)."""
    ports = {"dataset": free_port(), "rater": free_port()}
    addr = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    data_dir = work_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    rater = ServiceProcess(
        "tagrate_rater",
        {
            "TAGRATE_DATA_DIR": str(data_dir),
            "RATER_HOST": "127.0.0.1",
            "RATER_PORT": str(ports["rater"]),
            "RATER_METRICS_PORT": "0",
            "RATER_DEVICE": "cpu",
            "RATER_HEADS_DIR": str(work_dir / "heads"),
            "RATER_DATASET_ADDR": addr["dataset"],
        },
        work_dir / "rater.log",
        addr["rater"],
    )
    dataset = ServiceProcess(
        "tagrate_dataset",
        {
            "TAGRATE_DATA_DIR": str(data_dir),
            "DATASET_HOST": "127.0.0.1",
            "DATASET_PORT": str(ports["dataset"]),
            "DATASET_METRICS_PORT": "0",
            "DATASET_DATABASE_URL": url,
            "DATASET_TAGGER_ADDR": "",
            "DATASET_RATER_ADDR": addr["rater"],
            "DATASET_WORK_POLL_SECONDS": "0.2",
        },
        work_dir / "dataset.log",
        addr["dataset"],
    )
    channels: list[grpc.Channel] = []
    try:
        rater.start(timeout=600)  # the first start exports the model to ONNX: minutes on a loaded machine
        channels.append(grpc.insecure_channel(addr["rater"]))
        rater_stub = rater_pb2_grpc.RaterServiceStub(channels[-1])
        info = rater_stub.GetExtractorInfo(rater_pb2.GetExtractorInfoRequest(), timeout=DEADLINE)
        seconds = add_vectors(url, info.extractor_id, info.dimensions)
        print(f"  vectors written in {seconds:.1f} s", flush=True)
        park_hash_backfill(url)
        dataset.start(timeout=120)
        channels.append(grpc.insecure_channel(addr["dataset"]))
        yield Services(dataset, rater, DatasetStubs(channels[-1]), rater_stub, channels)
    finally:
        for channel in channels:
            channel.close()
        for process in (dataset, rater):
            if process.proc is not None and process.proc.poll() is None:
                process.terminate()
