"""Rating heads without a server: the weights format and its validation,
folded normalisation, stacking, and the versioned store on disk."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch

from tagrate_common.errors import Conflict, InvalidArgument
from tagrate_rater.heads import (
    GLOBAL,
    HeadSet,
    HeadStore,
    RatingHead,
    StackedHeads,
    deserialize_weights,
    serialize_weights,
    subject_key,
)

D = 16
EXTRACTOR = "test-extractor@0123456789ab:pooled"


def linear_tensors(rng: np.random.Generator, normalised: bool = True) -> dict[str, np.ndarray]:
    tensors = {"weight": rng.normal(size=D), "bias": np.array(rng.normal())}
    if normalised:
        tensors.update(mean=rng.normal(size=D), std=rng.uniform(0.5, 2.0, size=D))
    return tensors


def mlp_tensors(rng: np.random.Generator, hidden: int) -> dict[str, np.ndarray]:
    return {
        "mean": rng.normal(size=D),
        "std": rng.uniform(0.5, 2.0, size=D),
        "w1": rng.normal(size=(hidden, D)),
        "b1": rng.normal(size=hidden),
        "w2": rng.normal(size=hidden),
        "b2": np.array(rng.normal()),
    }


def reference(kind: str, tensors: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The documented formula, evaluated plainly in torch (float64)."""
    t = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in tensors.items()}
    z = torch.as_tensor(x, dtype=torch.float64)
    if "mean" in t:
        z = (z - t["mean"]) / t["std"]
    if kind == "linear":
        logits = z @ t["weight"] + t["bias"]
    else:
        logits = torch.relu(z @ t["w1"].T + t["b1"]) @ t["w2"] + t["b2"]
    return torch.sigmoid(logits).numpy()


def head(kind: str, tensors: dict[str, np.ndarray]) -> RatingHead:
    return RatingHead.from_tensors(kind, deserialize_weights(serialize_weights(tensors)), D)


def test_folded_normalisation_gives_the_documented_formula() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, D)) * 3
    for kind, tensors in [
        ("linear", linear_tensors(rng)),
        ("linear", linear_tensors(rng, normalised=False)),
        ("mlp", mlp_tensors(rng, 7)),
    ]:
        predicted = head(kind, tensors).predict(x)
        assert predicted.shape == (5,) and predicted.dtype == np.float32
        np.testing.assert_allclose(predicted, reference(kind, tensors, x), atol=2e-6)


def test_stacked_heads_equal_each_head_alone() -> None:
    rng = np.random.default_rng(2)
    specs = [("linear", linear_tensors(rng)) for _ in range(5)]
    specs += [("mlp", mlp_tensors(rng, 4)) for _ in range(3)] + [("mlp", mlp_tensors(rng, 9)) for _ in range(2)]
    order = rng.permutation(len(specs))  # interleave kinds and hidden sizes
    heads = [head(*specs[i]) for i in order]
    x = rng.normal(size=(6, D))
    stacked = StackedHeads(heads).predict(x)
    assert stacked.shape == (6, len(heads))
    for column, one in enumerate(heads):
        np.testing.assert_allclose(stacked[:, column], one.predict(x), atol=1e-6)
        np.testing.assert_allclose(stacked[:, column], reference(one.kind, one.tensors, x), atol=2e-6)


def test_extreme_logits_stay_within_the_rating_range() -> None:
    x = np.ones((1, D))
    assert head("linear", {"weight": np.full(D, 1e6), "bias": np.array(0.0)}).predict(x)[0] == 1.0
    assert head("linear", {"weight": np.full(D, -1e6), "bias": np.array(0.0)}).predict(x)[0] == 0.0


@pytest.mark.parametrize(
    ("kind", "tensors", "words"),
    [
        ("linear", {"weight": np.zeros(D)}, "missing bias"),
        ("linear", {"weight": np.zeros(D), "bias": np.array(0.0), "w1": np.zeros((2, D))}, "unexpected w1"),
        ("linear", {"weight": np.zeros(D + 1), "bias": np.array(0.0)}, f"shape ({D},)"),
        ("linear", {"weight": np.zeros(D), "bias": np.zeros(2)}, "single number"),
        ("linear", {"weight": np.full(D, np.nan), "bias": np.array(0.0)}, "NaN"),
        ("linear", {"weight": np.zeros(D), "bias": np.array(np.inf)}, "infinite"),
        ("linear", {"weight": np.zeros(D), "bias": np.array(0.0), "mean": np.zeros(D), "std": np.zeros(D)}, "std"),
        ("mlp", {"weight": np.zeros(D), "bias": np.array(0.0)}, "missing w1, b1, w2, b2"),
        ("mlp", {"w1": np.zeros((3, D - 1)), "b1": np.zeros(3), "w2": np.zeros(3), "b2": np.array(0.0)}, "w1"),
        ("mlp", {"w1": np.zeros((2000, D)), "b1": np.zeros(2000), "w2": np.zeros(2000), "b2": np.array(0.0)}, "1024"),
        ("mlp", {"w1": np.zeros((3, D)), "b1": np.zeros(4), "w2": np.zeros(3), "b2": np.array(0.0)}, "b1"),
        ("tree", {"weight": np.zeros(D), "bias": np.array(0.0)}, "linear, mlp"),
    ],
)
def test_malformed_weights_are_refused_with_a_reason(kind, tensors, words) -> None:
    with pytest.raises(InvalidArgument) as caught:
        head(kind, tensors)
    assert words in caught.value.message


@pytest.mark.parametrize(("data", "words"), [(b"", "empty"), (b"not a torch file", "not a torch.save file")])
def test_weights_that_are_not_a_torch_file_are_refused(data, words) -> None:
    with pytest.raises(InvalidArgument) as caught:
        deserialize_weights(data)
    assert words in caught.value.message


def test_weights_must_be_a_dict_of_float_tensors() -> None:
    for payload in ([torch.zeros(D)], {"weight": torch.zeros(D, dtype=torch.int64), "bias": torch.tensor(0.0)}):
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        with pytest.raises(InvalidArgument):
            deserialize_weights(buffer.getvalue())


def test_a_pickled_object_is_never_executed() -> None:
    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned > /dev/null",))

    buffer = io.BytesIO()
    torch.save({"weight": Exploit()}, buffer)
    with pytest.raises(InvalidArgument) as caught:
        deserialize_weights(buffer.getvalue())
    assert "not a torch.save file of tensors" in caught.value.message


# ---- the store -------------------------------------------------------------------


def open_store(tmp_path, extractor: str = EXTRACTOR, keep: int = 3) -> HeadStore:
    return HeadStore.open(tmp_path / "heads", extractor, D, keep)


def publish(store: HeadStore, user: str, bias: float, **kw) -> str:
    weights = serialize_weights({"weight": np.zeros(D), "bias": np.array(bias)})
    return store.publish(user=user, kind="linear", weights=weights, extractor_id=store.extractor_id, **kw).version


def constant(store_or_set, user: str) -> float:
    live = store_or_set.live if isinstance(store_or_set, HeadStore) else store_or_set
    return float(live.serving(user).head.predict(np.zeros((1, D)))[0])


def test_published_heads_survive_a_restart_with_their_metadata(tmp_path) -> None:
    store = open_store(tmp_path)
    v1 = publish(store, "alice", 1.0, snapshot_id="alice:7", metrics={"spearman": 0.61, "mae": 0.12})
    publish(store, GLOBAL, -1.0)
    reopened = open_store(tmp_path)
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


def test_the_newest_version_serves_and_versions_keep_counting_after_a_restart(tmp_path) -> None:
    store = open_store(tmp_path)
    versions = [publish(store, "alice", bias) for bias in (0.0, 1.0, 2.0)]
    assert [v.split("-")[0] for v in versions] == ["v1", "v2", "v3"]
    reopened = open_store(tmp_path)
    assert reopened.live.get("alice").info.version == versions[-1]
    assert publish(reopened, "alice", 3.0).startswith("v4-")


def test_old_versions_are_pruned(tmp_path) -> None:
    store = open_store(tmp_path, keep=2)
    for bias in range(5):
        publish(store, "alice", float(bias))
    files = sorted((tmp_path / "heads" / subject_key("alice")).iterdir())
    assert [f.name.split("-")[0] for f in files] == ["00000004", "00000005"]


def test_user_names_never_become_paths(tmp_path) -> None:
    store = open_store(tmp_path)
    for user in ("alice", "Alice", "..a", "1234567890"):
        publish(store, user, 0.5)
    paths = [str(p.relative_to(tmp_path / "heads")) for p in (tmp_path / "heads").rglob("*")]
    assert paths and not any(name in path for path in paths for name in ("alice", "Alice", "..a", "1234567890"))
    assert len({p.split("/")[0] for p in paths}) == 4  # case matters: Alice is not alice
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
    (newest.parent / ".tmp-abc-00000009-x.head").write_bytes(b"half written")
    reopened = open_store(tmp_path)
    assert reopened.live.get("alice").info.version == good
    assert not list(newest.parent.glob(".tmp-*"))  # leftovers of an interrupted publish are removed


def test_heads_of_another_extractor_are_refused_and_not_loaded(tmp_path) -> None:
    store = open_store(tmp_path)
    before = publish(store, "alice", 1.0)
    weights = serialize_weights({"weight": np.zeros(D), "bias": np.array(5.0)})
    with pytest.raises(Conflict) as caught:
        store.publish(user="alice", kind="linear", weights=weights, extractor_id="other@ffffffffffff:pooled")
    assert caught.value.code == "extractor_mismatch" and EXTRACTOR in caught.value.message
    assert store.live.get("alice").info.version == before
    assert len(list((tmp_path / "heads" / subject_key("alice")).glob("*.head"))) == 1

    # A newer head made while another extractor ran: the current extractor
    # keeps serving the newest head that was made for it.
    other = open_store(tmp_path, extractor="other@ffffffffffff:pooled")
    assert len(other.live) == 0
    publish(other, "alice", 5.0)
    assert open_store(tmp_path).live.get("alice").info.version == before
    assert open_store(tmp_path, extractor="other@ffffffffffff:pooled").live.get("alice").info.version.startswith("v2-")


def test_a_set_taken_before_a_publish_never_changes(tmp_path) -> None:
    store = open_store(tmp_path)
    publish(store, "alice", 1.0)
    taken = store.live
    publish(store, "alice", -3.0)
    publish(store, "bob", 2.0)
    assert constant(taken, "alice") == pytest.approx(float(1 / (1 + np.exp(-1.0))), abs=1e-6)
    assert taken.serving("bob") is None and len(taken) == 1
    assert constant(store, "alice") == pytest.approx(float(1 / (1 + np.exp(3.0))), abs=1e-6)


def test_a_head_set_rates_everyone_at_once(tmp_path) -> None:
    rng = np.random.default_rng(3)
    store = open_store(tmp_path)
    for user in ("alice", "bob", GLOBAL):
        store.publish(user=user, kind="mlp", weights=serialize_weights(mlp_tensors(rng, 5)), extractor_id=EXTRACTOR)
    store.publish(user="carol", kind="linear", weights=serialize_weights(linear_tensors(rng)), extractor_id=EXTRACTOR)
    live: HeadSet = store.live
    x = rng.normal(size=(3, D))
    everything = live.predict_all(x)
    for user in ("alice", "bob", "carol", GLOBAL):
        np.testing.assert_allclose(everything[:, live.column(user)], live.get(user).head.predict(x), atol=1e-6)
