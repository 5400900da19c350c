"""The set of images a listing's filters keep, as ids, for other resources
that rank images their own way (similar images, ``similar/search.py``): the
listing's own query builder (``neighbours._base_query``) and filter
resolution (``tags/filtersql.py``: aliases, implications, manual and taught
tags, ``rating:``/``predicted:``), so every filter the listing learns
applies there too."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sqlalchemy import text
from sqlmodel import Session, select

from tagrate_common.tagfilter import parse_filter
from tagrate_common.userdata import RatedFilter, TagFilter

from ..models import ALL_SUBJECT, Image, Rating
from ..records import current_tagger_model
from ..tags import filtersql
from ..tags.filtersql import FILTER_FIRST, SCAN
from . import neighbours

# The model version serving the user (theirs, else everyone's), as the
# listing's preamble reads it: what ``predicted:`` compares against.
_SERVING = (
    "SELECT coalesce((SELECT s.model_version FROM trained_snapshots s JOIN users u ON u.name = s.subject "
    "WHERE u.id = :u AND s.model_version <> ''), "
    "(SELECT s.model_version FROM trained_snapshots s WHERE s.subject = :all AND s.model_version <> ''))"
)


def filtered_ids(
    session: Session, user_id: int, tags: TagFilter, rated: RatedFilter, among: Sequence[int] | None = None
) -> np.ndarray | None:
    """The ids (sorted, unique) of the images ``user_id``'s listing with
    these filters holds (only those ``among`` these ids, when given), or
    None when nothing is filtered (every image)."""
    if not tags.include and not tags.exclude and rated is RatedFilter.ALL:
        return None
    flt = filtersql.resolve(session, parse_filter(tags))
    if flt is None:  # an included tag nobody has
        return np.zeros(0, dtype=np.int64)
    params: dict[str, object] = {"u": user_id, "v": "", **flt.params}
    if flt:
        model = current_tagger_model(session)
        params.update(filtersql.model_params(neighbours._model_key(model)))
        version = session.execute(text(_SERVING), {"u": user_id, "all": ALL_SUBJECT}).scalar_one()
        params["v"] = version or ""
    else:
        params.update(filtersql.model_params(None))
    column = Rating.image_id if rated is RatedFilter.YES else Image.id
    # Among a few ids: each probed (SCAN); the whole set: collected from the
    # tags' own rows first (FILTER_FIRST), as the listing does.
    style = FILTER_FIRST if among is None else SCAN
    stmt = neighbours._base_query(select(column), user_id, neighbours._Where(flt, params), rated, style, for_count=True)
    if among is not None:
        stmt = stmt.where(column.in_(list(among)))  # type: ignore[attr-defined]
    return np.unique(np.asarray(session.exec(stmt).all(), dtype=np.int64))
