"""The soak run's fixed choices: the endpoints and their default mix, the
seed ratings, the pages and sorts, the checkpoints; and ``--mix`` parsed."""

from __future__ import annotations

import argparse

from tests.support import REPO_ROOT

RESULTS_DIR = REPO_ROOT / "bench" / "results"
ENDPOINTS = ("getuserdata", "addrating", "tag", "ratebulk")
DEFAULT_MIX = "getuserdata=50,addrating=20,tag=15,ratebulk=15"
SEED_RATINGS = 12  # per user before the run: above the trainer's default minimum of 10
SEED_TASTE = (0.9, 0.1, 0.6, 0.3)  # the seed ratings of the cat, the coffee, the astronaut, the rocket
BULK_IMAGES = 4


PAGE_LIMIT = 60
SORTS = ("date-desc", "date-asc", "rating-desc", "rating-asc", "name-asc", "predicted-desc")
CHECKPOINTS = 5  # the run is reported in fifths


def parse_mix(text: str) -> dict[str, float]:
    mix = {}
    for item in text.split(","):
        name, _, weight = item.partition("=")
        name = name.strip().lstrip("/")
        if name not in ENDPOINTS:
            raise argparse.ArgumentTypeError(f"unknown endpoint {name!r} in --mix (known: {', '.join(ENDPOINTS)})")
        try:
            mix[name] = float(weight)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--mix weight of {name} is not a number: {weight!r}") from None
        if mix[name] < 0:
            raise argparse.ArgumentTypeError(f"--mix weight of {name} is negative")
    if not any(mix.values()):
        raise argparse.ArgumentTypeError("--mix gives every endpoint weight 0")
    return mix
