"""Changes to albums: creating one, renaming, deleting, adding, removing
and moving images. Plain functions that take a Session; transactions are
the caller's (see :class:`db.Database`).

Every change to one album first takes that album's row (``FOR UPDATE`` on
PostgreSQL; SQLite's writes are serial anyway), so positions are computed
from rows no other change is rewriting. Positions stay dense: 0, 1, 2... in
album order.

Images are named by their stored name or, where no stored image has that
name, by the filename a client uploaded them under (the newest image
stored under it): the original's chat bot posts montages of images it
uploaded with /addimage under its own filenames, and names them so.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import bindparam, text
from sqlmodel import Session, select

from tagrate_common import validation
from tagrate_common.errors import InvalidArgument, NotFound

from ..checks import clean_filename
from ..models import ALBUM_NAME_MAX_CHARS, ALBUM_SOURCE_MAX_CHARS, Album, AlbumImage, utc_now
from ..records import require_user
from . import queries

# Names looked up per statement (an IN list far below every driver's limit).
_CHUNK = 500


def album_name(value: str) -> str:
    """A storable album name: printable, trimmed, at most 200 characters ("" is no name)."""
    name = value.strip()
    if len(name) > ALBUM_NAME_MAX_CHARS:
        raise InvalidArgument(
            f"'name' must be at most {ALBUM_NAME_MAX_CHARS} characters, got {len(name)}", "invalid_name"
        )
    if not name.isprintable():
        raise InvalidArgument("'name' must not hold control characters", "invalid_name")
    return name


def album_source(value: str) -> str | None:
    """The key an import names its album by (None: none)."""
    source = value.strip()
    if len(source) > ALBUM_SOURCE_MAX_CHARS or not source.isprintable():
        raise InvalidArgument(
            f"'source' must be at most {ALBUM_SOURCE_MAX_CHARS} printable characters", "invalid_source"
        )
    return source or None


def image_names(names: Sequence[str], most: int, param: str = "images") -> list[str]:
    """The names asked for, trimmed, blanks dropped, each once (at its first
    place); 400 when none is left or there are more than ``most``."""
    seen: dict[str, None] = {}
    for raw in names:
        name = raw.strip()
        if name:
            seen.setdefault(name, None)
    if not seen:
        raise validation.missing(param)
    if len(seen) > most:
        raise InvalidArgument(f"'{param}' may name at most {most} images, got {len(seen)}", f"invalid_{param}")
    for name in seen:
        if len(name) > 255 or not name.isprintable():
            raise InvalidArgument(
                f"'{param}' must hold image names of at most 255 printable characters", f"invalid_{param}"
            )
    return list(seen)


def resolve_images(session: Session, names: Sequence[str]) -> list[tuple[int, str]]:
    """(id, stored name) of each name, in order, repeats dropped (two names
    of one image count once); NotFound naming the first unknown one."""
    by_name: dict[str, tuple[int, str]] = {}
    stored = [n for n in names if validation.IMAGE_NAME_RE.fullmatch(n)]
    for start in range(0, len(stored), _CHUNK):
        rows = session.execute(
            text("SELECT id, name FROM images WHERE name IN :names").bindparams(bindparam("names", expanding=True)),
            {"names": stored[start : start + _CHUNK]},
        )
        by_name.update({name: (image_id, name) for image_id, name in rows})
    uploaded = [n for n in names if n not in by_name]
    by_upload: dict[str, tuple[int, str]] = {}
    keys = sorted({clean_filename(n) for n in uploaded})
    for start in range(0, len(keys), _CHUNK):
        # Newest first: the first row of each filename is the one it names.
        rows = session.execute(
            text(
                "SELECT id, name, original_filename FROM images WHERE original_filename IN :names "
                "ORDER BY created_at DESC, id DESC"
            ).bindparams(bindparam("names", expanding=True)),
            {"names": keys[start : start + _CHUNK]},
        )
        for image_id, name, filename in rows:
            by_upload.setdefault(filename, (image_id, name))
    found: list[tuple[int, str]] = []
    ids: set[int] = set()
    for name in names:
        hit = by_name.get(name) or by_upload.get(clean_filename(name))
        if hit is None:
            raise NotFound(f"there is no stored image '{name[:100]}'", "image_not_found")
        if hit[0] not in ids:
            ids.add(hit[0])
            found.append(hit)
    return found


def require_album(session: Session, album_id: int, caller: str) -> None:
    """Holds the album's row for the rest of the transaction (PostgreSQL;
    SQLite's writes are serial); NotFound for an unknown id,
    PermissionDenied when ``caller`` (a user name; "" for an admin) is not
    its owner (:func:`queries.album_summary`)."""
    queries.album_summary(session.connection(), album_id, caller)
    if session.get_bind().dialect.name == "postgresql":
        held = session.execute(text("SELECT id FROM albums WHERE id = :a FOR UPDATE"), {"a": album_id}).first()
        if held is None:  # deleted since
            raise NotFound(f"there is no album {album_id}", "album_not_found")


def _count(session: Session, album_id: int) -> int:
    return int(
        session.execute(text("SELECT count(*) FROM album_images WHERE album_id = :a"), {"a": album_id}).scalar_one()
    )


def _check_room(session: Session, album_id: int, adding: int, most: int) -> int:
    held = _count(session, album_id)
    if held + adding > most:
        raise InvalidArgument(
            f"an album holds at most {most} images; album {album_id} has {held} and {adding} more were asked for",
            "album_full",
        )
    return held


def create_album(
    session: Session,
    owner: str,
    name: str,
    names: Sequence[str],
    most: int,
    created_at: datetime | None = None,
    source: str | None = None,
) -> tuple[Album, bool]:
    """A new album of ``owner`` (an existing user; NotFound otherwise) with
    the images in order; (album, True). With ``source``, the owner's album
    already made under it is answered instead: (album, False)."""
    user = require_user(session, owner)
    if source is not None:
        existing = session.exec(select(Album).where(Album.user_id == user.id, Album.source == source)).first()
        if existing is not None:
            return existing, False
    images = resolve_images(session, names) if names else []
    if len(images) > most:
        raise InvalidArgument(f"an album holds at most {most} images, got {len(images)}", "album_full")
    assert user.id is not None
    album = Album(user_id=user.id, name=name, created_at=created_at or utc_now(), source=source)
    session.add(album)
    session.flush()
    assert album.id is not None
    session.add_all(
        [AlbumImage(album_id=album.id, image_id=image_id, position=n) for n, (image_id, _) in enumerate(images)]
    )
    session.flush()
    return album, True


def rename_album(session: Session, album_id: int, caller: str, name: str) -> None:
    require_album(session, album_id, caller)
    session.execute(text("UPDATE albums SET name = :n WHERE id = :a"), {"n": name, "a": album_id})


def delete_album(session: Session, album_id: int, caller: str) -> int:
    """Deletes the album (its images stay stored); how many it held."""
    require_album(session, album_id, caller)
    held = _count(session, album_id)
    session.execute(text("DELETE FROM album_images WHERE album_id = :a"), {"a": album_id})
    session.execute(text("DELETE FROM albums WHERE id = :a"), {"a": album_id})
    return held


def add_images(
    session: Session, album_id: int, caller: str, names: Sequence[str], position: int, most: int
) -> list[str]:
    """Adds the images not in the album yet, in order, at the 1-based
    ``position`` (0 or past the end: at the end); the stored names added."""
    require_album(session, album_id, caller)
    images = resolve_images(session, names)
    held_ids = set(
        session.execute(text("SELECT image_id FROM album_images WHERE album_id = :a"), {"a": album_id}).scalars()
    )
    new = [(image_id, name) for image_id, name in images if image_id not in held_ids]
    held = _check_room(session, album_id, len(new), most)
    if not new:
        return []
    start = held if position == 0 or position > held else position - 1
    session.execute(
        text("UPDATE album_images SET position = position + :n WHERE album_id = :a AND position >= :p"),
        {"n": len(new), "a": album_id, "p": start},
    )
    session.add_all(
        [AlbumImage(album_id=album_id, image_id=image_id, position=start + n) for n, (image_id, _) in enumerate(new)]
    )
    session.flush()
    return [name for _, name in new]


def _place(session: Session, album_id: int, image: str) -> tuple[int, int]:
    """(image id, 0-based position) of a stored image in the album; NotFound otherwise."""
    row = session.execute(
        text(
            "SELECT m.image_id, m.position FROM album_images m JOIN images i ON i.id = m.image_id "
            "WHERE m.album_id = :a AND i.name = :name"
        ),
        {"a": album_id, "name": image},
    ).first()
    if row is None:
        raise NotFound(f"image '{image}' is not in album {album_id}", "image_not_in_album")
    return int(row[0]), int(row[1])


def remove_image(session: Session, album_id: int, caller: str, image: str) -> None:
    """Takes one image out of the album (it stays stored); NotFound when it is not there."""
    require_album(session, album_id, caller)
    image_id, position = _place(session, album_id, image)
    session.execute(
        text("DELETE FROM album_images WHERE album_id = :a AND image_id = :i"), {"a": album_id, "i": image_id}
    )
    session.execute(
        text("UPDATE album_images SET position = position - 1 WHERE album_id = :a AND position > :p"),
        {"a": album_id, "p": position},
    )


def move_image(session: Session, album_id: int, caller: str, image: str, position: int) -> None:
    """Moves one image to the 1-based ``position`` (past the end: last),
    the images between shifting by one."""
    if position < 1:
        raise InvalidArgument(f"'position' must be a whole number from 1 up, got {position}", "invalid_position")
    require_album(session, album_id, caller)
    image_id, old = _place(session, album_id, image)
    new = min(position, _count(session, album_id)) - 1
    if new == old:
        return
    if new < old:
        shift = "position + 1 WHERE album_id = :a AND position >= :new AND position < :old"
    else:
        shift = "position - 1 WHERE album_id = :a AND position > :old AND position <= :new"
    session.execute(text(f"UPDATE album_images SET position = {shift}"), {"a": album_id, "new": new, "old": old})
    session.execute(
        text("UPDATE album_images SET position = :new WHERE album_id = :a AND image_id = :i"),
        {"a": album_id, "new": new, "i": image_id},
    )
