"""An image's album memberships as other resources change the image: a
deleted image leaves every album (``images/``), an image merged into its
duplicate hands its places over (resolving duplicates). Plain functions
that run inside the caller's transaction; the album tables are this
resource's, so the other resources go through here rather than writing them.

Positions stay dense (0, 1, 2... in each album): an image leaving an album
closes the gap behind it."""

from __future__ import annotations

from sqlalchemy import text
from sqlmodel import Session

# Albums holding image :i, locked (PostgreSQL) in id order before their rows
# change, the same order every album change takes, so two changes wait for
# each other instead of deadlocking or computing positions from stale rows.
_LOCK_ALBUMS_OF = (
    "SELECT id FROM albums WHERE id IN (SELECT album_id FROM album_images WHERE image_id = :i) ORDER BY id"
)


def lock_albums_of(session: Session, image_id: int) -> None:
    """Locks the albums that hold the image (no-op on SQLite, whose writes are serial)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(_LOCK_ALBUMS_OF + " FOR UPDATE"), {"i": image_id})


def remove_image(session: Session, image_id: int) -> int:
    """Takes the image out of every album that holds it, closing each gap;
    the number of albums it left."""
    lock_albums_of(session, image_id)
    session.execute(
        text(
            "UPDATE album_images SET position = position - 1 "
            "WHERE album_id IN (SELECT album_id FROM album_images WHERE image_id = :i) "
            "AND position > (SELECT d.position FROM album_images d "
            "WHERE d.album_id = album_images.album_id AND d.image_id = :i)"
        ),
        {"i": image_id},
    )
    result = session.execute(text("DELETE FROM album_images WHERE image_id = :i"), {"i": image_id})
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def move_image(session: Session, from_image_id: int, to_image_id: int) -> int:
    """Hands every album place of ``from_image_id`` to ``to_image_id`` (the
    kept image of a duplicate group): in an album without the kept image it
    takes the removed one's place; in an album that already holds it the
    removed one just leaves (gap closed). Call before deleting the removed
    image, in the same transaction. Returns the albums changed."""
    if from_image_id == to_image_id:
        return 0
    lock_albums_of(session, from_image_id)
    moved = session.execute(
        text(
            "UPDATE album_images SET image_id = :to WHERE image_id = :i "
            "AND album_id NOT IN (SELECT album_id FROM album_images WHERE image_id = :to)"
        ),
        {"i": from_image_id, "to": to_image_id},
    )
    return int(moved.rowcount or 0) + remove_image(session, from_image_id)  # type: ignore[attr-defined]
