"""The /getuserdata bench dataset (issue 2, part 6), shared by every benchmark
on the 100k-image library: its shape, its seeded generation, loading it
through the dataset service's own storage layer (``db.migrate`` and
``bulk.bulk_load``, no blobs, only rows), the cached SQLite file and a fresh
PostgreSQL database, and the command-line options those benchmarks share.
``bench/userdata.py``'s docstring describes the data.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from tagrate_dataset.bulk import bulk_load
from tagrate_dataset.db import create_db_engine, migrate
from tests.support import REPO_ROOT

RESULTS_DIR = REPO_ROOT / "bench" / "results"
PG_ADMIN_URL = os.environ.get("TAGRATE_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")
# Bumped whenever generation changes what a given shape produces, so stale
# cached files are not reused.
GENERATOR_VERSION = 1


def _schema_version() -> str:
    """A digest of the dataset service's migrations: a cached file made
    under another schema (migrations added, renumbered or re-chained) is not
    reused, since ``migrate`` trusts its recorded revision."""
    versions = REPO_ROOT / "dataset-service" / "tagrate_dataset" / "migrations" / "versions"
    digest = hashlib.sha256()
    for path in sorted(versions.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:8]


# Requests per measurement by default: a full run (p95 from 200 samples),
# and a quick look at a smaller scale.
FULL_CALLS, QUICK_CALLS = 200, 50


THRESHOLD = 0.35  # the tagger model's
TAG_COUNT_SPREAD = 5  # tags per image: uniform in mean +- this
BELOW_THRESHOLD_TAGS = 3


T0 = datetime(2025, 1, 1, tzinfo=UTC)
SPAN_SECONDS = 365 * 24 * 3600


# -- the dataset -----------------------------------------------------------------


@dataclass(frozen=True)
class DatasetShape:
    images: int = 100_000
    users: int = 20
    ratings: int = 500_000
    tags: int = 2_000
    tags_per_image: int = 20
    seed: int = 2026

    def scaled(self, fraction: float) -> DatasetShape:
        """Fewer images and ratings (users, tags and tags per image stay)."""
        images = max(100, round(self.images * fraction))
        return replace(self, images=images, ratings=max(self.users, round(self.ratings * fraction)))

    @property
    def key(self) -> str:
        """Names the cached database file: every parameter that changes its content."""
        return (
            f"userdata-i{self.images}-u{self.users}-r{self.ratings}-t{self.tags}-k{self.tags_per_image}"
            f"-s{self.seed}-v{GENERATOR_VERSION}-m{_schema_version()}"
        )

    def ratings_per_user(self) -> list[int]:
        """How many images each user rated: spread linearly from 0.5x to
        1.5x the mean, summing to ``ratings`` (none above ``images``)."""
        weights = np.linspace(0.5, 1.5, self.users) if self.users > 1 else np.ones(1)
        counts = np.floor(weights / weights.sum() * self.ratings).astype(int)
        counts[-1] += self.ratings - counts.sum()
        return [min(int(c), self.images) for c in counts]

    @staticmethod
    def user_name(index: int) -> str:
        return f"user{index + 1:02d}"

    @staticmethod
    def tag_name(rank: int) -> str:
        return f"tag_{rank}"

    def tag_popularity(self) -> np.ndarray:
        """P(a draw is the tag of rank r), r = 1..tags: Zipf with s = 1."""
        weights = 1.0 / np.arange(1, self.tags + 1)
        return weights / weights.sum()


@dataclass
class Dataset:
    """Generated rows as arrays (ids are 1-based, as stored)."""

    shape: DatasetShape
    image_created: np.ndarray  # seconds after T0, per image
    rating_user: np.ndarray
    rating_image: np.ndarray
    rating_value: np.ndarray
    rating_seconds: np.ndarray
    tag_image: np.ndarray
    tag_id: np.ndarray
    tag_score: np.ndarray

    def tables(self) -> dict[str, Iterable[dict[str, Any]]]:
        """The rows ``bulk_load`` takes, one table per keyword."""
        shape = self.shape
        created = [T0 + timedelta(seconds=s) for s in self.image_created.tolist()]

        def images() -> Iterator[dict[str, Any]]:
            for image_id, at in enumerate(created, start=1):
                sha = hashlib.sha256(f"{shape.seed}:{image_id}".encode()).hexdigest()
                size = 50_000 + image_id % 90_000
                yield {"id": image_id, "sha256": sha, "name": f"{sha}.jpg", "format": "JPEG",
                       "size_bytes": size, "width": 768, "height": 512, "created_at": at}  # fmt: skip

        ratings = (
            {"user_id": u, "image_id": i, "rating": r, "rated_at": T0 + timedelta(seconds=s)}
            for u, i, r, s in zip(
                self.rating_user.tolist(),
                self.rating_image.tolist(),
                self.rating_value.tolist(),
                self.rating_seconds.tolist(),
                strict=True,
            )
        )
        image_tags = (
            {"image_id": i, "tagger_model_id": 1, "tag_id": t, "score": s}
            for i, t, s in zip(self.tag_image.tolist(), self.tag_id.tolist(), self.tag_score.tolist(), strict=True)
        )
        return {
            "users": [{"id": k + 1, "name": shape.user_name(k)} for k in range(shape.users)],
            "images": images(),
            "tags": [{"id": r, "name": shape.tag_name(r)} for r in range(1, shape.tags + 1)],
            "tagger_models": [{"id": 1, "model_id": "bench-tagger", "threshold": THRESHOLD}],
            "ratings": ratings,
            "image_taggings": ({"image_id": i, "tagger_model_id": 1} for i in range(1, shape.images + 1)),
            "image_tags": image_tags,
        }


def generate(shape: DatasetShape) -> Dataset:
    """The dataset of ``shape`` (module doc), the same for the same shape."""
    rng = np.random.default_rng(shape.seed)
    created = np.sort(rng.integers(0, SPAN_SECONDS, shape.images))

    users, images, values, seconds = [], [], [], []
    for user, count in enumerate(shape.ratings_per_user(), start=1):
        chosen = rng.choice(shape.images, size=count, replace=False)
        after = created[chosen]
        users.append(np.full(count, user))
        images.append(chosen + 1)
        values.append(np.round(rng.random(count), 3))
        seconds.append(after + (rng.random(count) * (SPAN_SECONDS + 86_400 - after)).astype(np.int64))

    tag_image, tag_id, tag_score = _image_tags(rng, shape)
    return Dataset(
        shape,
        created,
        np.concatenate(users),
        np.concatenate(images),
        np.concatenate(values),
        np.concatenate(seconds),
        tag_image,
        tag_id,
        tag_score,
    )


def _image_tags(rng: np.random.Generator, shape: DatasetShape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image, distinct tags drawn by popularity without replacement: the
    first few distinct draws are above the threshold, the next ones below."""
    cdf = np.cumsum(shape.tag_popularity())
    cdf[-1] = 1.0
    above = rng.integers(
        shape.tags_per_image - TAG_COUNT_SPREAD, shape.tags_per_image + TAG_COUNT_SPREAD + 1, shape.images
    )
    wanted = above + BELOW_THRESHOLD_TAGS
    # Draws with replacement, keeping the first distinct ones in draw order
    # (the same as drawing without replacement); this many draws yield enough
    # distinct tags for nearly every image even with the common ones repeating.
    draws = 4 * int(wanted.max())
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    chunk = 10_000
    for start in range(0, shape.images, chunk):
        stop = min(start + chunk, shape.images)
        sample = np.searchsorted(cdf, rng.random((stop - start, draws)), side="right") + 1
        order = np.argsort(sample, axis=1, kind="stable")
        in_order = np.take_along_axis(sample, order, axis=1)
        first_sorted = np.ones_like(in_order, dtype=bool)
        first_sorted[:, 1:] = in_order[:, 1:] != in_order[:, :-1]
        first = np.empty_like(first_sorted)
        np.put_along_axis(first, order, first_sorted, axis=1)
        position = np.cumsum(first, axis=1)  # 1-based rank among the distinct draws so far
        rows, cols = np.nonzero(first & (position <= wanted[start:stop, None]))
        is_above = position[rows, cols] <= above[start + rows]
        scores = np.where(
            is_above,
            THRESHOLD + rng.random(rows.size) * (1 - THRESHOLD),
            0.05 + rng.random(rows.size) * (THRESHOLD - 0.05),
        )
        parts.append((rows + start + 1, sample[rows, cols], np.round(scores, 4)))
    return tuple(np.concatenate(column) for column in zip(*parts, strict=True))  # type: ignore[return-value]


def load(url: str, dataset: Dataset) -> float:
    """Migrates the (empty) database at ``url`` and bulk-loads ``dataset``;
    returns the seconds it took."""
    start = time.perf_counter()
    engine = create_db_engine(url, pool_size=1, max_overflow=0)
    try:
        migrate(engine)
        bulk_load(engine, **dataset.tables())
    finally:
        engine.dispose()
    return time.perf_counter() - start


@dataclass
class Generation:
    """Where a database came from, for the report."""

    database: str
    url: str
    seconds: float = 0.0
    cached: bool = False


class DatasetGenerator:
    """Generates the dataset at most once per run, whatever databases need it."""

    def __init__(self, shape: DatasetShape) -> None:
        self.shape = shape
        self._dataset: Dataset | None = None
        self.seconds = 0.0

    def dataset(self) -> Dataset:
        if self._dataset is None:
            start = time.perf_counter()
            self._dataset = generate(self.shape)
            self.seconds = time.perf_counter() - start
        return self._dataset


def sqlite_database(generator: DatasetGenerator, cache_dir: Path) -> Generation:
    """The cached SQLite file of this shape, generated first when missing.
    It is written under a temporary name and renamed when complete, so an
    interrupted run never leaves a half-loaded file to be reused."""
    path = cache_dir / f"{generator.shape.key}.db"
    url = f"sqlite:///{path}"
    if path.exists():
        return Generation("sqlite", url, cached=True)
    partial = path.with_name(f"{path.stem}.partial.db")
    for leftover in partial.parent.glob(f"{partial.name}*"):
        leftover.unlink()
    seconds = load(f"sqlite:///{partial}", generator.dataset())
    # Every connection is closed, so the WAL is checkpointed into the file and gone.
    os.replace(partial, path)
    return Generation("sqlite", url, seconds)


@contextlib.contextmanager
def postgres_database(generator: DatasetGenerator, admin_url: str) -> Iterator[Generation]:
    """A fresh PostgreSQL database with the dataset loaded, dropped afterwards."""
    name = f"tagrate_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = f"{admin_url.rsplit('/', 1)[0]}/{name}"
        yield Generation("postgresql", url, load(url, generator.dataset()))
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def parse_dataset_args(
    prog: str,
    description: str,
    argv: list[str] | None,
    full_calls: int = FULL_CALLS,
    quick_calls: int = QUICK_CALLS,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> tuple[argparse.Namespace, DatasetShape, DatasetGenerator, tuple[str, ...]]:
    """The options every benchmark on the 100k-image dataset shares (which
    databases, calls per measurement, scale, cache folder), plus any the
    benchmark adds with ``extra``; prints the run's header line. Returns the
    options, the dataset's shape and generator, and the databases to run on."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    if extra is not None:
        extra(parser)
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both", help="Default: both.")
    parser.add_argument(
        "--calls",
        type=int,
        default=None,
        help=f"Requests per measurement (default {full_calls}, or {quick_calls} with a --scale below 1).",
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="Fraction of the full dataset's images and ratings (default 1)."
    )
    parser.add_argument("--cache-dir", type=Path, default=RESULTS_DIR, help="Where the SQLite file is cached.")
    parser.add_argument("--pg-admin-url", default=PG_ADMIN_URL, help="A PostgreSQL database to create others from.")
    args = parser.parse_args(argv or [])
    if args.calls is None:
        args.calls = full_calls if args.scale >= 1 else quick_calls
    if args.calls < 1 or not 0 < args.scale <= 1:
        parser.error("--calls must be 1 or more and --scale in (0, 1]")
    shape = DatasetShape().scaled(args.scale)
    databases = ("sqlite", "postgresql") if args.db == "both" else (args.db,)
    print(f"{os.cpu_count()} cores; {shape}; {args.calls} calls per measurement", flush=True)
    return args, shape, DatasetGenerator(shape), databases
