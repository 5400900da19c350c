"""``tag_members`` (``tags/members.py``) stays equal to what the source
tables say after every kind of write, on SQLite and PostgreSQL: model tags
(tagging, re-tagging, a threshold change, a new current model and a
rollback to an older one), manual tags added and removed (hiding a model
tag), aliases, implications added and removed (transitively), taught tags,
image deletion, and a database migrated from before the table existed.
The expected rows are computed in Python from the source tables; the
listing reads the same pages whether it uses the table or not."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import Engine, text
from sqlmodel import Session

from tagrate_common.userdata import RatedFilter, SortOrder, TagFilter
from tagrate_dataset.bulk import bulk_load
from tagrate_dataset.db import alembic_config, create_db_engine, migrate
from tagrate_dataset.images.crud import delete_image
from tagrate_dataset.library.listing import Paging, user_data, user_data_by_name
from tagrate_dataset.ratings.crud import remove_rating, update_rating
from tagrate_dataset.tags import crud, members, owned

T0 = datetime(2026, 1, 1, tzinfo=UTC)
N_IMAGES = 12


def _name(i: int) -> str:
    return f"{i:064x}.jpg"


def expected(conn) -> set[tuple[int, int]]:
    """(tag, image) from the source tables, computed here."""
    model = conn.execute(
        text("SELECT id, threshold FROM tagger_models ORDER BY registered_at DESC, id DESC LIMIT 1")
    ).one_or_none()
    hidden = set(conn.execute(text("SELECT tag_id, image_id FROM hidden_tags")).all())
    rows: set[tuple[int, int]] = set()
    if model is not None:
        for tag, image, score in conn.execute(
            text("SELECT tag_id, image_id, score FROM image_tags WHERE tagger_model_id = :m"), {"m": model[0]}
        ):
            if score >= model[1] and (tag, image) not in hidden:
                rows.add((tag, image))
    rows |= set(conn.execute(text("SELECT tag_id, image_id FROM manual_tags")).all())
    rows |= set(conn.execute(text("SELECT tag_id, image_id FROM taught_image_tags")).all())
    implied: dict[int, set[int]] = {}
    for tag, target in conn.execute(text("SELECT tag_id, implied_id FROM tag_implied")):
        implied.setdefault(tag, set()).add(target)
    return rows | {(target, image) for tag, image in rows for target in implied.get(tag, ())}


def stored(conn) -> set[tuple[int, int]]:
    return set(conn.execute(text("SELECT tag_id, image_id FROM tag_members")).all())


def assert_in_step(engine: Engine) -> None:
    with engine.connect() as conn:
        assert stored(conn) == expected(conn)
        state = conn.execute(text("SELECT ready FROM tag_members_state WHERE id = 1")).scalar_one()
        assert state


@pytest.fixture
def library(database_url: str) -> Iterator[Engine]:
    engine = create_db_engine(database_url, pool_size=2, max_overflow=0)
    migrate(engine)
    bulk_load(
        engine,
        users=[{"id": 1, "name": "alice"}],
        images=[
            {
                "id": i,
                "sha256": _name(i)[:64],
                "name": _name(i),
                "format": "JPEG",
                "size_bytes": 100,
                "width": 8,
                "height": 8,
                "created_at": T0 + timedelta(minutes=i),
            }
            for i in range(1, N_IMAGES + 1)
        ],
        ratings=[{"user_id": 1, "image_id": i, "rating": i / N_IMAGES, "rated_at": T0} for i in range(1, N_IMAGES)],
    )
    yield engine
    engine.dispose()


def write(engine: Engine, action) -> None:
    with Session(engine) as session:
        action(session)
        session.commit()
    assert_in_step(engine)


def tag_all(session: Session, model: str, threshold: float) -> None:
    for i in range(1, N_IMAGES + 1):
        scores = {"cat": 0.9 if i % 2 else 0.3, "dog": 0.6 if i % 3 == 0 else 0.1, "tree": 0.5 if i < 5 else 0.45}
        crud.put_image_tags(session, _name(i), model, threshold, scores)


def listing(engine: Engine, include: tuple[str, ...], exclude: tuple[str, ...] = ()) -> tuple[list, int]:
    with Session(engine) as session:
        page = user_data(session, 1, TagFilter(include, exclude), SortOrder.NAME_ASC, RatedFilter.ALL, Paging(1, 100))
    return page.images, page.total


FILTERS = [("cat",), ("cat", "dog"), ("animal", "tree"), ("kitty",), ("living", "red")]


def test_tag_members_stay_in_step_with_every_kind_of_write(library: Engine) -> None:
    engine = library
    assert_in_step(engine)
    write(engine, lambda s: tag_all(s, "m1", 0.5))  # tagging
    write(engine, lambda s: crud.put_image_tags(s, _name(1), "m1", 0.5, {"dog": 0.7}))  # re-tagging one image
    write(engine, lambda s: owned.add_tags(s, _name(2), ["red", "dog"], "alice"))  # by hand (dog was below)
    write(engine, lambda s: owned.remove_tags(s, _name(3), ["cat"], "alice"))  # a model tag hidden
    write(engine, lambda s: owned.remove_tags(s, _name(2), ["red"], "alice"))  # a manual tag removed
    write(engine, lambda s: owned.add_alias(s, "kitty", "cat"))
    write(engine, lambda s: owned.add_tags(s, _name(4), ["kitty"], None))  # through an alias
    write(engine, lambda s: owned.add_implication(s, "cat", "animal"))
    write(engine, lambda s: owned.add_implication(s, "animal", "living"))  # transitively
    write(engine, lambda s: owned.add_implication(s, "red", "living"))
    write(engine, lambda s: owned.add_tags(s, _name(6), ["red"], "alice"))  # an implying tag by hand
    with engine.begin() as conn:  # a taught tag put on and taken off (the rows taught.py writes)
        conn.execute(text("INSERT INTO tags (name) VALUES ('taught1')"))
        conn.execute(
            text(
                "INSERT INTO tag_implications (tag_id, implies_id, created_at) SELECT t.id, a.id, :now "
                "FROM tags t, tags a WHERE t.name = 'taught1' AND a.name = 'animal'"
            ),
            {"now": T0},
        )
    write(engine, lambda s: owned._rebuild_closure(s))
    for statement in (
        "INSERT INTO taught_image_tags (image_id, tag_id, score) SELECT 8, id, 0.9 FROM tags WHERE name = 'taught1'",
        "INSERT INTO taught_image_tags (image_id, tag_id, score) SELECT 9, id, 0.9 FROM tags WHERE name = 'taught1'",
        "DELETE FROM taught_image_tags WHERE image_id = 9",
        "UPDATE image_tags SET score = 0.95 WHERE image_id = 10",
    ):
        with engine.begin() as conn:
            conn.execute(text(statement))
        assert_in_step(engine)
    with_members = [listing(engine, include) for include in FILTERS] + [listing(engine, ("cat",), ("dog",))]
    write(engine, lambda s: owned.delete_implication(s, "animal", "living"))
    write(engine, lambda s: crud.register_tagger_model(s, "m1", 0.4))  # a threshold change
    write(engine, lambda s: crud.use_tagger_model(s, "m2", 0.5))  # a new model: no model tags yet
    write(engine, lambda s: tag_all(s, "m2", 0.5))
    write(engine, lambda s: crud.use_tagger_model(s, "m1", 0.4))  # rolled back to the older model
    write(engine, lambda s: delete_image(s, _name(5)))

    # The listing reads the same pages from the table as from the sources.
    write(engine, lambda s: owned.add_implication(s, "animal", "living"))
    write(engine, lambda s: crud.register_tagger_model(s, "m1", 0.5))
    write(engine, lambda s: owned.add_tags(s, _name(5 + 1), ["red"], "alice"))
    with engine.connect() as conn:
        state = conn.execute(text(f"SELECT {', '.join(members.STATE_COLUMNS)}")).one()
        current = conn.execute(text("SELECT id, threshold FROM tagger_models WHERE model_id = 'm1'")).one()
    assert members.usable(state[0], state[1], (current[0], current[1]))
    now_members = [listing(engine, include) for include in FILTERS] + [listing(engine, ("cat",), ("dog",))]
    with engine.begin() as conn:
        members.suspend(conn)  # the listing falls back to the source tables
    from_sources = [listing(engine, include) for include in FILTERS] + [listing(engine, ("cat",), ("dog",))]
    assert now_members == from_sources
    assert with_members != now_members  # (the writes changed what the filters match)
    assert any(total for _, total in from_sources)


@pytest.mark.fresh_database  # starts from an older schema
def test_a_migrated_database_gets_its_tag_members(database_url: str) -> None:
    engine = create_db_engine(database_url, pool_size=2, max_overflow=0)
    try:
        with engine.begin() as conn:  # the schema before the table existed
            config = alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, "0012")
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO tags (id, name) VALUES (1, 'cat'), (2, 'dog'), (3, 'animal')"))
            for i in (1, 2, 3):
                conn.execute(
                    text(
                        "INSERT INTO images (id, sha256, name, format, size_bytes, width, height, created_at, "
                        "original_filename) VALUES (:i, :s, :n, 'JPEG', 1, 1, 1, :t, '')"
                    ),
                    {"i": i, "s": _name(i)[:64], "n": _name(i), "t": T0},
                )
            conn.execute(
                text("INSERT INTO tagger_models (id, model_id, threshold, registered_at) VALUES (1, 'm', 0.5, :t)"),
                {"t": T0},
            )
            conn.execute(
                text(
                    "INSERT INTO image_tags (image_id, tagger_model_id, tag_id, score) "
                    "VALUES (1, 1, 1, 0.9), (2, 1, 1, 0.4), (3, 1, 2, 0.7), (2, 1, 2, 0.8)"
                )
            )
            conn.execute(text("INSERT INTO hidden_tags (image_id, tag_id, removed_at) VALUES (2, 2, :t)"), {"t": T0})
            conn.execute(text("INSERT INTO manual_tags (image_id, tag_id, added_at) VALUES (3, 1, :t)"), {"t": T0})
            conn.execute(text("INSERT INTO tag_implied (tag_id, implied_id) VALUES (2, 3)"))
        migrate(engine)
        with engine.connect() as conn:
            assert stored(conn) == expected(conn) == {(1, 1), (2, 3), (3, 3), (1, 3)}
        assert_in_step(engine)
    finally:
        engine.dispose()


def by_name(engine: Engine, use_members: bool, rated: RatedFilter) -> list[tuple[list, int]]:
    with engine.connect() as conn:
        return [
            (page.images, page.total)
            for include, exclude in ((("cat",), ()), (("cat", "tree"), ()), (("tree",), ("dog",)))
            for page in [
                user_data_by_name(
                    conn, "alice", TagFilter(include, exclude), SortOrder.DATE_DESC, rated, Paging(1, 100), use_members
                )
            ]
        ]


def test_cached_totals_follow_the_users_ratings(library: Engine) -> None:
    """The in-memory bitsets (``library/bitsets.py``) of a user's ratings are
    keyed by the user's ratings version: a new or removed rating is counted."""
    engine = library
    write(engine, lambda s: tag_all(s, "m1", 0.5))
    for change in (
        lambda s: remove_rating(s, "alice", _name(1)),
        lambda s: update_rating(s, "alice", _name(1), 0.5),  # rated again
        lambda s: delete_image(s, _name(3)),
    ):
        before = {rated: by_name(engine, True, rated) for rated in (RatedFilter.YES, RatedFilter.NO)}
        write(engine, change)
        for rated in (RatedFilter.YES, RatedFilter.NO):
            assert by_name(engine, True, rated) == by_name(engine, False, rated)
        assert by_name(engine, True, RatedFilter.YES) != before[RatedFilter.YES]
