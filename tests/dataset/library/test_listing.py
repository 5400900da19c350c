"""GetUserData's query against a reference implementation written in
Python, on SQLite and PostgreSQL: tag filters (AND, exclusion, unknown tags,
thresholds, only the current model), every sort order with ties, rated
yes/no/all, paging (including past the end) and totals."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from tagrate_common.errors import InvalidArgument
from tagrate_common.userdata import RatedFilter, SortOrder, TagFilter
from tagrate_dataset import records
from tagrate_dataset.bulk import bulk_load
from tagrate_dataset.db import create_db_engine, migrate
from tagrate_dataset.library.listing import Paging, UserImage, paging, user_data

T0 = datetime(2026, 1, 1, tzinfo=UTC)
# The dataset service's defaults (DatasetSettings): the tests' limits.
MAX_FILTER_TAGS, MAX_TAG_CHARS, DEFAULT_LIMIT, MAX_LIMIT = 50, 200, 60, 1000


def tag_filter(include: list[str], exclude: list[str]) -> TagFilter:
    """The filter GetUserData decodes from its request, under the default limits."""
    return TagFilter.of(include, exclude).checked(MAX_FILTER_TAGS, MAX_TAG_CHARS)


TAGS = ["cat", "dog", "outdoor", "night", "red", "rare", "nobody"]
THRESHOLD = 0.5  # the current model's
N_IMAGES = 48


@dataclass(frozen=True)
class World:
    """What was loaded, in Python, so the expected answers can be computed."""

    names: dict[int, str]  # image id -> name
    created: dict[int, datetime]
    ratings: dict[int, dict[int, tuple[float, datetime]]]  # user id -> image id -> (rating, rated_at)
    tags: dict[int, set[str]]  # image id -> tags the current model gave at/above its threshold


def _build(engine: Engine) -> World:
    rng = random.Random(7)
    names = {i: f"{i * 2654435761 % 2**32:08x}".ljust(64, "0") + ".jpg" for i in range(1, N_IMAGES + 1)}
    created = {i: T0 + timedelta(minutes=i // 2) for i in names}  # pairs share a creation time
    images = [
        {"id": i, "sha256": names[i][:64], "name": names[i], "format": "JPEG", "size_bytes": 100, "width": 8,
         "height": 8, "created_at": created[i]}
        for i in names
    ]  # fmt: skip
    # Alice rated most images, with many tied ratings and tied times; Bob a few.
    ratings: dict[int, dict[int, tuple[float, datetime]]] = {1: {}, 2: {}}
    for i in names:
        if i % 5 != 0:
            ratings[1][i] = (rng.choice([0.0, 0.25, 0.5, 0.5, 1.0]), T0 + timedelta(hours=1, minutes=rng.randint(0, 8)))
        if i % 4 == 0:
            ratings[2][i] = (rng.random(), T0 + timedelta(hours=2, seconds=i))
    # The old model tags everything "nobody"; the current one never does, so
    # a filter on it proves only the current model counts.
    scores_new: dict[int, dict[str, float]] = {}
    for i in names:
        scores_new[i] = {
            "cat": rng.choice([0.9, 0.7, 0.5, 0.3]) if i % 6 else 0.1,  # most images; 0.5 is exactly the threshold
            "dog": 0.8 if i % 3 == 0 else 0.2,
            "outdoor": 0.6 if i % 2 == 0 else 0.49,
            "night": 0.95 if i % 7 == 0 else 0.0,
            "red": 0.55 if i in (3, 9, 27) else 0.05,
            "rare": 0.99 if i == 10 else 0.4,
        }
    tag_ids = {name: n for n, name in enumerate(TAGS, start=1)}
    image_tags = [
        {"image_id": i, "tagger_model_id": 2, "tag_id": tag_ids[tag], "score": score}
        for i, scores in scores_new.items()
        for tag, score in scores.items()
    ] + [{"image_id": i, "tagger_model_id": 1, "tag_id": tag_ids["nobody"], "score": 1.0} for i in names]
    bulk_load(
        engine,
        users=[{"id": 1, "name": "alice"}, {"id": 2, "name": "bob"}],
        images=images,
        tags=[{"id": n, "name": name} for name, n in tag_ids.items()],
        tagger_models=[
            {"id": 1, "model_id": "old", "threshold": 0.1, "registered_at": T0},
            {"id": 2, "model_id": "current", "threshold": THRESHOLD, "registered_at": T0 + timedelta(days=1)},
        ],
        ratings=[
            {"user_id": u, "image_id": i, "rating": r, "rated_at": at}
            for u, per_user in ratings.items()
            for i, (r, at) in per_user.items()
        ],
        image_taggings=[{"image_id": i, "tagger_model_id": m} for i in names for m in (1, 2)],
        image_tags=image_tags,
    )
    tags = {i: {tag for tag, score in scores.items() if score >= THRESHOLD} for i, scores in scores_new.items()}
    return World(names, created, ratings, tags)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory, make_pg_database) -> Iterator[tuple[Engine, World]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('queries') / 'tagrate.db'}"
    else:
        url = make_pg_database()
    engine = create_db_engine(url, pool_size=2, max_overflow=0)
    migrate(engine)
    world = _build(engine)
    yield engine, world
    engine.dispose()


def _expected(world: World, user: int, tags: TagFilter, sort: SortOrder, rated: RatedFilter) -> list[UserImage]:
    mine = world.ratings[user]
    rows = []
    for i, name in world.names.items():
        if rated is RatedFilter.YES and i not in mine:
            continue
        if rated is RatedFilter.NO and i in mine:
            continue
        if not set(tags.include) <= world.tags[i] or set(tags.exclude) & world.tags[i]:
            continue
        rating, rated_at = mine.get(i, (None, None))
        rows.append((i, UserImage(name, rating, rated_at)))

    def date(entry):
        i, row = entry
        return row.rated_at or world.created[i]

    by_name = sorted(rows, key=lambda entry: entry[1].image)
    if sort in (SortOrder.NAME_ASC, SortOrder.PREDICTED_DESC, SortOrder.PREDICTED_ASC):
        # No model in this world: every prediction is null, so by name.
        ordered = by_name
    elif sort is SortOrder.NAME_DESC:
        ordered = by_name[::-1]
    elif sort is SortOrder.DATE_DESC:
        ordered = sorted(by_name, key=date, reverse=True)  # stable: ties stay by name
    elif sort is SortOrder.DATE_ASC:
        ordered = sorted(by_name, key=date)
    else:
        rated_rows = [e for e in by_name if e[1].rating is not None]
        unrated = [e for e in by_name if e[1].rating is None]
        ordered = sorted(rated_rows, key=lambda e: e[1].rating, reverse=sort is SortOrder.RATING_DESC) + unrated
    return [row for _, row in ordered]


FILTERS = [
    TagFilter(),
    TagFilter(("cat",)),
    TagFilter(("cat", "dog")),
    TagFilter(("dog", "outdoor", "cat")),
    TagFilter(("outdoor",), ("dog",)),
    TagFilter((), ("night", "dog")),
    TagFilter(("rare",)),
    TagFilter(("cat",), ("cat",)),
    TagFilter(("red",), ("unknown-tag",)),
]
PAGES = [Paging(), Paging(1, 5), Paging(3, 7), Paging(1, 1000), Paging(40, 5)]


@pytest.mark.parametrize("rated", list(RatedFilter))
@pytest.mark.parametrize("sort", list(SortOrder))
def test_user_data_matches_the_reference(world, sort: SortOrder, rated: RatedFilter) -> None:
    engine, model = world
    with Session(engine) as session:
        for user, tags in itertools.product((1, 2), FILTERS):
            expected = _expected(model, user, tags, sort, rated)
            for page in PAGES:
                got = user_data(session, user, tags, sort, rated, page)
                window = expected if not page.page else expected[(page.page - 1) * page.limit :][: page.limit]
                context = f"user={user} tags={tags} page={page}"
                assert got.total == len(expected), context
                assert got.images == window, context


def test_only_the_current_models_scores_count(world) -> None:
    engine, _ = world
    with Session(engine) as session:
        assert user_data(session, 1, TagFilter(("nobody",)), rated=RatedFilter.ALL).images == []
        everything = user_data(session, 1, rated=RatedFilter.ALL)
        assert user_data(session, 1, TagFilter((), ("nobody",)), rated=RatedFilter.ALL) == everything


def test_a_score_equal_to_the_threshold_matches(world) -> None:
    engine, model = world
    exactly = [i for i in model.names if i % 6 and i in model.tags and "cat" in model.tags[i]]
    assert exactly  # the data has them
    with Session(engine) as session:
        names = {row.image for row in user_data(session, 1, TagFilter(("cat",)), rated=RatedFilter.ALL).images}
    assert names == {model.names[i] for i in exactly}


def test_unknown_included_tags_match_nothing_and_are_not_errors(world) -> None:
    engine, _ = world
    hostile = ["'; DROP TABLE ratings; --", "cat' OR '1'='1", "%", "_", "\\", "x" * 200]
    with Session(engine) as session:
        for name in hostile:
            page = user_data(session, 1, tag_filter([name], []), page=Paging(1, 10))
            assert (page.images, page.total) == ([], 0), name
            # unknown excluded tags are ignored
            assert user_data(session, 1, tag_filter([], [name])).total == len(user_data(session, 1).images)
        assert user_data(session, 1).total > 0  # nothing was dropped


def test_unrated_images_have_no_rating_and_no_date(world) -> None:
    engine, model = world
    with Session(engine) as session:
        rows = user_data(session, 1, rated=RatedFilter.NO).images
    assert rows and all(row.rating is None and row.rated_at is None for row in rows)
    assert {row.image for row in rows} == {name for i, name in model.names.items() if i not in model.ratings[1]}


def test_rated_at_is_utc(world) -> None:
    engine, _ = world
    with Session(engine) as session:
        row = user_data(session, 2, page=Paging(1, 1)).images[0]
    assert row.rated_at is not None and row.rated_at.utcoffset() == timedelta(0)


def test_no_tagger_model_yet_means_includes_match_nothing(engine: Engine) -> None:
    bulk_load(
        engine,
        users=[{"id": 1, "name": "carol"}],
        images=[{"id": 1, "sha256": "a" * 64, "name": "a" * 64 + ".png", "format": "PNG", "size_bytes": 1,
                 "width": 1, "height": 1}],
        tags=[{"id": 1, "name": "cat"}],
        ratings=[{"user_id": 1, "image_id": 1, "rating": 0.5}],
    )  # fmt: skip
    with Session(engine) as session:
        assert user_data(session, 1, TagFilter(("cat",))).images == []
        assert [row.image for row in user_data(session, 1, TagFilter((), ("cat",))).images] == ["a" * 64 + ".png"]
        assert records.current_tagger_model(session) is None


def test_tag_filter_normalises_and_limits() -> None:
    assert tag_filter([" Cat ", "cat", "", "  ", "DOG"], ["-x", " Night"]) == TagFilter(("cat", "dog"), ("-x", "night"))
    assert len(tag_filter([f"t{i}" for i in range(30)], [f"u{i}" for i in range(20)]).include) == 30
    with pytest.raises(InvalidArgument, match="at most 50 tags"):
        tag_filter([f"t{i}" for i in range(30)], [f"u{i}" for i in range(21)])
    with pytest.raises(InvalidArgument, match="longer than 200"):
        tag_filter(["x" * 201], [])
    with pytest.raises(InvalidArgument, match="'filters'"):
        tag_filter([], ["y" * 201])
    with pytest.raises(InvalidArgument, match="control characters"):
        tag_filter(["cat\x00"], [])


def test_paging_validation() -> None:
    def checked(page: int, limit: int) -> Paging:
        return paging(page, limit, DEFAULT_LIMIT, MAX_LIMIT)

    assert checked(0, 0) == Paging()
    assert checked(0, 500) == Paging()  # the whole dataset: a valid limit does not matter
    assert checked(3, 0) == Paging(3, 60)
    assert checked(1, 1000) == Paging(1, 1000)
    assert paging(2, 7, default_limit=20, max_limit=10) == Paging(2, 7)
    assert paging(2, 0, default_limit=20, max_limit=100) == Paging(2, 20)
    # a limit is checked whenever it is given, with or without a page
    for page, limit in ((1, 1001), (0, 5000), (1, -1), (-1, 10)):
        with pytest.raises(InvalidArgument):
            checked(page, limit)
