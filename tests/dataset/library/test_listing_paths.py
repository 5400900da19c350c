"""The listing's fast paths (queries.user_data_by_name, what GetUserData
runs) against straightforward references, on SQLite and PostgreSQL: every
page of every order walked to the end equals the whole listing computed in
Python (so pages read from the other end, rated=all merged from two
streams, predicted orders split into scored and unscored rows, and the
one-statement first pages all agree with it), deep pages equal the naive
``ORDER BY ... LIMIT ... OFFSET`` statement, and totals (rated=no by
subtraction) equal naive counts. The data is full of ties: creation
times, rating times, ratings and scores shared by many images, and names
that do not follow ids."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, event, text
from sqlmodel import Session

from tagrate_common.errors import NotFound
from tagrate_common.userdata import RatedFilter, SortOrder, TagFilter
from tagrate_dataset.bulk import bulk_load
from tagrate_dataset.db import create_db_engine, migrate
from tagrate_dataset.library import listing
from tagrate_dataset.library.listing import Paging, UserDataPage, UserImage, user_data, user_data_by_name

T0 = datetime(2026, 3, 1, tzinfo=UTC)
N_IMAGES = 90
THRESHOLD = 0.5
CURRENT, ANNS, STALE = "v-current", "v-ann", "v-stale"
USERS = {1: "ann", 2: "ben", 3: "cid", 4: "dot"}  # dot has no ratings; cid's model is the global one


@dataclass(frozen=True)
class World:
    names: dict[int, str]
    created: dict[int, datetime]
    ratings: dict[int, dict[int, tuple[float, datetime]]]
    tags: dict[int, set[str]]
    scores: dict[int, dict[int, float]]  # user -> image -> current score (stale ones left out)


def _build(engine: Engine) -> World:
    rng = random.Random(17)
    # Names in an order unrelated to ids; creation times in groups of five.
    names = {i: f"{(i * 7919) % 1000:03d}-{i:02d}.png" for i in range(1, N_IMAGES + 1)}
    created = {i: T0 + timedelta(minutes=i // 5) for i in names}
    images = [
        {"id": i, "sha256": f"{i:064x}", "name": names[i], "format": "PNG", "size_bytes": 1, "width": 1,
         "height": 1, "created_at": created[i]}
        for i in names
    ]  # fmt: skip
    ratings: dict[int, dict[int, tuple[float, datetime]]] = {1: {}, 2: {}, 3: {}, 4: {}}
    for i in names:
        # Rating times tie with each other and with creation times (rated=all
        # merges both): a few distinct minutes around the creation range.
        if i % 3:
            ratings[1][i] = (rng.choice([0.0, 0.5, 0.5, 1.0]), T0 + timedelta(minutes=rng.randint(0, 20)))
        if i % 7 == 0:
            ratings[2][i] = (rng.random(), T0 + timedelta(minutes=rng.randint(5, 8)))
        if i % 2:
            ratings[3][i] = (rng.choice([0.25, 0.75]), T0 + timedelta(minutes=10))
    tag_names = ["cat", "dog", "sky"]
    tags = {i: {t for t in tag_names if rng.random() < {"cat": 0.7, "dog": 0.3, "sky": 0.1}[t]} for i in names}
    # Scores: current for most images (with ties), stale for some, none for others.
    scores: dict[int, dict[int, float]] = {1: {}, 2: {}, 3: {}, 4: {}}
    predictions = []
    for user in (1, 2, 3):
        for i in names:
            if i % 11 == 0:
                continue  # never scored
            version = STALE if i % 13 == 0 else ANNS if user == 1 else CURRENT
            score = rng.choice([0.1, 0.2, 0.2, 0.9])
            if version != STALE:
                scores[user][i] = score
            predictions.append({"user_id": user, "image_id": i, "score": score, "model_version": version,
                                "predicted_by": "personal" if user == 1 else "global"})  # fmt: skip
    bulk_load(
        engine,
        users=[{"id": k, "name": v} for k, v in USERS.items()],
        images=images,
        tags=[{"id": n, "name": t} for n, t in enumerate(tag_names, start=1)],
        tagger_models=[{"id": 1, "model_id": "tagger", "threshold": THRESHOLD, "registered_at": T0}],
        ratings=[
            {"user_id": u, "image_id": i, "rating": r, "rated_at": at}
            for u, mine in ratings.items()
            for i, (r, at) in mine.items()
        ],
        image_taggings=[{"image_id": i, "tagger_model_id": 1} for i in names],
        image_tags=[
            {"image_id": i, "tagger_model_id": 1, "tag_id": n, "score": 0.9 if t in tags[i] else 0.2}
            for i in names
            for n, t in enumerate(tag_names, start=1)
        ],
    )
    # Timestamps as each database stores them (naive UTC text on SQLite).
    at = T0.replace(tzinfo=None) if engine.dialect.name == "sqlite" else T0
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO predictions (user_id, image_id, score, model_version, predicted_by, scored_at) "
                "VALUES (:user_id, :image_id, :score, :model_version, :predicted_by, :scored_at)"
            ),
            [{**p, "scored_at": at} for p in predictions],
        )
        for subject, version in (("ann", ANNS), ("all", CURRENT), ("ben", "")):
            conn.execute(
                text(
                    "INSERT INTO trained_snapshots (subject, snapshot_id, ratings_count, model_version, trained_at) "
                    "VALUES (:s, 'snap', 0, :v, :at)"
                ),
                {"s": subject, "v": version, "at": at},
            )
    # ann: her own model; ben: a snapshot without a version, so the global
    # one serves him; cid and dot (no scores): the global one.
    return World(names, created, ratings, tags, scores)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory, make_pg_database) -> Iterator[tuple[Engine, World]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('listing') / 'tagrate.db'}"
    else:
        url = make_pg_database()
    engine = create_db_engine(url, pool_size=2, max_overflow=0)
    migrate(engine)
    built = _build(engine)
    yield engine, built
    engine.dispose()


def expected(world: World, user: int, tags: TagFilter, sort: SortOrder, rated: RatedFilter) -> list[UserImage]:
    """The whole listing, computed in Python from the contract's rules."""
    mine, scores = world.ratings[user], world.scores[user]
    by = "personal" if user == 1 else "global"
    rows = []
    for i, name in world.names.items():
        if (rated is RatedFilter.YES and i not in mine) or (rated is RatedFilter.NO and i in mine):
            continue
        if not set(tags.include) <= world.tags[i] or set(tags.exclude) & world.tags[i]:
            continue
        rating, at = mine.get(i, (None, None))
        score = scores.get(i)
        rows.append((i, UserImage(name, rating, at, score, by if score is not None else None)))
    rows.sort(key=lambda e: e[1].image)  # every order below is stable: ties stay by name

    def last_when_none(value: float | None, descending: bool) -> tuple[int, float]:
        return (1, 0.0) if value is None else (0, -value if descending else value)

    if sort is SortOrder.NAME_DESC:
        rows.reverse()
    elif sort in (SortOrder.DATE_DESC, SortOrder.DATE_ASC):
        rows.sort(key=lambda e: e[1].rated_at or world.created[e[0]], reverse=sort is SortOrder.DATE_DESC)
    elif sort in (SortOrder.RATING_DESC, SortOrder.RATING_ASC):
        rows.sort(key=lambda e: last_when_none(e[1].rating, sort is SortOrder.RATING_DESC))
    elif sort in (SortOrder.PREDICTED_DESC, SortOrder.PREDICTED_ASC):
        rows.sort(key=lambda e: last_when_none(e[1].predicted, sort is SortOrder.PREDICTED_DESC))
    return [row for _, row in rows]


LIMITS = (3, 4, 7, 1000)
FILTERS = [TagFilter(), TagFilter(("cat",)), TagFilter(("dog", "cat")), TagFilter((), ("cat",)), TagFilter(("sky",))]


def pages(
    engine: Engine, user: str, tags: TagFilter, sort: SortOrder, rated: RatedFilter, limit: int, depth: str = ""
) -> Iterator:
    """Every page up to the first empty one. ``depth`` "deep-by-id": through
    :func:`user_data` (the user's id and version given), whose unfiltered
    deep pages are counted by one statement and read by another."""
    page = 1
    while True:
        if depth == "deep-by-id":
            user_id = next(k for k, v in USERS.items() if v == user)
            with Session(engine) as session:
                version = ANNS if user == "ann" else CURRENT
                got = user_data(session, user_id, tags, sort, rated, Paging(page, limit), version=version)
        else:
            with engine.connect() as conn:
                got = user_data_by_name(conn, user, tags, sort, rated, Paging(page, limit))
        yield page, got
        if not got.images:
            return
        page += 1


@pytest.fixture(params=["near-start", "deep", "deep-by-id"])
def depth(request, monkeypatch) -> str:
    """Every page as the first pages are read (one statement; this data is
    small), or as deep pages are (counted, then read forwards or from the
    other end, whichever is nearer: in one statement by name, or in two by
    id)."""
    if request.param.startswith("deep"):
        monkeypatch.setattr(listing, "_COUNT_WITH_PAGE_MAX", 0)
    return request.param


@pytest.mark.parametrize("rated", list(RatedFilter))
@pytest.mark.parametrize("sort", list(SortOrder))
def test_every_page_to_the_end_equals_the_reference(world, depth: str, sort: SortOrder, rated: RatedFilter) -> None:
    engine, model = world
    for user_id, user in USERS.items():
        for tags in FILTERS:
            want = expected(model, user_id, tags, sort, rated)
            # Page boundaries at every position of the groups of five tied
            # creation times (multiples of 3, 4 and 7 fall on each residue
            # mod 5) and one page holding everything. Pages of one row (a
            # boundary after every row: 90 of a walk's 130 pages, two thirds
            # of the suite's largest file) for one user without filters;
            # the deep-and-merged test below walks limits 3 and 10 as well.
            for limit in LIMITS + ((1,) if user_id == 1 and tags == FILTERS[0] else ()):
                walked: list[UserImage] = []
                for page, got in pages(engine, user, tags, sort, rated, limit, depth):
                    context = f"{user} {tags} limit={limit} page={page}"
                    assert got.total == len(want), context
                    assert got.images == want[(page - 1) * limit : page * limit], context
                    walked += got.images
                assert walked == want
            with engine.connect() as conn:
                whole = user_data_by_name(conn, user, tags, sort, rated, Paging())
            assert whole == UserDataPage(want, len(want))


def _naive(engine: Engine, user_id: int, rated: RatedFilter, sort: SortOrder, limit: int, offset: int) -> list[str]:
    """The page as one plain statement sorting every row (no tag filters)."""
    date = {RatedFilter.YES: "r.rated_at", RatedFilter.NO: "i.created_at"}.get(
        rated, "coalesce(r.rated_at, i.created_at)"
    )
    key = {SortOrder.DATE_DESC: f"{date} DESC", SortOrder.DATE_ASC: f"{date} ASC"}[sort]
    join = {RatedFilter.YES: "JOIN", RatedFilter.NO: "LEFT JOIN", RatedFilter.ALL: "LEFT JOIN"}[rated]
    where = "r.user_id IS NULL" if rated is RatedFilter.NO else "1 = 1"
    sql = (
        f"SELECT i.name FROM images i {join} ratings r ON r.user_id = :u AND r.image_id = i.id WHERE {where} "
        f"ORDER BY {key}, i.name LIMIT :lim OFFSET :off"
    )
    with engine.connect() as conn:
        return list(conn.execute(text(sql), {"u": user_id, "lim": limit, "off": offset}).scalars())


@pytest.mark.parametrize("rated", list(RatedFilter))
@pytest.mark.parametrize("sort", [SortOrder.DATE_DESC, SortOrder.DATE_ASC])
def test_deep_and_merged_pages_equal_the_naive_statement(
    world, depth: str, sort: SortOrder, rated: RatedFilter
) -> None:
    engine, _ = world
    for user_id, user in USERS.items():
        for limit in (3, 10):
            for page, got in pages(engine, user, TagFilter(), sort, rated, limit, depth):
                naive = _naive(engine, user_id, rated, sort, limit, (page - 1) * limit)
                assert [row.image for row in got.images] == naive, f"{user} limit={limit} page={page}"


def test_totals_equal_naive_counts(world, depth: str) -> None:
    engine, _ = world
    with engine.connect() as conn:
        for user_id, user in USERS.items():
            rated = conn.execute(text("SELECT count(*) FROM ratings WHERE user_id = :u"), {"u": user_id}).scalar()
            unrated = conn.execute(
                text(
                    "SELECT count(*) FROM images i WHERE NOT EXISTS "
                    "(SELECT 1 FROM ratings r WHERE r.user_id = :u AND r.image_id = i.id)"
                ),
                {"u": user_id},
            ).scalar()
            everything = conn.execute(text("SELECT count(*) FROM images")).scalar()
            for filter_, want in ((RatedFilter.YES, rated), (RatedFilter.NO, unrated), (RatedFilter.ALL, everything)):
                for page in (Paging(), Paging(1, 5), Paging(500, 5)):
                    got = user_data_by_name(conn, user, TagFilter(), SortOrder.DATE_DESC, filter_, page)
                    assert got.total == want, (user, filter_, page)


def test_rows_carry_the_serving_models_scores(world) -> None:
    """ann's own version, else the global one (ben's snapshot has none);
    stale scores are never shown."""
    engine, model = world
    with engine.connect() as conn:
        for user_id, user in USERS.items():
            for page in (Paging(), Paging(1, 20), Paging(2, 20)):
                rows = user_data_by_name(conn, user, rated=RatedFilter.ALL, page=page).images
                want = {i: s for i, s in model.scores[user_id].items()}
                names = {name: i for i, name in model.names.items()}
                assert [row.predicted for row in rows] == [want.get(names[row.image]) for row in rows], user
                by = {row.predicted_by for row in rows if row.predicted is not None}
                assert by == ({"personal"} if user == "ann" else {"global"} if model.scores[user_id] else set())


def test_an_unknown_user_is_not_found_on_every_path(world, depth: str) -> None:
    """Their rated list is a 404 on every path; their unrated and whole lists
    are those of a user with no ratings (dot: every stored image, unrated,
    the global model's predictions), on every path too."""
    engine, _ = world
    with engine.connect() as conn:
        for tags in (TagFilter(), TagFilter(("cat",))):
            for page in (Paging(), Paging(1, 10), Paging(400, 10)):
                for sort in (SortOrder.DATE_DESC, SortOrder.PREDICTED_DESC):
                    with pytest.raises(NotFound):
                        user_data_by_name(conn, "nobody", tags, sort, RatedFilter.YES, page)
                    for rated in (RatedFilter.ALL, RatedFilter.NO):
                        newcomer = user_data_by_name(conn, "nobody", tags, sort, rated, page)
                        assert newcomer == user_data_by_name(conn, "dot", tags, sort, rated, page)


def test_user_data_by_id_agrees_with_by_name(world) -> None:
    engine, _ = world
    with engine.connect() as conn:
        by_name = user_data_by_name(conn, "ann", TagFilter(("cat",)), SortOrder.RATING_DESC, RatedFilter.ALL)
    with Session(engine) as session:
        by_id = user_data(session, 1, TagFilter(("cat",)), SortOrder.RATING_DESC, RatedFilter.ALL, version=ANNS)
    assert by_id == by_name


def test_round_trips(world, monkeypatch) -> None:
    """An unfiltered page is one statement (a deep one reads from the nearer
    end; on PostgreSQL it is counted by one statement and read by another);
    a filtered page of any-source tags two (the lookups, which read the
    keys of the cached bitsets that count it, then the page); one counted
    in SQL four (the lookups, the tags' sizes, the count, the page)."""
    engine, _ = world
    statements: list[str] = []

    def record(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        if not statement.startswith(("BEGIN", "ROLLBACK", "COMMIT")):
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        with engine.connect() as conn:
            statements.clear()
            user_data_by_name(conn, "ann", page=Paging(2, 10))
            assert len(statements) == 1
            statements.clear()
            user_data_by_name(conn, "ann", sort=SortOrder.PREDICTED_DESC, page=Paging(2, 10))
            assert len(statements) == 1
            user_data_by_name(conn, "ann", TagFilter(("cat",)), page=Paging(1, 10))  # loads the bitsets
            statements.clear()
            user_data_by_name(conn, "ann", TagFilter(("cat",)), page=Paging(1, 10))
            # The lookups (the bitsets' keys among them), the page; counted from the bitsets.
            assert len(statements) == 2
            monkeypatch.setattr(listing, "_COUNT_WITH_PAGE_MAX", 0)  # as if this small listing were long
            statements.clear()
            got = user_data_by_name(conn, "ann", page=Paging(6, 10))  # 60 ratings: from the other end
            # One statement on SQLite (both branches in it), two on PostgreSQL.
            assert got.images and len(statements) == (1 if engine.dialect.name == "sqlite" else 2)
            assert "ORDER BY r.rated_at ASC, i.name DESC" in statements[-1]
            statements.clear()
            user_data_by_name(conn, "ann", TagFilter(("cat",)), page=Paging(6, 5))  # counted, then read
            assert len(statements) == 2
            statements.clear()
            # Counted in SQL (a source-specific term), after sizing the tags
            # (the rarest one drives the page).
            user_data_by_name(conn, "ann", TagFilter(("model:cat",)), page=Paging(6, 5))
            assert len(statements) == 4
    finally:
        event.remove(engine, "before_cursor_execute", record)
