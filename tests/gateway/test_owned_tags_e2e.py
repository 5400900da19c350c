"""Tags people own, end to end: real HTTP to the gateway, real gRPC to the
dataset service, on SQLite and PostgreSQL, with real image files. Manual
tags (form and JSON), removals that stick through re-tagging, the adding
user recorded, aliases and implications on write, cycles and chains
refused, bad tag names as 400s naming them, and who may do what."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import create_engine, text

from tagrate_dataset.db import normalise_url
from tests.imagefactory import make_image

from .answers import assert_error
from .stack import Stack, add_rating, seed, start_stack, stored_name, tag_image

ADMIN_TOKEN = "admin-bootstrap-token-for-the-owned-tags-tests-012345"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def stack(database_url, tmp_path) -> Iterator[Stack]:
    stack = seed(start_stack(database_url, tmp_path / "data"))
    yield stack
    stack.stop()


def tags_of(http: httpx.Client, image: str) -> list[tuple[str, str]]:
    response = http.get("/getimagetags", params={"image": image, "detail": "true"})
    assert response.status_code == 200, response.text
    return [(tag["tag"], tag["source"]) for tag in response.json()["tags"]]


def test_manual_tags_survive_retagging_and_removed_model_tags_stay_removed(stack) -> None:
    jpeg = stack.names["jpeg"]
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        added = http.post("/addtags", data={"image": jpeg, "tag": ["Fluffy Tail", "cat"]})
        assert added.status_code == 200, added.text
        body = added.json()
        assert body["success"] is True and body["image"] == jpeg
        # manual first (by name), then the model's by score
        assert [(t["tag"], t["source"], t["score"]) for t in body["tags"]] == [
            ("cat", "manual", None),
            ("fluffy_tail", "manual", None),
            ("sofa", "model", 0.75),
            ("indoor", "model", 0.61),
        ]
        removed = http.post("/removetags", json={"image": jpeg, "tags": ["sofa", "fluffy_tail"]})
        assert removed.status_code == 200, removed.text
        assert [(t["tag"], t["source"]) for t in removed.json()["tags"]] == [("cat", "manual"), ("indoor", "model")]
        # The tagger runs again: the manual tag stays, the removed model tag stays off.
        tag_image(stack, jpeg, {"cat": 0.9, "sofa": 0.8, "indoor": 0.7})
        assert tags_of(http, jpeg) == [("cat", "manual"), ("indoor", "model")]
        # The original shape is unchanged without detail.
        plain = http.get("/getimagetags", params={"image": jpeg}).json()
        assert set(plain) >= {"image", "tagged", "tags"}
        # Adding a removed tag by hand shows it again, as manual.
        http.post("/addtags", data={"image": jpeg, "tag": "sofa"})
        assert tags_of(http, jpeg) == [("cat", "manual"), ("sofa", "manual"), ("indoor", "model")]
        # Filters see manual tags, and not removed ones.
        listing = http.get("/getuserdata", params={"user": "alice", "filters": "fluffy_tail"})
        assert listing.json()["total"] == 0
        listing = http.get("/getuserdata", params={"user": "alice", "filters": "sofa,cat"})
        assert [i["image"] for i in listing.json()["images"]] == [jpeg]


def test_bad_tag_names_and_unknown_images(stack) -> None:
    jpeg = stack.names["jpeg"]
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        for bad in ["-cat", "~cat", "a,b", "manual:cat", "rating:x", "x" * 65, "  ", "tab\there"]:
            body = assert_error(http.post("/addtags", json={"image": jpeg, "tags": ["ok", bad]}), 400, "invalid_tag")
            if bad.strip():
                assert repr(bad[:20])[1:-1][:10] in body["error"] or "tag" in body["error"]
        assert_error(http.post("/addtags", data={"image": jpeg}), 400)
        assert_error(http.post("/addtags", data={"tag": "cat"}), 400)
        missing = stored_name(b"nothing", "png")
        assert_error(http.post("/addtags", data={"image": missing, "tag": "cat"}), 404)
        ok = http.post("/addtags", json={"image": jpeg, "tags": ["re:zero", ":d"]})
        assert ok.status_code == 200, ok.text
        assert ("re:zero", "manual") in tags_of(http, jpeg)


def test_aliases_and_implications_on_write_and_in_filters(stack) -> None:
    jpeg, png = stack.names["jpeg"], stack.names["png"]
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        assert http.post("/tagaliases", json={"alias": "kitty", "tag": "cat"}).json() == {
            "alias": "kitty",
            "tag": "cat",
        }
        assert http.post("/tagimplications", json={"tag": "kitten", "implies": "cat"}).status_code == 200
        assert http.post("/tagimplications", data={"tag": "cat", "implies": "animal"}).status_code == 200
        # A cycle, directly or through the closure, and an alias chain: 409.
        assert_error(http.post("/tagimplications", json={"tag": "animal", "implies": "kitten"}), 409)
        assert_error(http.post("/tagimplications", json={"tag": "animal", "implies": "kitty"}), 409)  # kitty is cat
        assert_error(http.post("/tagaliases", json={"alias": "moggy", "tag": "kitty"}), 409)
        assert_error(http.post("/tagaliases", json={"alias": "cat", "tag": "feline"}), 409)  # cat is in use
        assert_error(http.post("/tagaliases", json={"alias": "sofa", "tag": "couch"}), 409)  # a model tag
        assert http.get("/tagaliases").json() == {"aliases": [{"alias": "kitty", "tag": "cat"}]}
        assert http.get("/tagimplications").json() == {
            "implications": [{"tag": "cat", "implies": "animal"}, {"tag": "kitten", "implies": "cat"}]
        }
        # Adding kitten adds cat and animal; adding the alias adds its tag.
        http.post("/addtags", data={"image": png, "tag": "kitten"})
        assert tags_of(http, png) == [("animal", "manual"), ("cat", "manual"), ("kitten", "manual")]
        http.post("/addtags", data={"image": jpeg, "tag": "kitty"})
        assert ("cat", "manual") in tags_of(http, jpeg) and ("animal", "manual") in tags_of(http, jpeg)
        # A filter on the alias acts on its tag; removing by the alias too.
        names = lambda filters: sorted(  # noqa: E731
            i["image"] for i in http.get("/getuserdata", params={"user": "alice", "filters": filters}).json()["images"]
        )
        assert names("kitty") == sorted([jpeg, png])
        assert names("-kitten") == [jpeg]
        http.post("/removetags", data={"image": jpeg, "tag": "kitty"})
        assert ("cat", "manual") not in tags_of(http, jpeg)
        assert names("kitty") == [png]
        # Deleting the rules.
        assert http.delete("/tagaliases/kitty").status_code == 200
        assert_error(http.delete("/tagaliases/kitty"), 404)
        assert http.delete("/tagimplications/cat/animal").status_code == 200
        assert_error(http.delete("/tagimplications/cat/animal"), 404)
        assert http.get("/tagimplications").json()["implications"] == [{"tag": "kitten", "implies": "cat"}]


def test_an_implication_on_a_model_tag_matches_in_filters(stack) -> None:
    jpeg, png = stack.names["jpeg"], stack.names["png"]
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        # The model tagged the JPEG "sofa"; sofa implies furniture.
        assert http.post("/tagimplications", json={"tag": "sofa", "implies": "furniture"}).status_code == 200
        http.post("/addtags", data={"image": png, "tag": "furniture"})

        def names(filters: str) -> list[str]:
            response = http.get("/getuserdata", params={"user": "alice", "filters": filters, "sort": "name-asc"})
            assert response.status_code == 200, response.text
            return [i["image"] for i in response.json()["images"]]

        assert names("furniture") == sorted([jpeg, png])
        assert names("-furniture") == []
        assert names("model:furniture") == [jpeg]  # the model's sofa implies it
        assert names("manual:furniture") == [png]
        assert names("model:sofa") == [jpeg]
        http.post("/removetags", data={"image": jpeg, "tag": "sofa"})
        assert names("furniture") == [png]


@pytest.fixture
def auth_stack(database_url, tmp_path) -> Iterator[tuple[Stack, dict[str, str], str]]:
    stack = start_stack(database_url, tmp_path / "data", auth="on", admin_token=ADMIN_TOKEN, auth_cache_seconds=0)
    try:
        with httpx.Client(base_url=stack.url, timeout=30, headers=ADMIN) as http:
            tokens = {}
            for n, user in enumerate(("alice", "bob")):
                assert add_rating(http, make_image("JPEG", seed=80 + n), user, "0.5").status_code == 200
                tokens[user] = http.post("/tokens", json={"user": user}).json()["token"]
        yield stack, tokens, database_url
    finally:
        stack.stop()


def test_a_user_token_tags_as_itself_and_rules_are_an_admins(auth_stack) -> None:
    stack, tokens, database_url = auth_stack
    image = stored_name(make_image("JPEG", seed=80), "jpg")
    alice = {"Authorization": f"Bearer {tokens['alice']}"}
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        assert_error(http.post("/addtags", data={"image": image, "tag": "cat"}), 401)
        assert http.post("/addtags", data={"image": image, "tag": "cat"}, headers=alice).status_code == 200
        assert http.post("/addtags", data={"image": image, "tag": "dog"}, headers=ADMIN).status_code == 200
        assert_error(http.post("/tagaliases", json={"alias": "kitty", "tag": "cat"}, headers=alice), 403)
        assert_error(http.post("/tagimplications", json={"tag": "cat", "implies": "animal"}, headers=alice), 403)
        assert http.get("/tagaliases", headers=alice).status_code == 200
        assert http.get("/taughttags", headers=alice).json() == []
    engine = create_engine(normalise_url(database_url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT t.name, m.added_by FROM manual_tags m JOIN tags t ON t.id = m.tag_id ORDER BY t.name")
            ).all()
    finally:
        engine.dispose()
    assert [tuple(row) for row in rows] == [("cat", "alice"), ("dog", None)]


def test_gettags_lists_manual_tags_and_not_removed_ones(stack) -> None:
    """/gettags counts the tags filters see: manual ones too, an image with a
    tag from two sources once, a removed model tag not at all; ``prefix``,
    ``contains``, ``user`` and ``limit`` apply to every source."""
    jpeg, png, webp = stack.names["jpeg"], stack.names["png"], stack.names["webp"]
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        before = http.get("/gettags").json()
        assert before["tags"] == ["cat", "indoor", "sofa"] and before["counts"] == [1, 1, 1]
        http.post("/addtags", data={"image": png, "tag": "cat"})
        http.post("/addtags", data={"image": webp, "tag": "Cat Ears"})
        http.post("/addtags", data={"image": jpeg, "tag": "sofa"})  # also the model's
        http.post("/removetags", data={"image": jpeg, "tag": "indoor"})  # a model tag, removed
        after = http.get("/gettags").json()
        assert after == {"model": before["model"], "tags": ["cat", "cat_ears", "sofa"], "counts": [2, 1, 1]}
        assert http.get("/gettags", params={"prefix": "CAT"}).json()["tags"] == ["cat", "cat_ears"]
        assert http.get("/gettags", params={"contains": "ears"}).json()["counts"] == [1]
        assert http.get("/gettags", params={"contains": "e", "prefix": "s"}).json()["tags"] == []
        assert http.get("/gettags", params={"prefix": "cat", "limit": "1"}).json()["counts"] == [2]
        bob = http.get("/gettags", params={"user": "bob"}).json()
        assert (bob["tags"], bob["counts"]) == (["cat_ears"], [1])
        alice = http.get("/gettags", params={"user": "alice"}).json()
        assert (alice["tags"], alice["counts"]) == (["cat", "sofa"], [2, 1])
        # A manual tag removed again leaves the list.
        http.post("/removetags", data={"image": webp, "tag": "cat_ears"})
        assert http.get("/gettags").json()["tags"] == ["cat", "sofa"]
