"""What the everyday-gallery UI tests (test_ui_everyday*.py) share: the
library they browse (stored once for the browser tests on the ``make run`` stack),
its users and the rank scale, and small API helpers."""

from __future__ import annotations

import httpx

from tests.ui.pages import wait_for

from .pages import distinct_image

RANKS = ["F", "D", "C", "B", "A", "S", "SS"]
UNRATED = 62  # with the rated ones: more than one page of 60 for a newcomer
RATER = "zoe"  # rates a few images; "yan" and "kim" never rate


def rank_of(rating: float) -> str:
    return RANKS[int(rating * 6 + 0.5)]  # JavaScript's Math.round for 0..6


def store_library(api: httpx.Client) -> dict[str, list[str]]:
    """62 images stored unrated (as `tagrate import` of a folder without
    ratings leaves them) and 12 rated by zoe, one of them a decimal (0.55,
    as the CLI imports a ratings CSV); every image tagged."""
    unrated, rated = [], []
    for i in range(UNRATED):
        data = distinct_image("JPEG", 7000 + i, (64 + i % 5 * 8, 64))
        response = api.post("/addimage", files={"image": (f"plain{i}.jpg", data)})
        assert response.status_code == 200, response.text
        unrated.append(response.json()["image"])
    for i in range(12):
        rating = 0.55 if i == 0 else round(i % 7 / 6, 6)
        data = distinct_image("PNG", 7500 + i, (72, 72))
        response = api.post(
            "/addrating", data={"user": RATER, "rating": str(rating)}, files={"image": (f"r{i}.png", data)}
        )
        assert response.status_code == 200, response.text
        rated.append(response.json()["image"])
    wait_for(lambda: api.get("/verifydatasets").json()["untagged_images"] == 0, what="the tagger")
    return {"unrated": unrated, "rated": rated}


def listing(api, user: str, **params) -> dict:
    response = api.get("/getuserdata", params={"user": user, **params})
    assert response.status_code == 200, response.text
    return response.json()


def names(reply: dict) -> list[str]:
    return [i["image"] for i in reply["images"]]
