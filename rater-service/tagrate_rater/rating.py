"""Predicted ratings: which head serves whom, applied to feature vectors.
Free of gRPC; the servicer translates."""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np

from tagrate_common import validation
from tagrate_common.errors import Conflict
from tagrate_common.vision.pipeline import ImageFiles

from .extractor import FeatureExtractor
from .heads import HeadSet, LoadedHead
from .store import HeadStore
from .users import UserDirectory


class UserRatings(NamedTuple):
    """One user's predicted ratings, one per image in request order. (A
    tuple: ``all`` makes one per user, and a tuple is the cheapest to make.)"""

    user: str
    model: str  # "personal" or "global"
    model_version: str
    ratings: list[float]


def no_model(user: str | None = None) -> Conflict:
    who = f"for user '{user}'" if user else "for any user"
    return Conflict(
        f"no rating model exists yet {who}; train one with /trainuser (a global model covers users without their own)",
        "no_model",
    )


class Rater:
    """Rates images for one user or every user.

    The live head set is read once per call, so a head published while the
    call runs is used by the next call, never half by this one. Cheap checks
    (the files' headers, whether the user exists and has a head) come before
    the backbone runs."""

    def __init__(self, extractor: FeatureExtractor, heads: HeadStore, users: UserDirectory) -> None:
        self.extractor = extractor
        self.heads = heads
        self.users = users

    def rate(self, files: ImageFiles, user: str, timeout: float | None = None) -> list[UserRatings]:
        """Ratings for ``user`` (a list of one), or for ``all``: every user
        with a usable head, sorted by name. NotFound for an unknown user;
        Conflict when no head can serve the user (for ``all``: when there
        are no heads at all)."""
        subject = validation.user_name(user, allow_all=True)
        self.extractor.check_files(files)
        deadline = None if timeout is None else time.monotonic() + timeout
        live = self.heads.live
        if subject == validation.ALL_USERS:
            if not len(live):
                raise no_model()
            served = [(name, head) for name in self.users.names(_left(deadline)) if (head := live.serving(name))]
        else:
            self.users.require(subject, _left(deadline))
            head = live.serving(subject)
            if head is None:
                raise no_model(subject)
            served = [(subject, head)]
        if not served:
            return []
        features = self.extractor.features(files, _left(deadline))
        return _apply(live, served, features)


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


def _apply(live: HeadSet, served: list[tuple[str, LoadedHead]], features: np.ndarray) -> list[UserRatings]:
    """Each served user's ratings from the head chosen for them."""
    if len(served) == 1:
        [(name, loaded)] = served
        return [UserRatings(name, loaded.info.model, loaded.info.version, loaded.head.predict(features).tolist())]
    # Every head in one pass, whoever it serves; users without their own head
    # share the global head's column. One tolist() for the whole table: per
    # user float conversions would cost more than the matrix product.
    by_head = live.predict_all(features).T.tolist()
    return [
        UserRatings(name, loaded.info.model, loaded.info.version, by_head[live.column(loaded.info.user)])
        for name, loaded in served
    ]
