"""The trainer's copy of the global head it published: one object, in the
trainer's folder or in a bucket (moto) that every trainer replica shares;
a copy of another version, a torn object, or none at all reads as None;
a copy an older trainer left as three files still reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tagrate_common.objectstore import FsObjects, ObjectStore, S3Objects
from tagrate_common.vision.rating_heads import serialize_weights
from tagrate_trainer.published import COPY_KEY, GlobalHeadCopies, GlobalHeadCopy
from tests.s3server import MotoServer

EXTRACTOR = "test-extractor@0123456789ab:pooled"
D = 8


@pytest.fixture(params=["fs", "s3"])
def objects(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "fs":
        return FsObjects(tmp_path / "global-head")
    moto: MotoServer = request.getfixturevalue("moto_server")
    return S3Objects(moto.client(), moto.new_bucket(), "tagrate/trainer/")


def linear(bias: float) -> bytes:
    return serialize_weights({"weight": np.full(D, 0.1), "bias": np.array(bias)})


def test_a_saved_copy_is_read_back_by_any_replica_for_its_version_only(objects: ObjectStore) -> None:
    mlp = serialize_weights({"w1": np.ones((3, D)), "b1": np.zeros(3), "w2": np.ones(3), "b2": np.array(0.0)})
    copy = GlobalHeadCopy("v3-abcd", EXTRACTOR, "mlp", mlp, linear(0.5))
    GlobalHeadCopies(objects).save(copy)
    other = GlobalHeadCopies(objects)  # another replica on the same store
    assert other.load("v3-abcd", EXTRACTOR) == copy
    assert other.load("v3-abcd", EXTRACTOR).prior_head(D).kind == "linear"
    assert other.load("v2-ffff", EXTRACTOR) is None
    assert other.load("v3-abcd", "other@ffffffffffff:pooled") is None

    without_prior = GlobalHeadCopy("v4-beef", EXTRACTOR, "linear", linear(-1.0))
    other.save(without_prior)
    assert GlobalHeadCopies(objects).load("v4-beef", EXTRACTOR) == without_prior
    assert GlobalHeadCopies(objects).load("v3-abcd", EXTRACTOR) is None  # replaced whole


def test_nothing_or_a_torn_copy_reads_as_none(objects: ObjectStore) -> None:
    copies = GlobalHeadCopies(objects)
    assert copies.load("v1-0000", EXTRACTOR) is None
    copies.save(GlobalHeadCopy("v1-0000", EXTRACTOR, "linear", linear(0.2)))
    objects.put(COPY_KEY, objects.get(COPY_KEY)[:-10])
    assert copies.load("v1-0000", EXTRACTOR) is None
    objects.put(COPY_KEY, b"not json\n")
    assert copies.load("v1-0000", EXTRACTOR) is None


def test_a_copy_in_the_old_three_file_layout_still_reads(tmp_path: Path) -> None:
    folder = tmp_path / "global-head"
    folder.mkdir()
    (folder / "global-head.pt").write_bytes(linear(0.3))
    (folder / "global-prior.pt").write_bytes(linear(0.1))
    (folder / "global-head.json").write_text(
        json.dumps({"version": "v7-1234", "extractor_id": EXTRACTOR, "kind": "linear"})
    )
    loaded = GlobalHeadCopies(folder).load("v7-1234", EXTRACTOR)
    assert loaded == GlobalHeadCopy("v7-1234", EXTRACTOR, "linear", linear(0.3), linear(0.1))
    GlobalHeadCopies(folder).save(GlobalHeadCopy("v8-5678", EXTRACTOR, "linear", linear(0.4)))
    assert GlobalHeadCopies(folder).load("v7-1234", EXTRACTOR) is None  # the new copy wins
    assert GlobalHeadCopies(folder).load("v8-5678", EXTRACTOR).weights == linear(0.4)
