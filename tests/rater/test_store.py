"""The heads store: versioned files that survive restarts, pruning, names
that never become paths, damaged and foreign files, hot swaps, and replicas
sharing one store picking up each other's heads. The tests taking
``heads_at`` run on both backends: a folder and an S3 bucket (moto)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from tagrate_common.errors import Conflict, InvalidArgument
from tagrate_common.objectstore import ObjectStore
from tagrate_common.vision.rating_heads import serialize_weights
from tagrate_rater.heads import GLOBAL
from tagrate_rater.store import STALE_TEMP_SECONDS, HeadStore, subject_key
from tests.common.test_rating_heads import D

EXTRACTOR = "test-extractor@0123456789ab:pooled"


def open_store(where: Path | ObjectStore, extractor: str = EXTRACTOR, keep: int = 3) -> HeadStore:
    """The store in ``where``: an object store, or the folder ``heads`` in a test's folder."""
    return HeadStore.open(where if isinstance(where, ObjectStore) else where / "heads", extractor, D, keep)


def publish(store: HeadStore, user: str, bias: float, **kw) -> str:
    weights = serialize_weights({"weight": np.zeros(D), "bias": np.array(bias)})
    return store.publish(user=user, kind="linear", weights=weights, extractor_id=store.extractor_id, **kw).version


def constant(store_or_set, user: str) -> float:
    live = store_or_set.live if isinstance(store_or_set, HeadStore) else store_or_set
    return float(live.serving(user).head.predict(np.zeros((1, D)))[0])


def test_published_heads_survive_a_restart_with_their_metadata(heads_at) -> None:
    store = open_store(heads_at)
    v1 = publish(store, "alice", 1.0, snapshot_id="alice:7", metrics={"spearman": 0.61, "mae": 0.12})
    publish(store, GLOBAL, -1.0)
    reopened = open_store(heads_at)
    assert [i.user for i in reopened.live.infos()] == ["alice", GLOBAL]
    alice = reopened.live.get("alice").info
    assert (alice.version, alice.snapshot_id, alice.metrics, alice.kind) == (
        v1,
        "alice:7",
        {"mae": 0.12, "spearman": 0.61},
        "linear",
    )
    assert alice.model == "personal" and reopened.live.get(GLOBAL).info.model == "global"
    assert constant(reopened, "alice") == pytest.approx(float(1 / (1 + np.exp(-1.0))), abs=1e-6)
    assert constant(reopened, "bob") == pytest.approx(float(1 / (1 + np.exp(1.0))), abs=1e-6)  # the global head


def test_the_newest_version_serves_and_versions_keep_counting_after_a_restart(heads_at) -> None:
    store = open_store(heads_at)
    versions = [publish(store, "alice", bias) for bias in (0.0, 1.0, 2.0)]
    assert [v.split("-")[0] for v in versions] == ["v1", "v2", "v3"]
    reopened = open_store(heads_at)
    assert reopened.live.get("alice").info.version == versions[-1]
    assert publish(reopened, "alice", 3.0).startswith("v4-")


def test_old_versions_are_pruned(heads_at) -> None:
    store = open_store(heads_at, keep=2)
    for bias in range(5):
        publish(store, "alice", float(bias))
    files = sorted(item.key.rsplit("/", 1)[1] for item in store.objects.list(f"{subject_key('alice')}/"))
    assert [name.split("-")[0] for name in files] == ["00000004", "00000005"]


def test_user_names_never_become_paths(tmp_path) -> None:
    store = open_store(tmp_path)
    for user in ("alice", "Alice", "..a", "1234567890"):
        publish(store, user, 0.5)
    paths = [str(p.relative_to(tmp_path / "heads")) for p in (tmp_path / "heads").rglob("*")]
    assert paths and not any(name in path for path in paths for name in ("alice", "Alice", "..a", "1234567890"))
    folders = [p for p in (tmp_path / "heads").iterdir() if p.is_dir()]
    assert len(folders) == 4  # case matters: Alice is not alice
    with pytest.raises(InvalidArgument):
        publish(store, "../etc", 0.5)
    with pytest.raises(InvalidArgument):
        publish(store, "", 0.5)


def test_a_damaged_newest_file_falls_back_to_the_previous_version(tmp_path) -> None:
    store = open_store(tmp_path)
    good = publish(store, "alice", 1.0)
    publish(store, "alice", 2.0)
    newest = max((tmp_path / "heads" / subject_key("alice")).glob("*.head"))
    newest.write_bytes(newest.read_bytes()[:100])
    interrupted, in_flight = newest.parent / ".tmp-abc", newest.parent / ".tmp-def"
    for temp in (interrupted, in_flight):
        temp.write_bytes(b"half written")
    long_ago = time.time() - STALE_TEMP_SECONDS - 60
    os.utime(interrupted, (long_ago, long_ago))
    reopened = open_store(tmp_path)
    assert reopened.live.get("alice").info.version == good
    # An old leftover of an interrupted publish is removed; a fresh one may be
    # another replica's publish in progress and is left alone.
    assert [p.name for p in newest.parent.glob(".tmp-*")] == [".tmp-def"]


def test_heads_of_another_extractor_are_refused_and_not_loaded(heads_at) -> None:
    store = open_store(heads_at)
    before = publish(store, "alice", 1.0)
    weights = serialize_weights({"weight": np.zeros(D), "bias": np.array(5.0)})
    with pytest.raises(Conflict) as caught:
        store.publish(user="alice", kind="linear", weights=weights, extractor_id="other@ffffffffffff:pooled")
    assert caught.value.code == "extractor_mismatch" and EXTRACTOR in caught.value.message
    assert store.live.get("alice").info.version == before
    assert len(list(store.objects.list(f"{subject_key('alice')}/"))) == 1

    # A newer head made while another extractor ran: the current extractor
    # keeps serving the newest head that was made for it.
    other = open_store(heads_at, extractor="other@ffffffffffff:pooled")
    assert len(other.live) == 0
    publish(other, "alice", 5.0)
    assert open_store(heads_at).live.get("alice").info.version == before
    assert open_store(heads_at, extractor="other@ffffffffffff:pooled").live.get("alice").info.version.startswith("v2-")


def test_a_set_taken_before_a_publish_never_changes(heads_at) -> None:
    store = open_store(heads_at)
    publish(store, "alice", 1.0)
    taken = store.live
    publish(store, "alice", -3.0)
    publish(store, "bob", 2.0)
    assert constant(taken, "alice") == pytest.approx(float(1 / (1 + np.exp(-1.0))), abs=1e-6)
    assert taken.serving("bob") is None and len(taken) == 1
    assert constant(store, "alice") == pytest.approx(float(1 / (1 + np.exp(3.0))), abs=1e-6)


# ---- replicas sharing one folder ----------------------------------------------------


def test_a_replica_serves_what_another_published_after_a_reload(heads_at) -> None:
    a, b = open_store(heads_at), open_store(heads_at)
    assert b.reload() == 0  # nothing published yet: nothing read
    publish(a, "alice", 1.0)
    publish(a, GLOBAL, -1.0)
    assert b.live.get("alice") is None
    taken = b.live
    assert b.reload() == 2
    assert [i.version for i in b.live.infos()] == [i.version for i in a.live.infos()]
    assert constant(b, "alice") == constant(a, "alice") and len(taken) == 0  # a set taken before never changes
    assert b.reload() == 0  # unchanged since: no folder is read again
    version = publish(a, "alice", 2.0)
    assert b.reload() == 1 and b.live.get("alice").info.version == version
    assert b.live.get(GLOBAL).info == a.live.get(GLOBAL).info


def test_replicas_number_versions_after_each_other(heads_at) -> None:
    a, b = open_store(heads_at), open_store(heads_at)
    assert publish(a, "alice", 1.0).startswith("v1-")
    # b has not reloaded, yet its version follows a's on disk rather than
    # colliding with it.
    assert publish(b, "alice", 2.0).startswith("v2-")
    assert a.reload() == 1 and a.live.get("alice").info.version == b.live.get("alice").info.version


def test_a_torn_or_foreign_file_is_skipped_and_the_reloader_keeps_running(tmp_path) -> None:
    a, b = open_store(tmp_path), open_store(tmp_path)
    good = publish(a, "alice", 1.0)
    assert b.reload() == 1
    folder = tmp_path / "heads" / subject_key("alice")
    (folder / "00000007-garbage.head").write_bytes(b"\x00not a head file")
    (folder / "00000008-torn.head").write_bytes((folder / f"00000001-{good.split('-')[1]}.head").read_bytes()[:200])
    (tmp_path / "heads" / "GENERATION").write_text("someone else\n")
    assert b.reload() == 0 and b.live.get("alice").info.version == good
    b.start_reloading(0.05)
    try:
        newer = publish(a, "alice", 3.0)  # numbered after the damaged files
        assert newer.startswith("v9-")
        deadline = time.monotonic() + 5
        while b.live.get("alice").info.version != newer and time.monotonic() < deadline:
            time.sleep(0.02)
        assert b.live.get("alice").info.version == newer
        assert constant(b, "alice") == pytest.approx(float(1 / (1 + np.exp(-3.0))), abs=1e-6)
    finally:
        b.close()
