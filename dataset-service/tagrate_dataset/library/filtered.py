"""The set of images a listing's filters keep, as ids, for other resources
that rank images their own way (similar images, ``similar/search.py``): the
listing's own preamble (``sql.preamble_sql``: the tag names resolved, the
tagger model, the serving version, the state of ``tag_members`` and the
keys of the cached bitsets, in one statement), query builder
(``neighbours._base_query``) and filter resolution (``tags/filtersql.py``:
aliases, implications, manual and taught tags, ``rating:``/``predicted:``),
so every filter the listing learns applies there too.

A filter of any-source tags (what the listing counts from bitsets,
``bitsets.py``) is answered from the cached bitsets alone, as one flag per
image id (GetSimilar masks its scores with them), with no statement beyond
the preamble. Other filters run the listing's SQL (each candidate probed,
or the whole set collected)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Connection, Row, text
from sqlmodel import Session, select

from tagrate_common.tagfilter import Filter, parse_filter
from tagrate_common.userdata import RatedFilter, TagFilter

from ..models import ALL_SUBJECT, Image, Rating
from ..tags import filtersql, members
from ..tags.filtersql import FILTER_FIRST, SCAN, FilterSQL
from . import bitsets, neighbours
from .sql import FIXED_COLUMNS, SUBJECT_BY_ID, SUBJECT_BY_NAME, preamble_sql

_NONE = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class Kept:
    """The images a filtered listing holds: ``flags`` (flags[i]: image id i
    is kept) when the bitsets answer, else the SQL to run (``flt`` None:
    an included tag nobody has, nothing is kept)."""

    user_id: int
    rated: RatedFilter
    flt: FilterSQL | None
    params: dict[str, object]
    flags: np.ndarray | None = None

    @property
    def queries(self) -> bool:
        """Whether :meth:`among` and :meth:`every` run a statement (else
        they need no session)."""
        return self.flt is not None and self.flags is None

    def among(self, session: Session | None, ids: Sequence[int]) -> np.ndarray:
        """The ids (sorted, unique) of these that are kept."""
        if self.flt is None or not len(ids):
            return _NONE
        if self.flags is not None:
            found = np.unique(np.asarray(ids, dtype=np.int64))
            found = found[(found >= 0) & (found < self.flags.size)]
            return found[self.flags[found]]
        return self._select(session, SCAN, ids)

    def every(self, session: Session | None) -> np.ndarray:
        """The ids (sorted) of every kept image."""
        if self.flt is None:
            return _NONE
        if self.flags is not None:
            return np.flatnonzero(self.flags).astype(np.int64)
        # The whole set: collected from the tags' own rows first, as the listing does.
        return self._select(session, FILTER_FIRST, None)

    def _select(self, session: Session | None, style: str, among: Sequence[int] | None) -> np.ndarray:
        assert self.flt is not None and session is not None
        column = Rating.image_id if self.rated is RatedFilter.YES else Image.id
        where = neighbours._Where(self.flt, self.params)
        stmt = neighbours._base_query(select(column), self.user_id, where, self.rated, style, for_count=True)
        if among is not None:
            stmt = stmt.where(column.in_([int(i) for i in among]))  # type: ignore[attr-defined]
        return np.unique(np.asarray(session.exec(stmt).all(), dtype=np.int64))


def _flags(bits: int) -> np.ndarray:
    """A bitset (bit n: image id n) as booleans indexed by image id."""
    raw = np.frombuffer(bits.to_bytes((bits.bit_length() + 7) // 8, "little"), dtype=np.uint8)
    return np.unpackbits(raw, bitorder="little").astype(bool)


def filters(tags: TagFilter, rated: RatedFilter) -> bool:
    """Whether a listing with these filters holds fewer than every image."""
    return bool(tags.include or tags.exclude) or rated is not RatedFilter.ALL


@dataclass(frozen=True)
class Preamble:
    """The listing's preamble for a filter: ``sql`` (one row whatever the
    user, ``newcomer`` form), its parameters less the user's."""

    flt: Filter
    sql: str
    params: dict[str, object]


def preamble(tags: TagFilter, rated: RatedFilter, subject: bool = True) -> Preamble:
    """The preamble for these filters, for the user named ``:subject`` (the
    caller binds it), or for no user when not ``subject``; a caller may read
    more columns beside it in the same statement."""
    return _preamble(SUBJECT_BY_NAME if subject else "1 = 0", tags, rated)


def _preamble(where: str, tags: TagFilter, rated: RatedFilter) -> Preamble:
    flt = parse_filter(tags)
    names = flt.names
    sql = preamble_sql(where, len(names), rated, counts=False, newcomer=True)
    return Preamble(flt, sql, {"all": ALL_SUBJECT, **{f"tag{n}": name for n, name in enumerate(names)}})


def kept(session: Session, user_id: int, tags: TagFilter, rated: RatedFilter, use_members: bool = True) -> Kept | None:
    """What ``user_id``'s listing with these filters holds, or None when
    nothing is filtered (every image). One statement (the listing's
    preamble), plus the rows of a bitset not cached yet. ``use_members``:
    whether ``tag_members`` and the bitsets may answer (setting
    ``tag_members``); either way the images are the same."""
    if not filters(tags, rated):
        return None
    head = _preamble(SUBJECT_BY_ID, tags, rated)
    conn = session.connection()
    row = conn.execute(text(head.sql), {"user_id": user_id, **head.params}).one()
    return kept_from(row, conn, head.flt, user_id, rated, use_members)


def kept_from(
    row: Row[Any], conn: Connection, flt: Filter, user_id: int, rated: RatedFilter, use_members: bool = True
) -> Kept:
    """What the listing holds, from its preamble's ``row`` (read by the
    caller, maybe with more columns after the preamble's); ``conn`` reads
    the rows of a bitset not cached yet."""
    names = flt.names
    resolved = filtersql.resolved(flt, row[FIXED_COLUMNS:])
    model = (row.model_id, row.threshold) if row.model_id is not None else None
    params: dict[str, object] = {"u": user_id, "v": row.mine or row.everyone or "", **filtersql.model_params(model)}
    if resolved is None:  # an included tag nobody has
        return Kept(user_id, rated, None, params)
    params.update(resolved.params)
    if use_members and names and members.usable(row.members_model, row.members_threshold, model):
        resolved = resolved.with_members()
        if row.epoch is not None:
            keys = bitsets.keys(row, names, FIXED_COLUMNS, filtersql.COLUMNS_PER_TAG)
            bits = bitsets.matched(resolved, rated, user_id, conn, keys)
            if bits is not None:
                return Kept(user_id, rated, resolved, params, _flags(bits))
    return Kept(user_id, rated, resolved, params)


def filtered_ids(
    session: Session, user_id: int, tags: TagFilter, rated: RatedFilter, among: Sequence[int] | None = None
) -> np.ndarray | None:
    """The ids (sorted, unique) of the images ``user_id``'s listing with
    these filters holds (only those ``among`` these ids, when given), or
    None when nothing is filtered (every image)."""
    found = kept(session, user_id, tags, rated)
    if found is None:
        return None
    return found.every(session) if among is None else found.among(session, among)
