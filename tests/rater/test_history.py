"""Model history in the rater's heads folder: every kept version listed
newest first with which serves, an older one chosen to serve (here, after a
restart, and by another replica sharing the folder at its next reload), the
next publish serving again, and unknown versions refused."""

from __future__ import annotations

import math

import pytest

from tagrate_common.errors import NotFound
from tagrate_rater import history

from .test_store import constant, open_store, publish


def squash(bias: float) -> float:
    """What a zero-weight linear head predicts: its bias through the sigmoid."""
    return 1 / (1 + math.exp(-bias))


def test_versions_are_listed_and_an_older_one_serves_until_the_next_publish(heads_at) -> None:
    store = open_store(heads_at, keep=3)
    versions = [
        publish(store, "ann", bias, snapshot_id=f"1:{n}:{n}", metrics={"mae": bias})
        for n, bias in enumerate((0.1, 0.2, 0.3, 0.4))
    ]
    other = open_store(heads_at, keep=3)  # a replica on the same folder
    listed = history.versions(store, "ann")
    assert [v.info.version for v in listed] == versions[:0:-1]  # the newest 3 kept, newest first
    assert [v.serving for v in listed] == [True, False, False]
    assert listed[2].info.metrics == {"mae": 0.2} and listed[2].info.snapshot_id == "1:1:1"

    info = history.use(store, "ann", versions[1])
    assert info.version == versions[1] and constant(store, "ann") == pytest.approx(squash(0.2))
    assert [v.serving for v in history.versions(store, "ann")] == [False, False, True]
    other.reload()
    assert constant(other, "ann") == pytest.approx(squash(0.2))
    assert constant(open_store(heads_at, keep=3), "ann") == pytest.approx(squash(0.2))  # after a restart too

    newest = publish(store, "ann", 0.5)
    assert constant(store, "ann") == pytest.approx(squash(0.5))
    assert constant(open_store(heads_at, keep=3), "ann") == pytest.approx(squash(0.5))
    assert history.versions(store, "ann")[0].info.version == newest and history.versions(store, "ann")[0].serving


def test_unknown_versions_and_subjects(heads_at) -> None:
    store = open_store(heads_at)
    publish(store, "bob", 0.1)
    with pytest.raises(NotFound) as info:
        history.use(store, "bob", "v9-nothere")
    assert info.value.code == "version_not_found"
    with pytest.raises(NotFound):
        history.use(store, "nobody", "v1-x")
    assert history.versions(store, "nobody") == []
