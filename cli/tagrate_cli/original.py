"""``tagrate import-original``: the original service's PostgreSQL database
(its peewee models) read directly.

Tables read: ``user`` (id, username, discord_id), ``image`` (id, filename,
image_768 as base64 text, sankaku_id), ``rating`` (image_id, user_id,
rating numeric) and, where the database has them, ``montagepost`` (id,
user_id, created_at) and ``montagepost_image`` (montagepost_id, image_id),
each post becoming an album after the images are in. The 768-pixel JPEG is the image here (the 512/305 copies
are the original's thumbnails; this server makes its own); sankaku_id
becomes the source. ``tag``/``image_tag`` are not read: there is no REST
call that writes tags, and this server's tagger tags every new image."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal

import psycopg

from .importer import Item
from .sources import Problem, parse_rating, valid_user

# Rows fetched per round trip while streaming images (base64 JPEGs of
# ~100-300 KiB each): bounded memory however large the database is.
FETCH_ROWS = 64


def rating_text(value: Decimal | float | int) -> str:
    """The numeric column as a plain decimal (``0.17``, ``1``)."""
    text = format(Decimal(str(value)).normalize(), "f")
    return "0" if text in ("-0", "") else text


class OriginalDatabase:
    """The original's data: users named by ``user_name`` (``discord_id``,
    what its web front end sends, falling back to ``username`` where it is
    empty; or ``username``)."""

    def __init__(self, url: str, user_name: str) -> None:
        self.conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1))
        self.conn.read_only = True
        self.problems: list[Problem] = []
        self._names = self._user_names(user_name)
        self._ratings = self._read_ratings()

    def __enter__(self) -> OriginalDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()

    def _user_names(self, user_name: str) -> dict[int, str]:
        names: dict[int, str] = {}
        for user_id, username, discord_id in self.conn.execute('SELECT id, username, discord_id FROM "user"'):
            first, second = (discord_id, username) if user_name == "discord_id" else (username, discord_id)
            name = str(first).strip() if first not in (None, "") else str(second or "").strip()
            if valid_user(name):
                names[user_id] = name
            else:
                self.problems.append(Problem(f"user id {user_id}", f"no usable user name ({name!r})"))
        return names

    def _read_ratings(self) -> dict[int, dict[str, str]]:
        ratings: dict[int, dict[str, str]] = {}
        query = "SELECT id, image_id, user_id, rating FROM rating ORDER BY id"
        for rating_id, image_id, user_id, value in self.conn.execute(query):
            if user_id not in self._names:
                continue  # the user's problem is reported once
            text = None if value is None else parse_rating(rating_text(value))
            if text is None:
                self.problems.append(Problem(f"rating id {rating_id}", f"rating {value!r} is not from 0 to 1"))
                continue
            ratings.setdefault(image_id, {})[self._names[user_id]] = text
        return ratings

    def users(self) -> set[str]:
        return {u for by_user in self._ratings.values() for u in by_user}

    def image_count(self) -> int:
        return self.conn.execute("SELECT count(*) FROM image").fetchone()[0]

    def items(self) -> Iterator[Item]:
        """The images, streamed by a server-side cursor."""
        with self.conn.cursor(name="tagrate_images") as cursor:
            cursor.itersize = FETCH_ROWS
            cursor.execute("SELECT id, filename, image_768, sankaku_id FROM image ORDER BY id")
            for image_id, filename, encoded, sankaku_id in cursor:
                label = f"image id {image_id} ({filename})"
                yield Item(
                    label,
                    filename or f"{image_id}.jpg",
                    _decoder(encoded or ""),
                    self._ratings.get(image_id, {}),
                    "" if sankaku_id in (None, "") else str(sankaku_id),
                    key=str(image_id),
                )

    def montage_posts(self, stored: dict[str, str]) -> Iterator[tuple[int, str, str, list[str], list[int]]]:
        """Each montage post of a user with a usable name, oldest first:
        (id, user, created_at as RFC 3339 UTC, the stored names of its
        images in the original's order (by image id), the image ids that
        were not imported). ``stored``: image id -> stored name. None when
        the database predates montage posts."""
        exists = self.conn.execute("SELECT to_regclass('montagepost'), to_regclass('montagepost_image')").fetchone()
        if exists is None or None in exists:
            return
        query = (
            "SELECT m.id, m.user_id, m.created_at, i.image_id FROM montagepost m "
            "LEFT JOIN montagepost_image i ON i.montagepost_id = m.id ORDER BY m.created_at, m.id, i.image_id"
        )
        posts: dict[int, tuple[int, object, list[int]]] = {}
        for post_id, user_id, created_at, image_id in self.conn.execute(query):
            post = posts.setdefault(post_id, (user_id, created_at, []))
            if image_id is not None:
                post[2].append(image_id)
        for post_id, (user_id, created_at, image_ids) in posts.items():
            if user_id not in self._names:
                self.problems.append(Problem(f"montagepost id {post_id}", "its user has no usable name"))
                continue
            names = [stored[str(i)] for i in image_ids if str(i) in stored]
            missing = [i for i in image_ids if str(i) not in stored]
            yield post_id, self._names[user_id], _utc_text(created_at), names, missing


def _utc_text(value: object) -> str:
    """A timestamp column as RFC 3339 UTC ("" when missing); the original
    wrote naive local times, taken here as UTC."""
    if not isinstance(value, datetime):
        return ""
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _decoder(encoded: str) -> Callable[[], bytes]:
    """Decodes on the worker thread, not while streaming rows."""

    def load() -> bytes:
        text = encoded.split(",", 1)[1] if encoded.startswith("data:") else encoded
        try:
            return base64.b64decode(text, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise OSError(f"image_768 is not base64: {exc}") from exc

    return load
