"""``tagrate import-original`` against a real PostgreSQL database created
with the original service's schema (the tables its peewee models create)
and filled as the original fills it: base64 JPEGs, numeric ratings."""

from __future__ import annotations

import base64
import hashlib
import io

import httpx
import psycopg
import pytest
from PIL import Image

from .conftest import photo_jpegs, ratings_of, run_cli, stored_images

pytestmark = pytest.mark.postgres

# What peewee's create_tables() makes of the original's models (AutoField
# ids, ForeignKeyField -> <name>_id with an index, DecimalField -> numeric).
ORIGINAL_SCHEMA = """
CREATE TABLE "user" (id SERIAL PRIMARY KEY, username VARCHAR(255) NOT NULL, discord_id VARCHAR(255));
CREATE TABLE image (
    id SERIAL PRIMARY KEY, filename VARCHAR(255) NOT NULL,
    image_768 TEXT NOT NULL, image_512_t TEXT NOT NULL, image_305 TEXT NOT NULL, sankaku_id VARCHAR(255)
);
CREATE TABLE rating (
    id SERIAL PRIMARY KEY,
    image_id INTEGER NOT NULL REFERENCES image (id),
    user_id INTEGER NOT NULL REFERENCES "user" (id),
    rating NUMERIC(10, 5) NOT NULL
);
CREATE INDEX rating_image_id ON rating (image_id);
CREATE INDEX rating_user_id ON rating (user_id);
CREATE TABLE tag (id SERIAL PRIMARY KEY, name VARCHAR(255) NOT NULL UNIQUE);
CREATE TABLE image_tag (
    id SERIAL PRIMARY KEY,
    image_id INTEGER NOT NULL REFERENCES image (id),
    tag_id INTEGER NOT NULL REFERENCES tag (id),
    score REAL
);
"""
# The montage post tables of the original's latest version.
MONTAGE_SCHEMA = """
CREATE TABLE montagepost (id BIGSERIAL PRIMARY KEY, user_id BIGINT NOT NULL REFERENCES "user" (id),
    created_at TIMESTAMP NOT NULL);
CREATE TABLE montagepost_image (id BIGSERIAL PRIMARY KEY,
    montagepost_id BIGINT NOT NULL REFERENCES montagepost (id), image_id BIGINT NOT NULL REFERENCES image (id));
"""


def _b64_resized(jpeg: bytes, side: int) -> str:
    img = Image.open(io.BytesIO(jpeg))
    img.thumbnail((side, side))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def test_import_original_migrates_images_ratings_users_and_sources(server, tmp_path, make_pg_database):
    url = make_pg_database().replace("postgresql+psycopg://", "postgresql://", 1)
    photos = photo_jpegs(5, seed=7, side=768)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(ORIGINAL_SCHEMA)
        conn.execute(
            'INSERT INTO "user" (id, username, discord_id) VALUES '
            "(1, 'alice', '123456789012345678'), (2, 'bob', NULL), (3, 'carol', '987654321098765432')"
        )
        for i, data in enumerate(photos, 1):
            conn.execute(
                "INSERT INTO image (id, filename, image_768, image_512_t, image_305, sankaku_id) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (
                    i,
                    f"upload{i}.jpg",
                    base64.b64encode(data).decode(),
                    _b64_resized(data, 512),
                    _b64_resized(data, 305),
                    None if i == 5 else str(30000 + i),
                ),
            )
        conn.execute(
            "INSERT INTO rating (image_id, user_id, rating) VALUES "
            "(1, 1, 0.17), (2, 1, 1), (3, 1, 0), (1, 2, 0.83), (4, 2, 0.5), (2, 3, 0.33)"
        )
        conn.execute("INSERT INTO tag (id, name) VALUES (1, 'cat')")
        conn.execute("INSERT INTO image_tag (image_id, tag_id, score) VALUES (1, 1, 0.9)")
        conn.execute(MONTAGE_SCHEMA)
        conn.execute(
            "INSERT INTO montagepost (id, user_id, created_at) VALUES "
            "(1, 1, '2024-03-05 10:00:00'), (2, 1, '2024-03-06 11:30:00'), (3, 2, '2024-03-07 08:00:00')"
        )
        # Posted in any order: the original lists a post's images by image id.
        conn.execute(
            "INSERT INTO montagepost_image (montagepost_id, image_id) VALUES (1, 3), (1, 1), (2, 2), (3, 5), (3, 4)"
        )
    names = [f"{hashlib.sha256(p).hexdigest()}.jpg" for p in photos]

    summary_path = tmp_path / "summary.json"
    result = run_cli(server.url, "import-original", "--database", url, "--summary-json", str(summary_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "images: 5 added" in result.stdout and "ratings: 6 added" in result.stdout
    # discord ids name users (what the original's web front end sends); bob has none: his username.
    assert ratings_of(server.url, "123456789012345678") == {names[0]: 0.17, names[1]: 1.0, names[2]: 0.0}
    assert ratings_of(server.url, "bob") == {names[0]: 0.83, names[3]: 0.5}
    assert ratings_of(server.url, "987654321098765432") == {names[1]: 0.33}
    assert stored_images(server.url, "bob") == sorted(names)  # the unrated image too
    for i, name in enumerate(names, 1):
        tags = httpx.get(f"{server.url}/getimagetags", params={"image": name}).json()
        assert tags["source"] == (None if i == 5 else str(30000 + i))
        assert httpx.get(f"{server.url}/getimage", params={"image": name}).content == photos[i - 1]

    alice = "123456789012345678"
    posts = httpx.get(f"{server.url}/getmontageposts", params={"user": alice}).json()["montageposts"]
    assert [(p["created_at"], [i["filename"] for i in p["images"]]) for p in posts] == [
        ("2024-03-06T11:30:00Z", [names[1]]),
        ("2024-03-05T10:00:00Z", [names[0], names[2]]),
    ]
    assert posts[1]["images"][0]["sankaku_id"] == 30001
    bobs = httpx.get(f"{server.url}/getmontageposts", params={"user": "bob"}).json()["montageposts"]
    assert [[i["filename"] for i in p["images"]] for p in bobs] == [[names[3], names[4]]]

    again = run_cli(server.url, "import-original", "--database", url)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (
        "images: 0 added, 5 already there" in again.stdout and "ratings: 0 added, 0 changed, 6 already" in again.stdout
    )
    assert len(httpx.get(f"{server.url}/albums").json()["albums"]) == 3  # no second copy of a post

    # The other naming: usernames.
    by_name = run_cli(server.url, "import-original", "--database", url, "--user-name", "username")
    assert by_name.returncode == 0, by_name.stdout + by_name.stderr
    assert ratings_of(server.url, "alice") == {names[0]: 0.17, names[1]: 1.0, names[2]: 0.0}
    assert ratings_of(server.url, "carol") == {names[1]: 0.33}
