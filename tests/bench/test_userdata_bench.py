"""The /getuserdata benchmark stays runnable: a tiny SQLite run end to end
(dataset service and gateway as processes), its generated data, its cache."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from bench.harness.dataset import (
    BELOW_THRESHOLD_TAGS,
    THRESHOLD,
    DatasetGenerator,
    DatasetShape,
    generate,
    sqlite_database,
)
from bench.userdata import main


def test_tiny_run_on_sqlite_prints_every_table_without_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    status = main(["--db", "sqlite", "--scale", "0.002", "--calls", "5", "--cache-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 0, out  # non-zero when any request failed
    for heading in ("Dataset", "GET /getuserdata through the gateway", "Gateway overhead"):
        assert heading in out
    for scenario in ("unfiltered page", "2-tag filtered page", "-tag exclusion", "rated=no"):
        assert out.count(f"{scenario} ") >= 2, scenario  # concurrency 1 and 8
    assert "p50 < 50 ms" in out and "< 3 ms" in out
    assert len(list(tmp_path.glob("userdata-*.db"))) == 1


def test_cached_sqlite_file_is_reused_without_generating(tmp_path: Path) -> None:
    shape = DatasetShape().scaled(0.001)
    first = sqlite_database(DatasetGenerator(shape), tmp_path)
    again = DatasetGenerator(shape)
    second = sqlite_database(again, tmp_path)
    assert (first.cached, second.cached) == (False, True)
    assert second.url == first.url and again.seconds == 0
    assert not list(tmp_path.glob("*.partial.db*"))  # no leftovers of the generation


def test_generated_data_has_the_promised_shape() -> None:
    shape = DatasetShape().scaled(0.01)
    data = generate(shape)
    pairs = set(zip(data.rating_user.tolist(), data.rating_image.tolist(), strict=True))
    assert len(data.rating_user) == len(pairs) == shape.ratings  # one rating per user and image
    assert Counter(data.rating_user.tolist()) == dict(enumerate(shape.ratings_per_user(), start=1))
    assert len(set(zip(data.tag_image.tolist(), data.tag_id.tolist(), strict=True))) == len(data.tag_image)
    above = data.tag_score >= THRESHOLD
    per_image = np.bincount(data.tag_image[above], minlength=shape.images + 1)[1:]
    assert per_image.min() >= 15 and per_image.max() <= 25 and abs(per_image.mean() - 20) < 0.5
    assert np.all(np.bincount(data.tag_image[~above], minlength=shape.images + 1)[1:] == BELOW_THRESHOLD_TAGS)
    # Zipf-like: the most common tag is on most images, the rarest on few.
    frequency = np.bincount(data.tag_id[above], minlength=shape.tags + 1)[1:] / shape.images
    assert frequency[0] > 0.8 and frequency[-100:].mean() < 0.01
    assert np.array_equal(generate(shape).tag_id, data.tag_id)  # seeded
