"""Reading albums: a user's albums newest first (paged, counted in the same
statement), an album's images in album order with their dimensions, the
owner's rating and their tags (from every source, as
/getimagetags?detail=true lists them), and an album's neighbours in its
owner's list. Plain SQL on one connection.

Round trips do not grow with the page: one statement resolves the owner,
the tagger model and the filter's tag ids; one reads the page of albums
with their counts and covers; one reads every image of those albums with
its tags (a row per image and tag, the images paged in a subquery first).
Filters are the library listing's own (``tags/filtersql.py``, as
/getuserdata resolves them) on each album image: tags from any source
(the current tagger model's not removed from the image, manual, taught)
or one (``manual:cat``), aliases resolved, a tag matched by the tags that
imply it, ``~`` groups, and ``rating:``/``predicted:`` comparisons against
the album owner's ratings and the predictions serving the owner. An
included tag nobody has keeps nothing, unknown excluded tags are ignored.
Albums themselves are never filtered out, so paging and neighbours do not
depend on the filter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, TextClause, bindparam, text

from tagrate_common.errors import InvalidArgument, NotFound, PermissionDenied
from tagrate_common.tagfilter import parse_filter
from tagrate_common.userdata import TagFilter

from ..library.listing import Paging
from ..models import ALL_SUBJECT, UTCDateTime
from ..tags import filtersql

_LATEST_MODEL = "FROM tagger_models ORDER BY registered_at DESC, id DESC LIMIT 1"


@dataclass(frozen=True)
class AlbumSummary:
    id: int
    user: str
    name: str
    created_at: datetime
    image_count: int
    cover: str | None
    source: str


@dataclass(frozen=True)
class AlbumEntry:
    image_id: int
    image: str
    width: int
    height: int
    source: str
    rating: float | None
    position: int  # 1-based
    tags: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Scope:
    """The owner's id, the current tagger model, the version serving the
    owner and the filter's SQL (``tags/filtersql.py``)."""

    user_id: int | None
    model: tuple[int, float] | None
    filter: filtersql.FilterSQL = field(default_factory=filtersql.FilterSQL)
    empty: bool = False  # the filter keeps nothing
    version: str = ""

    def params(self) -> dict[str, object]:
        return {
            **filtersql.model_params(self.model),
            "u": self.user_id,
            "v": self.version,
            **self.filter.params,
        }

    def conditions(self, image: str) -> str:
        return self.filter.where(image)


_NO_SCOPE = _Scope(None, None)


def _scope(conn: Connection, tags: TagFilter, owner: str | None = None, owner_id: int | None = None) -> _Scope:
    """One statement: the owner (by name, NotFound when unknown; or as
    given), the current tagger model, the version serving the owner and the
    filter's tag names resolved (aliases, implications, sources)."""
    flt = parse_filter(tags)
    names = flt.names
    subject = "u" if owner is not None else "o"
    columns = [
        "u.id" if owner is not None else "CAST(:owner_id AS INTEGER)",
        f"(SELECT id {_LATEST_MODEL})",
        f"(SELECT threshold {_LATEST_MODEL})",
        "coalesce((SELECT s.model_version FROM trained_snapshots s JOIN users o ON o.name = s.subject "
        f"WHERE o.id = {subject}.id AND s.model_version <> ''), "
        "(SELECT s.model_version FROM trained_snapshots s WHERE s.subject = :all AND s.model_version <> ''))",
        *filtersql.resolve_sql(len(names)),
    ]
    if owner is not None:
        source = " FROM users u WHERE u.name = :subject"
    else:
        source = " FROM (SELECT CAST(:owner_id AS INTEGER) AS id) o"
    values = {
        "subject": owner,
        "owner_id": owner_id,
        "all": ALL_SUBJECT,
        **{f"tag{n}": name for n, name in enumerate(names)},
    }
    row = conn.execute(text(f"SELECT {', '.join(columns)}{source}"), values).one_or_none()
    if row is None:
        raise NotFound(f"there is no user '{owner}'; a user is created by their first rating", "user_not_found")
    model = (int(row[1]), float(row[2])) if row[1] is not None else None
    resolved = filtersql.resolved(flt, row[4:])
    if resolved is None:
        return _Scope(row[0], model, empty=True)
    return _Scope(row[0], model, resolved, version=row[3] or "")


_SUMMARY_COLUMNS = (
    "a.id, u.name AS owner, a.name, a.created_at, a.source, "
    "(SELECT count(*) FROM album_images c WHERE c.album_id = a.id) AS image_count, "
    "(SELECT i.name FROM album_images f JOIN images i ON i.id = f.image_id WHERE f.album_id = a.id "
    "ORDER BY f.position, f.image_id LIMIT 1) AS cover"
)


def _typed(sql: str) -> TextClause:
    """``sql`` whose ``created_at`` column comes back as an aware UTC datetime."""
    return text(sql).columns(created_at=UTCDateTime())


def _summary(row: Any) -> AlbumSummary:
    return AlbumSummary(
        int(row.id), row.owner, row.name, row.created_at, int(row.image_count), row.cover, row.source or ""
    )


def list_albums(
    conn: Connection, owner: str, page: Paging, with_images: bool = False, tags: TagFilter = TagFilter()
) -> tuple[list[tuple[AlbumSummary, list[AlbumEntry]]], int]:
    """One page of ``owner``'s albums newest first ("" for every user's),
    with each album's images when asked; (albums, total albums)."""
    if owner:
        scope = _scope(conn, tags, owner=owner) if with_images else None
        user_id = scope.user_id if scope is not None else _user_id(conn, owner)
        where, values = "a.user_id = :u", {"u": user_id}
    else:
        if tags.include or tags.exclude:
            raise InvalidArgument("tag filters need an owner", "invalid_filters")
        scope = _scope(conn, tags, owner_id=None) if with_images else None
        where, values = "1 = 1", {}
    order = "ORDER BY a.created_at DESC, a.id DESC"
    sql = f"SELECT {_SUMMARY_COLUMNS}, count(*) OVER () AS total FROM albums a JOIN users u ON u.id = a.user_id "
    sql += f"WHERE {where} {order}"
    if page.page:
        sql += " LIMIT :lim OFFSET :off"
        values.update(lim=page.limit, off=(page.page - 1) * page.limit)
    rows = conn.execute(_typed(sql), values).all()
    if rows:
        total = int(rows[0].total)
    else:  # a page past the end carries no count
        total = int(conn.execute(text(f"SELECT count(*) FROM albums a WHERE {where}"), values).scalar_one())
    albums = [_summary(row) for row in rows]
    if not with_images or not albums:
        return [(album, []) for album in albums], total
    assert scope is not None
    images = _entries(conn, scope, [album.id for album in albums], with_tags=True)
    return [(album, images.get(album.id, [])) for album in albums], total


def _user_id(conn: Connection, owner: str) -> int:
    found = conn.execute(text("SELECT id FROM users WHERE name = :n"), {"n": owner}).scalar_one_or_none()
    if found is None:
        raise NotFound(f"there is no user '{owner}'; a user is created by their first rating", "user_not_found")
    return int(found)


def album_summary(conn: Connection, album_id: int, caller: str) -> tuple[AlbumSummary, int]:
    """The album and its owner's user id; NotFound for an unknown id,
    PermissionDenied when ``caller`` (a user name; "" for an admin) is not
    its owner."""
    row = conn.execute(
        _typed(f"SELECT {_SUMMARY_COLUMNS}, a.user_id FROM albums a JOIN users u ON u.id = a.user_id WHERE a.id = :a"),
        {"a": album_id},
    ).one_or_none()
    if row is None:
        raise NotFound(f"there is no album {album_id}", "album_not_found")
    album = _summary(row)
    if caller and caller != album.user:
        raise PermissionDenied(f"album {album_id} is another user's; this caller acts only for {caller!r}")
    return album, int(row.user_id)


def get_album(
    conn: Connection,
    album_id: int,
    caller: str,
    page: Paging,
    tags: TagFilter = TagFilter(),
    with_tags: bool = False,
) -> tuple[AlbumSummary, list[AlbumEntry], int]:
    """The album, (a page of) its images matching the filter in album
    order, and how many match; NotFound / PermissionDenied as
    :func:`album_summary`."""
    album, owner_id = album_summary(conn, album_id, caller)
    filtered = bool(tags.include or tags.exclude)
    scope = _scope(conn, tags, owner_id=owner_id) if filtered or with_tags else _NO_SCOPE
    if scope.empty:
        return album, [], 0
    total = album.image_count
    if filtered:
        total = int(
            conn.execute(
                text(f"SELECT count(*) FROM album_images m WHERE m.album_id = :a{scope.conditions('m.image_id')}"),
                {"a": album_id, **scope.params()},
            ).scalar_one()
        )
    images = _entries(conn, scope, [album_id], with_tags, page).get(album_id, [])
    return album, images, total


def _entries(
    conn: Connection, scope: _Scope, album_ids: Sequence[int], with_tags: bool, page: Paging = Paging()
) -> dict[int, list[AlbumEntry]]:
    """The images of ``album_ids`` matching the scope's filter, in album
    order, each with its owner's rating and (``with_tags``) its tags by
    name: one statement. A ``page`` pages the images (one album)."""
    if scope.empty:
        return {}
    limit = " LIMIT :lim OFFSET :off" if page.page else ""
    inner = (
        "SELECT m.album_id, m.position, i.id AS image_id, i.name, i.width, i.height, i.source, r.rating "
        "FROM album_images m JOIN images i ON i.id = m.image_id JOIN albums a ON a.id = m.album_id "
        "LEFT JOIN ratings r ON r.user_id = a.user_id AND r.image_id = i.id "
        f"WHERE m.album_id IN :albums{scope.conditions('i.id')} ORDER BY m.album_id, m.position, i.id{limit}"
    )
    if with_tags:
        # Each image's tags as /getimagetags?detail=true has them: the
        # current tagger model's not removed from it, manual, taught (a
        # pair two sources have comes twice; dropped below). Each source is
        # read by its (image, tag) key for the page's images only.
        among = "IN (SELECT image_id FROM p)"
        sql = (
            f"WITH p AS ({inner}) SELECT p.*, t.name AS tag FROM p LEFT JOIN ("
            f"SELECT x.image_id, x.tag_id FROM image_tags x WHERE x.image_id {among} AND x.tagger_model_id = :m "
            "AND x.score >= :th AND NOT EXISTS (SELECT 1 FROM hidden_tags h WHERE h.image_id = x.image_id "
            "AND h.tag_id = x.tag_id) "
            f"UNION ALL SELECT y.image_id, y.tag_id FROM manual_tags y WHERE y.image_id {among} "
            f"UNION ALL SELECT z.image_id, z.tag_id FROM taught_image_tags z WHERE z.image_id {among}"
            ") e ON e.image_id = p.image_id LEFT JOIN tags t ON t.id = e.tag_id "
            "ORDER BY p.album_id, p.position, p.image_id"
        )
    else:
        sql = f"SELECT p.*, NULL AS tag FROM ({inner}) p ORDER BY p.album_id, p.position, p.image_id"
    values: dict[str, object] = {"albums": list(album_ids), **scope.params()}
    if page.page:
        values.update(lim=page.limit, off=(page.page - 1) * page.limit)
    out: dict[int, list[AlbumEntry]] = {}
    last: AlbumEntry | None = None
    last_key: tuple[int, int] | None = None
    for row in conn.execute(text(sql).bindparams(bindparam("albums", expanding=True)), values):
        key = (int(row.album_id), int(row.image_id))
        if last is None or key != last_key:
            last_key = key
            last = AlbumEntry(
                int(row.image_id),
                row.name,
                int(row.width),
                int(row.height),
                row.source or "",
                row.rating,
                int(row.position) + 1,
            )
            out.setdefault(int(row.album_id), []).append(last)
        if row.tag is not None:
            last.tags.append(row.tag)
    for entries in out.values():
        for entry in entries:
            entry.tags[:] = sorted(set(entry.tags))  # code-point order, the same on every database
    return out


@dataclass(frozen=True)
class AlbumRef:
    id: int
    created_at: datetime


@dataclass(frozen=True)
class Neighbours:
    position: int  # 1-based, newest first
    total: int
    prev: AlbumRef | None  # the next newer album
    next: AlbumRef | None  # the next older album


# Albums of the same owner before (newer) and after (older) album ``a`` in
# the newest-first order: (created_at, id) descending.
_NEWER = "b.user_id = a.user_id AND (b.created_at > a.created_at OR (b.created_at = a.created_at AND b.id > a.id))"
_OLDER = "b.user_id = a.user_id AND (b.created_at < a.created_at OR (b.created_at = a.created_at AND b.id < a.id))"


def neighbours(conn: Connection, album_id: int, owner: str) -> Neighbours:
    """Where the album stands in ``owner``'s newest-first list, counted and
    stepped in one statement; NotFound when the album is not ``owner``'s
    (or there is no such user)."""
    sql = (
        f"SELECT u.name AS owner, (SELECT count(*) FROM albums b WHERE {_NEWER}) AS newer, "
        "(SELECT count(*) FROM albums b WHERE b.user_id = a.user_id) AS total, "
        f"(SELECT b.id FROM albums b WHERE {_NEWER} ORDER BY b.created_at, b.id LIMIT 1) AS prev_id, "
        f"(SELECT b.created_at FROM albums b WHERE {_NEWER} ORDER BY b.created_at, b.id LIMIT 1) AS prev_at, "
        f"(SELECT b.id FROM albums b WHERE {_OLDER} ORDER BY b.created_at DESC, b.id DESC LIMIT 1) AS next_id, "
        f"(SELECT b.created_at FROM albums b WHERE {_OLDER} ORDER BY b.created_at DESC, b.id DESC LIMIT 1) "
        "AS next_at FROM albums a JOIN users u ON u.id = a.user_id WHERE a.id = :a"
    )
    row = conn.execute(text(sql).columns(prev_at=UTCDateTime(), next_at=UTCDateTime()), {"a": album_id}).one_or_none()
    if row is None or row.owner != owner:
        _user_id(conn, owner)  # an unknown user is said so
        raise NotFound(f"album {album_id} is not one of user '{owner}'s albums", "album_not_found")
    prev = AlbumRef(int(row.prev_id), row.prev_at) if row.prev_id is not None else None
    after = AlbumRef(int(row.next_id), row.next_at) if row.next_id is not None else None
    return Neighbours(int(row.newer) + 1, int(row.total), prev, after)
