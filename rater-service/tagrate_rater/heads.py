"""Serving rating heads: the live set of heads, one per subject (a user, or
the global head under the reserved name ``all``), stacked so that rating an
image for every user is one matrix multiply per head shape.

The weights format and a single head's validation and evaluation are the
shared library's (:mod:`tagrate_common.vision.rating_heads`), because the
trainer writes what the rater reads; where heads are kept is
:mod:`.store`'s business.

**Stacking**: every linear head is a column of one (D, K) matrix, and the
MLP heads of one hidden size share one (D, M*H) first-layer matrix.
A :class:`HeadSet` is immutable: publishing or reloading builds a new one and
swaps it in by reference, so a request that took the set before the swap
uses the old heads throughout, one that took it after the new ones, never a
mix.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import torch

from tagrate_common import validation
from tagrate_common.vision.rating_heads import RatingHead, as_tensor

GLOBAL = validation.ALL_USERS  # the global head's subject name
PERSONAL, GLOBAL_MODEL = "personal", "global"


@dataclass(frozen=True, eq=False)
class _MlpGroup:
    columns: torch.Tensor  # output columns of the heads in this group
    hidden: int
    w1: torch.Tensor  # (D, M*H): every head's first layer side by side
    b1: torch.Tensor  # (M*H,)
    w2: torch.Tensor  # (M, H)
    b2: torch.Tensor  # (M,)


class StackedHeads:
    """Many heads evaluated together: column ``i`` of :meth:`predict` is
    ``heads[i]``'s rating. Linear heads cost one (N, D) x (D, K) product in
    total; MLP heads one product per hidden size.

    The products run in torch, on the CPU thread pool the backbone already
    uses. numpy's OpenBLAS would bring a second pool whose threads keep
    spinning for a while after each product and take the cores from the
    next forward pass (measured: the backbone ran ~2x slower after every
    rating for 1,000 users on a 2-core machine)."""

    def __init__(self, heads: Sequence[RatingHead]) -> None:
        self.count = len(heads)
        linear = [i for i, head in enumerate(heads) if head.kind == "linear"]
        self._linear_columns = torch.tensor(linear, dtype=torch.long)
        self._all_linear = bool(linear) and len(linear) == self.count
        if linear:
            self._linear_w = as_tensor(np.stack([heads[i].folded["weight"] for i in linear], axis=1))
            self._linear_b = as_tensor(np.array([heads[i].folded["bias"] for i in linear]))
        by_hidden: dict[int, list[int]] = {}
        for i, head in enumerate(heads):
            if head.kind == "mlp":
                by_hidden.setdefault(head.hidden, []).append(i)
        self._groups = [
            _MlpGroup(
                columns=torch.tensor(members, dtype=torch.long),
                hidden=hidden,
                w1=as_tensor(np.concatenate([heads[i].folded["w1"] for i in members], axis=0).T),
                b1=as_tensor(np.concatenate([heads[i].folded["b1"] for i in members])),
                w2=as_tensor(np.stack([heads[i].folded["w2"] for i in members])),
                b2=as_tensor(np.array([heads[i].folded["b2"] for i in members])),
            )
            for hidden, members in sorted(by_hidden.items())
        ]

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Ratings, float32 (N, count), for feature vectors (N, D)."""
        with torch.inference_mode():
            x = as_tensor(features)
            if self._all_linear:  # the common case: no scatter into columns
                return torch.sigmoid(x @ self._linear_w + self._linear_b).numpy()
            logits = torch.empty((len(x), self.count), dtype=torch.float32)
            if len(self._linear_columns):
                logits[:, self._linear_columns] = x @ self._linear_w + self._linear_b
            for group in self._groups:
                hidden = torch.relu(x @ group.w1 + group.b1).reshape(len(x), len(group.columns), group.hidden)
                logits[:, group.columns] = torch.einsum("nmh,mh->nm", hidden, group.w2) + group.b2
            return torch.sigmoid(logits).numpy()


@dataclass(frozen=True)
class HeadInfo:
    """What the rater records about a head (and ListHeads reports)."""

    user: str  # GLOBAL for the global head
    extractor_id: str
    snapshot_id: str
    metrics: dict[str, float]
    created_at: datetime
    version: str
    kind: str

    @property
    def model(self) -> str:
        """``personal`` or ``global``, as /rate reports it."""
        return GLOBAL_MODEL if self.user == GLOBAL else PERSONAL

    def to_json(self) -> str:
        return json.dumps(
            {
                "user": self.user,
                "extractor_id": self.extractor_id,
                "snapshot_id": self.snapshot_id,
                "metrics": self.metrics,
                "created_at": self.created_at.isoformat(),
                "version": self.version,
                "kind": self.kind,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> HeadInfo:
        raw = json.loads(text)
        return cls(
            user=str(raw["user"]),
            extractor_id=str(raw["extractor_id"]),
            snapshot_id=str(raw["snapshot_id"]),
            metrics={str(k): float(v) for k, v in raw["metrics"].items()},
            created_at=datetime.fromisoformat(raw["created_at"]),
            version=str(raw["version"]),
            kind=str(raw["kind"]),
        )


@dataclass(frozen=True, eq=False)
class LoadedHead:
    info: HeadInfo
    head: RatingHead


class HeadSet:
    """An immutable set of live heads, at most one per subject, stacked for
    rating every user at once. Publishing builds a new set."""

    def __init__(self, heads: Iterable[LoadedHead] = ()) -> None:
        self._heads: dict[str, LoadedHead] = {loaded.info.user: loaded for loaded in heads}
        self._columns = {subject: i for i, subject in enumerate(self._heads)}
        self._stack = StackedHeads([loaded.head for loaded in self._heads.values()])

    def __len__(self) -> int:
        return len(self._heads)

    def get(self, subject: str) -> LoadedHead | None:
        return self._heads.get(subject)

    def serving(self, user: str) -> LoadedHead | None:
        """The head that rates ``user``: their own, else the global one."""
        return self._heads.get(user) or self._heads.get(GLOBAL)

    def infos(self) -> list[HeadInfo]:
        """Every live head's metadata, sorted by subject."""
        return [self._heads[subject].info for subject in sorted(self._heads)]

    def predict_all(self, features: np.ndarray) -> np.ndarray:
        """Every head's ratings at once, float32 (N, len(self)); see :meth:`column`."""
        return self._stack.predict(features)

    def column(self, subject: str) -> int:
        """The column of :meth:`predict_all` that holds ``subject``'s head."""
        return self._columns[subject]

    def score(self, subjects: Sequence[str], features: np.ndarray) -> list[tuple[str, LoadedHead, np.ndarray]]:
        """Each of ``subjects`` (a user, or ``all``) that a head serves (see
        :meth:`serving`), with that head and its ratings of ``features`` (N,
        D), float32 (N,). Only the heads serving them are stacked, each once,
        so scoring for one user costs one (N, D) x (D, 1) product however
        many heads are live."""
        served = [(subject, head) for subject in subjects if (head := self.serving(subject)) is not None]
        distinct = list({id(head): head for _, head in served}.values())
        if not distinct:
            return []
        column = {id(head): i for i, head in enumerate(distinct)}
        table = StackedHeads([head.head for head in distinct]).predict(features)
        return [(subject, head, table[:, column[id(head)]]) for subject, head in served]

    def with_heads(self, loaded: Iterable[LoadedHead]) -> HeadSet:
        """A new set with each of ``loaded`` replacing its subject's head."""
        heads = dict(self._heads)
        heads.update((head.info.user, head) for head in loaded)
        return HeadSet(heads.values())
