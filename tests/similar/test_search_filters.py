"""Filtered /getsimilar (``similar/search.py`` over ``library/filtered.py``)
against a reference, on SQLite and PostgreSQL: for every filter kind
(any-source tags, ``~`` groups, exclusions, aliases, implications, manual
and hidden tags, one-source tags, ``rating:`` comparisons, unknown tags)
and every ``rated``, the results are exactly the nearest images (an exact
cosine ranking in numpy) among the images the listing itself holds
(GetUserData's every page, read from the source tables). Every path is
taken: any-source tag filters search within the cached bitsets (which
follow later writes); other filters filter the nearest few hundred images
in SQL, or search within the whole filtered set when too few pass."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import Engine, event, text
from sqlmodel import Session

from tagrate_common.errors import TagrateError
from tagrate_common.userdata import RatedFilter, SortOrder, TagFilter
from tagrate_dataset.bulk import bulk_load
from tagrate_dataset.db import Database, create_db_engine, migrate
from tagrate_dataset.library import filtered
from tagrate_dataset.library.listing import Paging, user_data_by_name
from tagrate_dataset.similar import search
from tagrate_dataset.similar.vectors import VectorIndex
from tagrate_dataset.tags import owned

T0 = datetime(2026, 2, 1, tzinfo=UTC)
N_IMAGES, DIM, EXTRACTOR = 300, 16, "x1"
TAGS = ["cat", "dog", "sky", "rare"]
USERS = {1: "alice", 2: "bob"}


def _name(i: int) -> str:
    return f"{i:064x}.png"


def _vectors() -> np.ndarray:
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(12, DIM))
    x = centres[rng.integers(0, 12, N_IMAGES)] + 0.6 * rng.normal(size=(N_IMAGES, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def library(database_url: str) -> Iterator[Engine]:
    engine = create_db_engine(database_url, pool_size=2, max_overflow=0)
    migrate(engine)
    rng = np.random.default_rng(9)
    share = {"cat": 0.6, "dog": 0.3, "sky": 0.15, "rare": 0.03}
    vectors = _vectors()
    bulk_load(
        engine,
        users=[{"id": k, "name": v} for k, v in USERS.items()],
        images=[
            {
                "id": i,
                "sha256": _name(i)[:64],
                "name": _name(i),
                "format": "PNG",
                "size_bytes": 1,
                "width": 1,
                "height": 1,
                "created_at": T0 + timedelta(minutes=i),
            }
            for i in range(1, N_IMAGES + 1)
        ],
        tags=[{"id": n, "name": t} for n, t in enumerate(TAGS, start=1)],
        tagger_models=[{"id": 1, "model_id": "tagger", "threshold": 0.5, "registered_at": T0}],
        ratings=[
            {"user_id": u, "image_id": i, "rating": (i % 10) / 10, "rated_at": T0}
            for i in range(1, N_IMAGES + 1)
            for u in USERS
            if (u == 1 and i % 3) or (u == 2 and i % 5 == 0)
        ],
        image_taggings=[{"image_id": i, "tagger_model_id": 1} for i in range(1, N_IMAGES + 1)],
        image_tags=[
            {"image_id": i, "tagger_model_id": 1, "tag_id": n, "score": 0.9 if rng.random() < share[t] else 0.2}
            for i in range(1, N_IMAGES + 1)
            for n, t in enumerate(TAGS, start=1)
        ],
        image_features=[
            {"image_id": i, "extractor_id": EXTRACTOR, "dim": DIM, "vector": vectors[i - 1].astype("<f4").tobytes()}
            for i in range(1, N_IMAGES + 1)
        ],
    )
    with Session(engine) as session:  # manual tags, a hidden model tag, an alias and an implication
        for i in range(1, 40, 4):
            owned.add_tags(session, _name(i), ["hoop"], "alice")
        for i in range(2, 60, 3):
            owned.remove_tags(session, _name(i), ["cat"], "alice")
        owned.add_alias(session, "kitty", "cat")
        owned.add_implication(session, "hoop", "sky")
        session.commit()
    at = T0 if engine.dialect.name != "sqlite" else T0.replace(tzinfo=None)
    with engine.begin() as conn:  # alice's predictions: the serving version's and stale ones
        conn.execute(
            text(
                "INSERT INTO predictions (user_id, image_id, score, model_version, predicted_by, scored_at) "
                "VALUES (1, :i, :score, :v, 'global', :at)"
            ),
            [
                {"i": i, "score": (i % 7) / 7, "v": "v0" if i % 9 == 0 else "v1", "at": at}
                for i in range(1, N_IMAGES, 2)
            ],
        )
        conn.execute(
            text(
                "INSERT INTO trained_snapshots (subject, snapshot_id, ratings_count, model_version, trained_at) "
                "VALUES ('all', 'snap', 0, 'v1', :at)"
            ),
            {"at": at},
        )
    yield engine
    engine.dispose()


FILTERS = [
    (("cat",), ()),
    (("kitty", "dog"), ()),
    (("cat",), ("dog",)),
    (("sky",), ()),  # with the manual hoop images, implied
    (("rare",), ()),  # rarer than the nearest images: the whole set is searched
    (("~rare", "~hoop"), ("dog",)),
    (("manual:hoop",), ()),
    (("model:cat",), ()),
    ((), ("cat",)),
    (("rating:>=0.5",), ()),
    (("cat", "predicted:>0.5"), ()),
    (("nosuch",), ()),
    (("cat",), ("nosuch",)),
]


Result = tuple[str, float | None, float | None]  # image, the user's rating, the current prediction


def reference(engine: Engine, user: str, tags: TagFilter, rated: RatedFilter, query: int, limit: int) -> list[Result]:
    """The listing's rows (every page, from the source tables), ranked by
    exact cosine to the query image."""
    with engine.connect() as conn:
        page = user_data_by_name(conn, user, tags, SortOrder.NAME_ASC, rated, Paging(), use_members=False)
    held = {int(row.image.removesuffix(".png"), 16): row for row in page.images}
    held.pop(query, None)
    vectors = _vectors()
    ranked = sorted(held, key=lambda i: -float(vectors[i - 1] @ vectors[query - 1]))
    return [(_name(i), held[i].rating, held[i].predicted) for i in ranked[:limit]]


def found(
    db: Database,
    index: VectorIndex,
    user: str,
    tags: TagFilter,
    rated: RatedFilter,
    query: int,
    limit: int,
    members: bool = True,
) -> list[Result]:
    q = search.Query(_name(query), None, "", user, limit, tags, rated, members)
    return [(r.image, r.rating, r.predicted) for r in search.similar(db, index, q)[1]]


def test_filtered_results_are_the_nearest_images_the_listing_holds(library: Engine, monkeypatch) -> None:
    db = Database(library)
    index = VectorIndex(db, max_vectors=1000, sync_seconds=0)
    searches = {"flags": 0, "ids": 0, "candidates": 0}  # each path is taken
    search_in = VectorIndex.search

    def counted(self, query, k, exclude=None, allowed=None, exact=False):
        kind = "candidates" if allowed is None else "flags" if allowed.dtype == bool else "ids"
        searches[kind] += 1
        return search_in(self, query, k, exclude, allowed, exact)

    monkeypatch.setattr(VectorIndex, "search", counted)
    compared, shown = 0, set()
    for include, exclude in FILTERS:
        tags = TagFilter(include, exclude)
        for user, rated in (("alice", RatedFilter.ALL), ("alice", RatedFilter.YES), ("bob", RatedFilter.NO)):
            for query, limit in ((7, 3), (150, 5), (299, 12)):
                expected = reference(library, user, tags, rated, query, limit)
                assert found(db, index, user, tags, rated, query, limit) == expected, (tags, user, rated, query)
                assert found(db, index, user, tags, rated, query, limit, members=False) == expected
                compared += bool(expected)
                shown |= {(rating is None, predicted is None) for _, rating, predicted in expected}
    # The bitsets answer the any-source tag filters; the rest filter candidates
    # in SQL, or search the whole filtered set when few of those pass.
    assert shown == {(True, True), (True, False), (False, True), (False, False)}  # ratings and predictions shown
    assert compared > 80 and searches["flags"] > 50 and searches["candidates"] > 100 and searches["ids"] > 10, searches
    # Without a user only the tags filter (no ratings, no predictions).
    expected = reference(library, "alice", TagFilter(("dog",)), RatedFilter.ALL, 10, 6)
    assert found(db, index, "", TagFilter(("dog",)), RatedFilter.ALL, 10, 6) == [
        (n, None, None) for n, _, _ in expected
    ]


def test_any_source_tags_are_answered_from_bitsets_that_follow_writes(library: Engine) -> None:
    db = Database(library)
    index = VectorIndex(db, max_vectors=1000, sync_seconds=0)
    tags = TagFilter(("rare",), ("dog",))
    with Session(library) as session:
        keeps = filtered.kept(session, 1, tags, RatedFilter.YES)
        assert keeps is not None and keeps.flags is not None and not keeps.queries
        assert filtered.kept(session, 1, TagFilter(("manual:hoop",)), RatedFilter.ALL).queries  # type: ignore[union-attr]
    before = found(db, index, "alice", tags, RatedFilter.YES, 20, 8)
    assert before == reference(library, "alice", tags, RatedFilter.YES, 20, 8)
    # The query's nearest rated images without 'rare' get it by hand; one 'rare' image loses it.
    nearest = [
        int(name.removesuffix(".png"), 16)
        for name, _, _ in found(db, index, "alice", TagFilter(), RatedFilter.YES, 20, 4)
    ]
    with Session(library) as session:
        for i in nearest:
            owned.add_tags(session, _name(i), ["rare"], "alice")
        owned.remove_tags(session, before[0][0], ["rare"], "alice")
        session.commit()
    after = found(db, index, "alice", tags, RatedFilter.YES, 20, 8)
    assert after == reference(library, "alice", tags, RatedFilter.YES, 20, 8)
    assert after != before and before[0][0] not in {name for name, _, _ in after}


def test_the_search_reads_what_it_needs_in_one_statement(library: Engine) -> None:
    """The user, the query image, its newest vector and the filter's
    preamble are one statement before the search and the results one after
    (``search.similar``); each missing piece is still told apart."""
    db = Database(library)
    index = VectorIndex(db, max_vectors=1000, sync_seconds=3600)
    tags = TagFilter(("cat",), ("dog",))
    expected = reference(library, "alice", tags, RatedFilter.ALL, 7, 5)
    assert found(db, index, "alice", tags, RatedFilter.ALL, 7, 5) == expected  # warm: the index and bitsets
    statements: list[str] = []

    def note(conn, cursor, statement, *args) -> None:
        statements.append(statement)

    event.listen(library, "before_cursor_execute", note)
    assert found(db, index, "alice", tags, RatedFilter.ALL, 7, 5) == expected
    event.remove(library, "before_cursor_execute", note)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 2, statements
    # By vector: the same answers as by the image (which it may hold itself).
    vector = _vectors()[6]
    by_vector = search.similar(db, index, search.Query("", vector, EXTRACTOR, "alice", 6, tags, RatedFilter.ALL))[1]
    assert [(r.image, r.rating, r.predicted) for r in by_vector if r.image != _name(7)][:5] == expected
    plain = search.similar(db, index, search.Query("", vector, EXTRACTOR, "", 3, TagFilter(), RatedFilter.ALL))[1]
    assert all(r.rating is None and r.predicted is None for r in plain) and len(plain) == 3
    with Session(library) as session:  # an image without a vector yet
        session.exec(text("DELETE FROM image_features WHERE image_id = 9"))  # type: ignore[call-overload]
        session.commit()
    for user, image, rated, code in (
        ("nobody", _name(7), RatedFilter.ALL, "user_not_found"),
        ("alice", _name(N_IMAGES + 1), RatedFilter.ALL, "image_not_found"),
        ("nobody", _name(N_IMAGES + 1), RatedFilter.ALL, "user_not_found"),  # the user is told first
        ("alice", _name(9), RatedFilter.YES, "features_pending"),
        ("", _name(7), RatedFilter.NO, "invalid_rated"),
    ):
        with pytest.raises(TagrateError) as raised:
            search.similar(db, index, search.Query(image, None, "", user, 5, tags, rated))
        assert raised.value.code == code, (user, image, rated)
