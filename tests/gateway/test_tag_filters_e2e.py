"""Every filter form (``tag``, ``-tag``, ``manual:``/``taught:``/``model:``,
``rating:``/``predicted:`` comparisons, ``~`` OR-groups, aliases and
implications) through the gateway, on SQLite and PostgreSQL, against a
reference computed in Python from the same random library: /getuserdata
(every page size, rated=yes/no/all, several sorts), /getimageneighbours
and /getratenext. Malformed filter items are 400s naming the item. The
album listings (/getmontageposts, /getmontagepost) give each image's tags
from every source, as /getimagetags?detail=true does."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import create_engine, text

from tagrate_common.dataset_stubs import DatasetStubs
from tagrate_common.errors import InvalidArgument
from tagrate_common.grpc_client import Backend
from tagrate_common.protos import common_pb2, images_pb2, tasteloop_pb2
from tagrate_common.userdata import TagFilter
from tagrate_dataset.db import normalise_url
from tests.imagefactory import make_image

from .answers import assert_error
from .stack import Stack, add_rating, start_stack, stored_name, tag_image

TAGS = ["cat", "dog", "bird", "sofa", "red", "blue"]
IMAGES = 36


@dataclass
class Library:
    names: list[str] = field(default_factory=list)
    model: dict[str, set[str]] = field(default_factory=dict)  # image -> model tags (above threshold)
    manual: dict[str, set[str]] = field(default_factory=dict)
    taught: dict[str, set[str]] = field(default_factory=dict)
    hidden: dict[str, set[str]] = field(default_factory=dict)
    ratings: dict[str, float] = field(default_factory=dict)  # alice's
    predicted: dict[str, float] = field(default_factory=dict)  # alice's serving model's

    # kitten implies cat; cat implies animal; kitty is an alias of cat
    implies = {"kitten": {"cat", "animal"}, "cat": {"animal"}}
    aliases = {"kitty": "cat"}

    def has(self, image: str, tag: str, source: str = "") -> bool:
        tag = self.aliases.get(tag, tag)
        wanted = {tag} | {t for t, implied in self.implies.items() if tag in implied}
        sources = {
            "model": self.model[image] - self.hidden[image],
            "manual": self.manual[image],
            "taught": self.taught[image],
        }
        pool = sources[source] if source else set().union(*sources.values())
        return bool(pool & wanted)


def _compare(value: float | None, op: str, bound: float) -> bool:
    if value is None:
        return False
    return {"<": value < bound, "<=": value <= bound, ">": value > bound, ">=": value >= bound, "=": value == bound}[op]


def reference(lib: Library, filters: str, rated: str) -> set[str]:
    keep = set(lib.names)
    if rated == "yes":
        keep &= set(lib.ratings)
    elif rated == "no":
        keep -= set(lib.ratings)
    group: list[tuple[str, str]] = []
    for raw in filters.split(","):
        item = raw.strip()
        negate = item.startswith("-")
        item = item.removeprefix("-")
        if item.startswith("~"):
            source, _, name = item[1:].rpartition(":")
            group.append((name, source))
            continue
        head, _, rest = item.partition(":")
        if head in ("rating", "predicted"):
            op = rest[:2] if rest[:2] in ("<=", ">=") else rest[:1]
            values = lib.ratings if head == "rating" else lib.predicted
            keep = {i for i in keep if _compare(values.get(i), op, float(rest[len(op) :]))}
            continue
        source, name = (head, rest) if head in ("manual", "taught", "model") else ("", item)
        keep = {i for i in keep if lib.has(i, name, source) != negate}
    if group:
        keep = {i for i in keep if any(lib.has(i, name, source) for name, source in group)}
    return keep


@pytest.fixture
def library(database_url, tmp_path) -> Iterator[tuple[Stack, Library]]:
    stack = start_stack(database_url, tmp_path / "data")
    rng = random.Random(7)
    lib = Library()
    try:
        with httpx.Client(base_url=stack.url, timeout=30) as http:
            for n in range(IMAGES):
                data = make_image("PNG", (24, 24), seed=300 + n)
                name = stored_name(data, "png")
                lib.names.append(name)
                rating = rng.choice([None, "0", "0.2", "0.5", "0.7", "1"])
                if rating is None:
                    assert http.post("/addimage", files={"image": ("x.png", data)}).status_code == 200
                else:
                    assert add_rating(http, data, "alice", rating).status_code == 200
                    lib.ratings[name] = float(rating)
                scores = {tag: rng.random() for tag in rng.sample(TAGS, 3)}
                tag_image(stack, name, scores)  # threshold 0.5
                lib.model[name] = {tag for tag, score in scores.items() if score >= 0.5}
                lib.manual[name], lib.taught[name], lib.hidden[name] = set(), set(), set()
            assert http.post("/tagimplications", json={"tag": "kitten", "implies": "cat"}).status_code == 200
            assert http.post("/tagimplications", json={"tag": "cat", "implies": "animal"}).status_code == 200
            assert http.post("/tagaliases", json={"alias": "kitty", "tag": "cat"}).status_code == 200
            for name in lib.names:
                if rng.random() < 0.3:
                    added = rng.sample([*TAGS, "kitten"], 2)
                    assert http.post("/addtags", data={"image": name, "tag": added}).status_code == 200
                    for tag in added:
                        lib.manual[name] |= {tag} | lib.implies.get(tag, set())
                if lib.model[name] and rng.random() < 0.2:
                    gone = sorted(lib.model[name])[0]
                    assert http.post("/removetags", data={"image": name, "tag": gone}).status_code == 200
                    lib.hidden[name].add(gone)
                    lib.manual[name].discard(gone)
        # Taught tags and predictions, written as the trainer and the scorer would.
        engine = create_engine(normalise_url(database_url))
        now = datetime.now(UTC)
        with engine.begin() as conn:
            sqlite = conn.dialect.name == "sqlite"

            def stamp(value: datetime) -> object:
                return value.replace(tzinfo=None).isoformat(sep=" ") if sqlite else value

            ids = dict(conn.execute(text("SELECT name, id FROM images")).all())
            tag_ids = dict(conn.execute(text("SELECT name, id FROM tags")).all())
            user = conn.execute(text("SELECT id FROM users WHERE name = 'alice'")).scalar_one()
            conn.execute(
                text(
                    "INSERT INTO trained_snapshots (subject, snapshot_id, ratings_count, model_version, trained_at) "
                    "VALUES ('alice', 's', 1, 'v1', :now)"
                ),
                {"now": stamp(now)},
            )
            for name in lib.names:
                for tag in ("dog", "bird"):
                    has = tag in lib.manual[name] or tag in lib.hidden[name]
                    if not has and rng.random() < 0.25:
                        conn.execute(
                            text("INSERT INTO taught_image_tags (image_id, tag_id, score) VALUES (:i, :t, 0.9)"),
                            {"i": ids[name], "t": tag_ids[tag]},
                        )
                        lib.taught[name].add(tag)
                if rng.random() < 0.8:
                    score = round(rng.random(), 3)
                    conn.execute(
                        text(
                            "INSERT INTO predictions (user_id, image_id, score, model_version, predicted_by, "
                            "scored_at) VALUES (:u, :i, :s, 'v1', 'personal', :now)"
                        ),
                        {"u": user, "i": ids[name], "s": score, "now": stamp(now - timedelta(seconds=1))},
                    )
                    lib.predicted[name] = score
        engine.dispose()
        yield stack, lib
    finally:
        stack.stop()


FILTERS = [
    "cat",
    "kitty",
    "animal",
    "-animal",
    "cat,-dog",
    "manual:cat",
    "model:cat",
    "taught:dog",
    "-manual:cat",
    "-taught:bird,red",
    "~dog,~bird",
    "~dog,~taught:bird,red",
    "~kitten,~blue,-red",
    "rating:>=0.5",
    "rating:<0.2",
    "rating:=1",
    "predicted:>0.5",
    "predicted:<=0.3,cat",
    "rating:>0,predicted:<0.9,-sofa",
    "sofa,blue",
    "nosuchtag",
    "-nosuchtag",
    "~nosuchtag,~dog",
]


def test_every_filter_form_matches_the_reference(library) -> None:
    stack, lib = library
    with httpx.Client(base_url=stack.url, timeout=60) as http:
        for filters in FILTERS:
            for rated in ("yes", "no", "all"):
                want = reference(lib, filters, rated)
                params = {"user": "alice", "filters": filters, "rated": rated, "sort": "name-asc"}
                whole = http.get("/getuserdata", params=params)
                assert whole.status_code == 200, (filters, whole.text)
                got = [i["image"] for i in whole.json()["images"]]
                assert got == sorted(want), (filters, rated)
                assert whole.json()["total"] == len(want)
                for sort in ("date-desc", "rating-desc", "predicted-desc"):
                    paged = []
                    for page in range(1, 20):
                        response = http.get("/getuserdata", params={**params, "sort": sort, "page": page, "limit": 7})
                        assert response.status_code == 200, response.text
                        assert response.json()["total"] == len(want), (filters, rated, sort)
                        items = response.json()["images"]
                        if not items:
                            break
                        paged += [i["image"] for i in items]
                    assert sorted(paged) == sorted(want) and len(paged) == len(want), (filters, rated, sort)
                # The neighbours of the first and the last image stand where the listing has them.
                for position in sorted({1, len(got)}) if got else []:
                    response = http.get(
                        "/getimageneighbours", params={**params, "image": got[position - 1], "sort": "name-asc"}
                    )
                    assert response.status_code == 200, (filters, response.text)
                    body = response.json()
                    assert body["position"] == position and body["max_image"] == len(got), (filters, rated)
                    if position > 1:
                        assert body["prev_image"]["image"] == got[position - 2]
                    if position < len(got):
                        assert body["next_image"]["image"] == got[position]
                outside = sorted(set(lib.names) - want)
                if outside:
                    response = http.get("/getimageneighbours", params={**params, "image": outside[0]})
                    assert_error(response, 404)


def test_malformed_filter_items_are_400s_naming_them(library) -> None:
    stack, _ = library
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        for item in [
            "rating:>x",
            "predicted:>=2",
            "rating:",
            "rating:~0.5",
            "predicted:>-0.1",
            "manual:",
            "taught: ",
            "model:-cat",
            "~",
            "-~cat",
            "-rating:>0.5",
            "~rating:>0.5",
        ]:
            for path, extra in [("/getuserdata", {}), ("/getimageneighbours", {"image": lib_first(http)})]:
                response = http.get(path, params={"user": "alice", "filters": f"cat,{item}", **extra})
                body = assert_error(response, 400, "invalid_filter")
                assert item.strip()[:8] in body["error"], (item, body)
        # Other colons are ordinary tag names.
        response = http.get("/getuserdata", params={"user": "alice", "filters": "re:zero,:d"})
        assert response.status_code == 200 and response.json()["total"] == 0


def test_rate_next_keeps_to_every_filter_form(library) -> None:
    """/getratenext's dataset call (the gateway splits ``filters`` as for
    /getuserdata and passes them on): its candidates are alice's unrated
    images with features, and a limit above their number lists them all."""
    stack, lib = library
    extractor = "test-extractor@1"
    client = Backend("dataset", stack.dataset_addr, DatasetStubs, 10, 64 << 20)
    try:
        for n, name in enumerate(lib.names):
            vector = common_pb2.FeatureVector(values=[float(n % 5), float(n % 3), 1.0, float(n)])
            request = images_pb2.PutImageFeaturesRequest(image=name, extractor_id=extractor, vector=vector)
            client.stub.images.PutImageFeatures(request, timeout=30)

        def rate_next(filters: str) -> set[str]:
            tags = TagFilter.parse(filters)
            request = tasteloop_pb2.GetRateNextRequest(
                user="alice", extractor_id=extractor, limit=100, include_tags=tags.include, exclude_tags=tags.exclude
            )
            return {item.image for item in client.stub.tasteloop.GetRateNext(request, timeout=30).images}

        assert rate_next("") == set(lib.names) - set(lib.ratings)
        for filters in FILTERS:
            assert rate_next(filters) == reference(lib, filters, "no"), filters
        with pytest.raises(InvalidArgument) as refused:
            rate_next("cat,rating:>x")
        assert refused.value.code == "invalid_filter" and "rating:>x" in refused.value.message
    finally:
        client.close()


def lib_first(http: httpx.Client) -> str:
    return http.get("/getuserdata", params={"user": "alice", "sort": "name-asc"}).json()["images"][0]["image"]


def effective_tags(lib: Library, image: str) -> list[str]:
    """The tags an image carries: the model's not removed, manual, taught."""
    return sorted((lib.model[image] - lib.hidden[image]) | lib.manual[image] | lib.taught[image])


def test_album_listings_show_every_source_of_each_images_tags(library) -> None:
    stack, lib = library
    with httpx.Client(base_url=stack.url, timeout=60) as http:
        response = http.post("/createmontagepost", data={"user": "alice", "filenames": ",".join(lib.names)})
        assert response.status_code == 200, response.text
        post_id = response.json()["montagepost_id"]
        [post] = http.get("/getmontageposts", params={"user": "alice"}).json()["montageposts"]
        one = http.get("/getmontagepost", params={"id": post_id}).json()["montagepost"]
        assert one == post and [i["filename"] for i in post["images"]] == lib.names
        # The library has images with hidden model tags, manual and taught ones.
        assert any(lib.hidden.values()) and any(lib.manual.values()) and any(lib.taught.values())
        for image in post["images"]:
            name = image["filename"]
            assert image["tags"] == effective_tags(lib, name), name
            detail = http.get("/getimagetags", params={"image": name, "detail": "true"}).json()["tags"]
            assert image["tags"] == sorted({t["tag"] for t in detail}), name  # a tag from two sources once
        # A page of a filtered listing: the same tags on the images it keeps.
        paged = http.get("/getmontageposts", params={"user": "alice", "page": 1, "filters": "~dog,~kitten"}).json()
        kept = paged["montageposts"][0]["images"]
        assert [i["filename"] for i in kept] == [n for n in lib.names if n in reference(lib, "~dog,~kitten", "all")]
        assert all(i["tags"] == effective_tags(lib, i["filename"]) for i in kept)
