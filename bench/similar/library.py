"""The search part's database: the 100k-image bench library (a copy of
the cached SQLite file, or a fresh PostgreSQL database loaded by the
harness) with a synthetic 1280-float vector per image (500 clustered
centres plus noise, the same vectors on both databases), written straight
into ``image_features`` before the dataset service starts."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sqlalchemy import text

from tagrate_dataset.db import create_db_engine

from ..harness.dataset import DatasetGenerator, Generation, postgres_database, sqlite_database
from ..harness.vectors_stack import add_vectors as stored_vectors
from ..harness.vectors_stack import park_hash_backfill
from .common import DIM, EXTRACTOR, centres, clustered

_CHUNK = 5000
_STORED_AT = datetime(2026, 12, 7, 12, tzinfo=UTC)
_VECTOR_SEED = 7


@dataclass(frozen=True)
class Library:
    database: str  # "sqlite" or "postgresql"
    url: str
    generation: Generation
    vector_seconds: float  # storing the synthetic vectors
    names: list[str]  # images the searches start from
    users: list[str]


@contextlib.contextmanager
def library(
    database: str, generator: DatasetGenerator, cache_dir: Path, pg_admin_url: str, work: Path
) -> Iterator[Library]:
    """The bench library on ``database`` with every image's vector; a
    PostgreSQL database is dropped afterwards, the SQLite copy lives in
    ``work``."""
    with contextlib.ExitStack() as cleanup:
        if database == "sqlite":
            cached = sqlite_database(generator, cache_dir)
            copy = work / "library.db"
            shutil.copyfile(cached.url.removeprefix("sqlite:///"), copy)
            generation = Generation("sqlite", f"sqlite:///{copy}", cached.seconds, cached.cached)
        else:
            generation = cleanup.enter_context(postgres_database(generator, pg_admin_url))
        seconds = add_vectors(generation.url)
        # The rows have no files: record their hash work as failed, as the
        # service's own backfill would after a minute of failing on both cores.
        park_hash_backfill(generation.url)
        names, users = _sample(generation.url, generator.shape.seed)
        yield Library(database, generation.url, generation, seconds, names, users)


def add_vectors(url: str, seed: int = _VECTOR_SEED) -> float:
    """A synthetic vector for every image of the library (in id order, so
    both databases get the same ones); returns the seconds it took."""

    def draw(rng: np.random.Generator) -> Callable[[int], np.ndarray]:
        around = centres(rng, DIM)  # one set for the library: 500 clusters of ~200 images at 100k
        return lambda n: clustered(rng, n, DIM, around)

    return stored_vectors(url, EXTRACTOR, DIM, draw, seed, _CHUNK, _STORED_AT)


def _sample(url: str, seed: int) -> tuple[list[str], list[str]]:
    """200 images drawn with a fixed seed (the same on both databases) and every user."""
    engine = create_db_engine(url, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as conn:
            names = list(conn.execute(text("SELECT name FROM images ORDER BY id")).scalars())
            users = list(conn.execute(text("SELECT name FROM users ORDER BY name")).scalars())
    finally:
        engine.dispose()
    picked = np.random.default_rng(seed).choice(len(names), min(200, len(names)), replace=False)
    return [names[int(i)] for i in picked], users
