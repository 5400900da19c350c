"""What the parts of ``bench similar`` share: the synthetic vectors'
shape and generator, the duplicate finder's settings as the service reads
them, percentiles and the load average printed beside every figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tagrate_dataset.config import DatasetSettings
from tagrate_dataset.similar.duplicates import GroupingSettings

DIM = 1280
EXTRACTOR = "bench-synthetic-1280"
CENTRES = 500


def grouping_settings() -> GroupingSettings:
    s = DatasetSettings(tagger_addr="", rater_addr="")
    return GroupingSettings(
        s.duplicate_hash_distance,
        s.duplicate_min_similarity,
        s.duplicate_neighbour_similarity,
        s.duplicate_min_alignment,
        s.duplicate_batch_images,
    )


def loadavg() -> str:
    """The 1, 5 and 15-minute load averages, as printed with each table."""
    return str(Path("/proc/loadavg").read_text().split(" ")[:3])


def centres(rng: np.random.Generator, dim: int = DIM) -> np.ndarray:
    return rng.normal(size=(CENTRES, dim)).astype(np.float32)


def clustered(rng: np.random.Generator, n: int, dim: int = DIM, around: np.ndarray | None = None) -> np.ndarray:
    """``n`` unit vectors around 500 centres (``around`` when given: the
    same centres across chunks of one library)."""
    if around is None:
        around = centres(rng, dim)
    x = around[rng.integers(0, len(around), n)] + 0.7 * rng.normal(size=(n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
