"""The rating head weights format: the contract between the trainer, which
fits heads, and the rater, which serves them (PublishHead's ``weights``).

A head is a small model on a feature vector. The weights are the bytes of
``torch.save`` of a dict of float tensors (:func:`serialize_weights` writes
them, :func:`deserialize_weights` reads them back). ``D`` is the feature
extractor's vector size, ``H`` a hidden size (1-1024)::

    kind "linear": mean (D,), std (D,), weight (D,), bias ()
        rating = sigmoid(weight . z + bias)
    kind "mlp":    mean (D,), std (D,), w1 (H, D), b1 (H,), w2 (H,), b2 ()
        rating = sigmoid(w2 . relu(w1 z + b1) + b2)

    where z = (x - mean) / std, the normalised feature vector.

``mean`` and ``std`` may be left out (no normalisation). The sigmoid keeps
every prediction inside the rating range [0, 1]; a trainer fits the heads
with it. :class:`RatingHead` validates a head against this format and folds
the normalisation into the first layer, so evaluating it costs one matrix
product per layer; its :meth:`RatingHead.predict` is what the rater serves
and what the trainer's figures are computed with.

Lives under :mod:`tagrate_common.vision` because the format is torch's.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tagrate_common.errors import InvalidArgument

HEAD_KINDS = ("linear", "mlp")
MAX_HIDDEN = 1024

_REQUIRED = {"linear": ("weight", "bias"), "mlp": ("w1", "b1", "w2", "b2")}
_OPTIONAL = ("mean", "std")


def serialize_weights(tensors: Mapping[str, torch.Tensor | np.ndarray | float]) -> bytes:
    """PublishHead's ``weights``: ``torch.save`` bytes of ``tensors`` as
    float32 CPU tensors (see the module docstring for the names per kind)."""
    converted = {
        name: torch.as_tensor(np.asarray(value, dtype=np.float32) if not isinstance(value, torch.Tensor) else value)
        .detach()
        .to("cpu", torch.float32)
        .contiguous()
        for name, value in tensors.items()
    }
    buffer = io.BytesIO()
    torch.save(converted, buffer)
    return buffer.getvalue()


def load_tensors(source: Any, what: str) -> Any:
    """``torch.load`` of a file or file-like ``source`` with
    ``weights_only=True``: plain containers and tensors only, never arbitrary
    pickled objects. InvalidArgument, naming ``what``, for anything else."""
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a bad file
        raise InvalidArgument(
            f"{what} is not a torch.save file of tensors: {str(exc)[:200]}", "invalid_weights"
        ) from None


def deserialize_weights(data: bytes) -> dict[str, np.ndarray]:
    """The tensors in PublishHead ``weights`` bytes, as float64 arrays.
    InvalidArgument for anything but a dict of named float tensors."""
    if not data:
        raise InvalidArgument("'weights' is empty; send the head's tensors saved with torch.save", "invalid_weights")
    loaded = load_tensors(io.BytesIO(data), "'weights'")
    return float_arrays(loaded, "'weights'")


def float_arrays(loaded: Any, what: str) -> dict[str, np.ndarray]:
    """``loaded`` (what :func:`load_tensors` returned) as float64 arrays by
    name; InvalidArgument, naming ``what``, unless it is a dict of named
    floating-point tensors."""
    if not isinstance(loaded, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()
    ):
        raise InvalidArgument(f"{what} must hold a dict of named tensors", "invalid_weights")
    arrays = {}
    for name, tensor in loaded.items():
        if not tensor.is_floating_point():
            raise InvalidArgument(f"{what}: tensor '{name}' must hold floating-point numbers", "invalid_weights")
        arrays[name] = tensor.detach().to(torch.float64).numpy()
    return arrays


def as_tensor(array: np.ndarray) -> torch.Tensor:
    """A float32 torch view of ``array`` (a copy only when it is not already
    contiguous float32)."""
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


@dataclass(frozen=True, eq=False)
class RatingHead:
    """One validated head with its normalisation folded in.

    ``tensors`` are the weights as published (float32, canonical shapes),
    which is what the rater's store writes; the folded arrays are what
    serves."""

    kind: str
    dimensions: int
    tensors: dict[str, np.ndarray]
    # linear: weight (D,), bias; mlp: w1 (H, D), b1 (H,), w2 (H,), b2
    folded: dict[str, np.ndarray]

    @property
    def hidden(self) -> int:
        """The hidden size of an MLP head; 0 for a linear one."""
        return len(self.folded["b1"]) if self.kind == "mlp" else 0

    @classmethod
    def from_tensors(cls, kind: str, arrays: Mapping[str, np.ndarray], dimensions: int) -> RatingHead:
        """Validates names, shapes and values against ``kind`` and the
        extractor's vector size; InvalidArgument says what is wrong."""
        if kind not in HEAD_KINDS:
            raise InvalidArgument(f"'kind' must be one of {', '.join(HEAD_KINDS)}, got {kind[:40]!r}", "invalid_kind")
        required = _REQUIRED[kind]
        unknown = sorted(set(arrays) - set(required) - set(_OPTIONAL))
        missing = [name for name in required if name not in arrays]
        if unknown or missing:
            raise InvalidArgument(
                f"a {kind} head has the tensors {', '.join(required + _OPTIONAL)} (mean and std optional); "
                + (f"missing {', '.join(missing)}" if missing else "")
                + ("; " if missing and unknown else "")
                + (f"unexpected {', '.join(unknown[:5])}" if unknown else ""),
                "invalid_weights",
            )
        for name, array in arrays.items():
            if not np.isfinite(array).all():
                raise InvalidArgument(f"tensor '{name}' holds NaN or infinite values", "invalid_weights")

        def vector(name: str, length: int) -> np.ndarray:
            array = np.asarray(arrays[name], dtype=np.float64)
            if array.size != length or array.ndim > 2 or (array.ndim == 2 and 1 not in array.shape):
                raise InvalidArgument(
                    f"tensor '{name}' must have shape ({length},), got {tuple(array.shape)}"
                    + (f"; this rater's feature vectors have {dimensions} dimensions" if length == dimensions else ""),
                    "invalid_weights",
                )
            return array.reshape(length)

        def scalar(name: str) -> float:
            array = np.asarray(arrays[name], dtype=np.float64)
            if array.size != 1:
                raise InvalidArgument(
                    f"tensor '{name}' must be a single number, got shape {array.shape}", "invalid_weights"
                )
            return float(array.reshape(()))

        mean = vector("mean", dimensions) if "mean" in arrays else np.zeros(dimensions)
        std = vector("std", dimensions) if "std" in arrays else np.ones(dimensions)
        if (std <= 0).any():
            raise InvalidArgument("tensor 'std' must be positive everywhere", "invalid_weights")
        canonical: dict[str, np.ndarray] = {}
        if "mean" in arrays:
            canonical.update(mean=mean, std=std)
        if kind == "linear":
            weight, bias = vector("weight", dimensions), scalar("bias")
            canonical.update(weight=weight, bias=np.array(bias))
            # w . (x - m) / s + b  ==  (w / s) . x + (b - w . (m / s))
            folded = {"weight": weight / std, "bias": np.array(bias - weight @ (mean / std))}
        else:
            w1 = np.asarray(arrays["w1"], dtype=np.float64)
            if w1.ndim != 2 or w1.shape[1] != dimensions or not 1 <= w1.shape[0] <= MAX_HIDDEN:
                raise InvalidArgument(
                    f"tensor 'w1' must have shape (H, {dimensions}) with 1 <= H <= {MAX_HIDDEN}, got "
                    f"{tuple(w1.shape)}; this rater's feature vectors have {dimensions} dimensions",
                    "invalid_weights",
                )
            hidden = w1.shape[0]
            b1, w2, b2 = vector("b1", hidden), vector("w2", hidden), scalar("b2")
            canonical.update(w1=w1, b1=b1, w2=w2, b2=np.array(b2))
            folded = {"w1": w1 / std, "b1": b1 - (w1 / std) @ mean, "w2": w2, "b2": np.array(b2)}
        return cls(
            kind,
            dimensions,
            {name: a.astype(np.float32) for name, a in canonical.items()},
            {name: a.astype(np.float32) for name, a in folded.items()},
        )

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Ratings in [0, 1], float32 (N,), for feature vectors (N, D).

        In torch, on the CPU thread pool the backbone already uses: numpy's
        OpenBLAS would bring a second pool whose spinning threads take the
        cores from the next forward pass (see the rater's StackedHeads)."""
        f = self.folded
        with torch.inference_mode():
            x = as_tensor(features)
            if self.kind == "linear":
                logits = x @ as_tensor(f["weight"]) + as_tensor(f["bias"])
            else:
                hidden = torch.relu(x @ as_tensor(f["w1"]).T + as_tensor(f["b1"]))
                logits = hidden @ as_tensor(f["w2"]) + as_tensor(f["b2"])
            return torch.sigmoid(logits).numpy()
