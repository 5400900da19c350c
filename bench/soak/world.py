"""Setup before the soak's run (not measured): users rate photos by a
learnable taste, the first user's model is trained, the common tags of the
tagged photos become the run's tag filters."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..harness.photos import Photos
from .plan import BULK_IMAGES, SEED_RATINGS, SEED_TASTE, SORTS


@dataclass
class World:
    """What the run's requests draw from."""

    users: list[str]
    trained_user: str
    tags: list[str]
    photos: Photos
    sorts: list[str]  # the sorts this gateway accepts (predicted-* is a later part of the API)
    setup_seconds: dict[str, float] = field(default_factory=dict)


def _expect(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    if response.status_code != status:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path}: {response.status_code} {response.text}"
        )
    return response.json()


def _wait(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"setup: {what} did not happen within {timeout:.0f}s")
        time.sleep(0.25)


def setup(url: str, user_count: int, photos: Photos, seed: int) -> World:
    """Users with ratings, one trained personal model, the tags found (module doc)."""
    rng = random.Random(seed)
    users = [f"soak{i:02d}" for i in range(user_count)]
    timings = {}
    with httpx.Client(base_url=url, timeout=120) as http:
        start = time.perf_counter()
        stored = []
        for user in users:
            for i in range(SEED_RATINGS):
                # A taste a model can learn (the trainer publishes only a
                # model that beats predicting the mean): by source photo.
                base = i % len(photos.bases)
                rating = f"{min(1.0, max(0.0, SEED_TASTE[base // 2] + rng.uniform(-0.05, 0.05))):.3f}"
                files = {"image": (f"seed-{i}.jpg", photos.new(base), "image/jpeg")}
                answer = _expect(http.post("/addrating", data={"user": user, "rating": rating}, files=files))
                stored.append(answer["image"])
        timings["seed ratings"] = time.perf_counter() - start

        start = time.perf_counter()
        trained = users[0]
        _expect(http.get("/trainuser", params={"user": trained}), 202)

        def finished() -> bool:
            status = _expect(http.get("/trainerstatus"))["status"]
            if status["is_training"]:
                return False
            if status["state"] != "succeeded":
                raise RuntimeError(f"setup: training {trained} ended {status['state']}: {status['last_job']}")
            return True

        _wait(f"training {trained}'s model", finished, 300)
        pool = photos.pool[:BULK_IMAGES]
        _expect(http.post("/ratebulk", data={"user": trained}, files=[("images", ("p.jpg", p)) for p in pool]))
        timings["training"] = time.perf_counter() - start

        start = time.perf_counter()
        # Filters need tags: wait for the background work to tag the seed
        # photos; the most common tags first (filters by tags people see,
        # which match something).
        sample = stored[:: max(1, len(stored) // 16)]
        found: Counter[str] = Counter()

        def tagged() -> bool:
            found.clear()
            answers = [_expect(http.get("/getimagetags", params={"image": name})) for name in sample]
            for answer in answers:
                found.update(answer["tags"])
            return all(answer["tagged"] for answer in answers)

        _wait("tagging of the seed photos", tagged, 180)
        timings["background tagging"] = time.perf_counter() - start

        sorts = []
        for sort in SORTS:
            response = http.get("/getuserdata", params={"user": trained, "page": 1, "sort": sort})
            if response.status_code == 200:
                sorts.append(sort)
            elif response.status_code != 400:
                _expect(response)
    return World(users, trained, [tag for tag, _ in found.most_common(20)], photos, sorts, timings)
