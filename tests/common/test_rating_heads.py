"""The rating head weights format shared by the trainer and the rater: its
validation, folded normalisation, the documented formula, and that loading
never runs pickled code."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch

from tagrate_common.errors import InvalidArgument
from tagrate_common.vision.rating_heads import RatingHead, deserialize_weights, serialize_weights

D = 16


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
