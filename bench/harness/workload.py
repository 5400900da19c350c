"""The /getuserdata requests the benchmarks send: the scenarios (an
unfiltered page, a 2-tag filter, a ``-tag`` exclusion, ``rated=no``) and a
seeded list of requests for each, as HTTP parameters or the GetUserData RPC."""

from __future__ import annotations

import random
from dataclasses import dataclass

from tagrate_common.protos import library_pb2

from .dataset import DatasetShape

PAGE_SIZE = 60  # the API's default page size, which clients use


UNFILTERED, FILTERED, EXCLUDED, UNRATED = "unfiltered page", "2-tag filtered page", "-tag exclusion", "rated=no"
SCENARIOS = (UNFILTERED, FILTERED, EXCLUDED, UNRATED)


# -- the workload -----------------------------------------------------------------


@dataclass(frozen=True)
class UserDataQuery:
    """One /getuserdata request, which can also be sent as the GetUserData RPC."""

    user: str
    page: int
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    rated: str = "yes"

    def http_params(self) -> dict[str, str]:
        params = {"user": self.user, "page": str(self.page)}
        if self.include or self.exclude:
            params["filters"] = ",".join([*self.include, *(f"-{tag}" for tag in self.exclude)])
        if self.rated != "yes":
            params["rated"] = self.rated
        return params

    def rpc_request(self) -> library_pb2.GetUserDataRequest:
        """What the gateway sends for :meth:`http_params` (its defaults spelled out)."""
        rated = {"yes": library_pb2.RATED_FILTER_YES, "no": library_pb2.RATED_FILTER_NO}[self.rated]
        return library_pb2.GetUserDataRequest(
            user=self.user,
            include_tags=self.include,
            exclude_tags=self.exclude,
            sort=library_pb2.SORT_ORDER_DATE_DESC,
            rated=rated,
            page=self.page,
            limit=PAGE_SIZE,
        )


def workload(shape: DatasetShape, scenario: str, count: int, seed: int) -> list[UserDataQuery]:
    """``count`` requests of one scenario: random users, pages within the
    first 20 (or 3 for 2-tag filters, which match few images), filter tags
    drawn by popularity."""
    rng = random.Random(f"{shape.seed}:{scenario}:{seed}")
    per_user = shape.ratings_per_user()
    popularity = shape.tag_popularity().tolist()
    ranks = range(1, shape.tags + 1)
    queries = []
    for _ in range(count):
        index = rng.randrange(shape.users)
        user = shape.user_name(index)
        if scenario == UNFILTERED:
            pages = max(1, -(-per_user[index] // PAGE_SIZE))
            queries.append(UserDataQuery(user, rng.randint(1, min(20, pages))))
        elif scenario == FILTERED:
            first, second = rng.choices(ranks, popularity, k=1)[0], None
            while second is None or second == first:
                second = rng.choices(ranks, popularity, k=1)[0]
            tags = (shape.tag_name(first), shape.tag_name(second))
            queries.append(UserDataQuery(user, rng.randint(1, 3), include=tags))
        elif scenario == EXCLUDED:
            tag = shape.tag_name(rng.choices(ranks, popularity, k=1)[0])
            queries.append(UserDataQuery(user, rng.randint(1, 10), exclude=(tag,)))
        elif scenario == UNRATED:
            queries.append(UserDataQuery(user, rng.randint(1, 20), rated="no"))
        else:
            raise ValueError(f"unknown scenario {scenario!r}")
    return queries
