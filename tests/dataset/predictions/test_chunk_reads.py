"""The rescoring's chunk reads, on SQLite and PostgreSQL: the next chunk of
one extractor's vectors in image id order, other extractors and dimensions
left out, and (SQLite, which plans without statistics) read as one range of
the primary key: not by walking ix_image_features_extractor_created and
sorting every vector of the extractor, which made rescoring a 100k library
take minutes (3 s a chunk)."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlmodel import Session

from tagrate_dataset.models import Image, ImageFeatures
from tagrate_dataset.peers import ExtractorInfo
from tagrate_dataset.predictions.scoring import vectors_statement

CURRENT = ExtractorInfo("current-extractor", 4)


def _store(engine: Engine, count: int) -> list[int]:
    with Session(engine) as session:
        images = [
            Image(sha256=f"{i:064x}", name=f"{i:064x}.png", format="PNG", size_bytes=1, width=1, height=1)
            for i in range(count)
        ]
        session.add_all(images)
        session.flush()
        ids = [image.id for image in images]
        for n, image_id in enumerate(ids):
            assert image_id is not None
            session.add(ImageFeatures(image_id=image_id, extractor_id="older-extractor", dim=4, vector=b"o" * 16))
            if n % 3 != 1:  # every third image has no vector of the current extractor yet
                dim = 2 if n % 5 == 4 else 4  # and some a vector of another size
                session.add(
                    ImageFeatures(image_id=image_id, extractor_id=CURRENT.extractor_id, dim=dim, vector=b"c" * 16)
                )
        session.commit()
    return [i for i in ids if i is not None]


def test_a_chunk_is_the_next_vectors_of_the_extractor_by_image_id(engine: Engine) -> None:
    ids = _store(engine, 30)
    expected = [image_id for n, image_id in enumerate(ids) if n % 3 != 1 and n % 5 != 4]
    walked: list[int] = []
    after = 0
    with Session(engine) as session:
        while rows := session.exec(vectors_statement(CURRENT, after=after, limit=4)).all():
            assert len(rows) <= 4 and all(vector == b"c" * 16 for _, vector in rows)
            walked += [image_id for image_id, _ in rows]
            after = rows[-1][0]
        listed = session.exec(vectors_statement(CURRENT, image_ids=ids[:10])).all()
    assert walked == expected
    assert [image_id for image_id, _ in listed] == [i for i in expected if i in ids[:10]]


def test_sqlite_reads_a_chunk_as_one_primary_key_range(engine: Engine) -> None:
    if engine.dialect.name != "sqlite":
        return  # PostgreSQL plans by its statistics; the rows are checked above
    _store(engine, 30)
    stmt = vectors_statement(CURRENT, after=5, limit=4)
    sql = str(stmt.compile(engine, compile_kwargs={"literal_binds": True}))
    with engine.connect() as conn:
        plan = " | ".join(row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
    assert "ix_image_features_extractor_created" not in plan, plan
    assert "TEMP B-TREE" not in plan, plan
    assert "image_id>?" in plan, plan
