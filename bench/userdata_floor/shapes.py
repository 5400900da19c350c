"""The query shapes the floor benchmark measures, the requests of each, and
the targets: tagrate's p50 within RATIO x floor + SLACK_MS (the first
target of issue 28), and within STRICT_RATIO x floor + STRICT_SLACK_MS
(its last: the per-request fixed cost at concurrency 1)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from urllib.parse import urlencode

from ..harness.dataset import DatasetShape
from ..harness.workload import PAGE_SIZE

VERSION = "bench-floor-v1"
RATIO, SLACK_MS = 1.5, 3.0
STRICT_RATIO, STRICT_SLACK_MS = 1.25, 2.0


@dataclass(frozen=True)
class Request:
    user: str
    page: int
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    rated: str = "yes"
    sort: str = "date-desc"

    def target(self) -> str:
        params = {"user": self.user, "page": str(self.page), "limit": str(PAGE_SIZE)}
        if self.include or self.exclude:
            params["filters"] = ",".join([*self.include, *(f"-{t}" for t in self.exclude)])
        params["rated"], params["sort"] = self.rated, self.sort
        return f"/getuserdata?{urlencode(params)}"


@dataclass(frozen=True)
class Shape:
    name: str
    rated: str
    sort: str = "date-desc"
    include: int = 0  # how many included tags (drawn by popularity)
    exclude: int = 0
    pages: str = "first20"  # first20 | first3 | first10 | last | page1


SHAPES = (
    Shape("rated=yes page 1", "yes", pages="page1"),
    Shape("rated=yes + 2 tags", "yes", include=2, pages="first3"),
    Shape("rated=no", "no"),
    Shape("rated=no + 2 tags", "no", include=2, pages="first3"),
    Shape("rated=all", "all"),
    Shape("one -tag exclusion", "yes", exclude=1, pages="first10"),
    Shape("last page (deep)", "yes", pages="last"),
    Shape("rating-desc", "yes", sort="rating-desc"),
    Shape("predicted-desc rated=no", "no", sort="predicted-desc", pages="first10"),
    Shape("predicted-asc rated=yes", "yes", sort="predicted-asc", pages="first10"),
)


def requests_for(shape: Shape, dataset: DatasetShape, count: int) -> list[Request]:
    rng = random.Random(f"{dataset.seed}:floor:{shape.name}")
    per_user = dataset.ratings_per_user()
    popularity = dataset.tag_popularity().tolist()
    ranks = range(1, dataset.tags + 1)
    out = []
    for _ in range(count):
        index = rng.randrange(dataset.users)
        tags: list[str] = []
        while len(tags) < shape.include + shape.exclude:
            tag = dataset.tag_name(rng.choices(ranks, popularity, k=1)[0])
            if tag not in tags:
                tags.append(tag)
        include, exclude = tuple(tags[: shape.include]), tuple(tags[shape.include :])
        rows = per_user[index] if shape.rated == "yes" else dataset.images
        if shape.pages == "last":
            page = max(1, -(-rows // PAGE_SIZE))
        elif shape.pages == "page1":
            page = 1
        else:
            page = rng.randint(1, {"first20": 20, "first10": 10, "first3": 3}[shape.pages])
        out.append(Request(dataset.user_name(index), page, include, exclude, shape.rated, shape.sort))
    return out
