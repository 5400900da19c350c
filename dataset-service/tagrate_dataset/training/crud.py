"""Recording which snapshot of a subject's ratings (a user's, or ``all``)
a published model was trained on, which queues the rescoring of every
stored image by that model. Snapshot ids: see ``snapshots.py``."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import func
from sqlmodel import Session, select

from tagrate_common.errors import InvalidArgument

from ..checks import MAX_ID_CHARS
from ..db import upsert
from ..models import ALL_SUBJECT, TrainedSnapshot, User, utc_now
from ..predictions.jobs import queue_rescoring
from ..records import require_user
from ..snapshots import ALL_SNAPSHOT_RE, USER_SNAPSHOT_RE


def record_trained_snapshot(
    session: Session, subject: str, snapshot_id: str, model_version: str, metrics: Mapping[str, float] | None = None
) -> TrainedSnapshot:
    """Records that ``subject``'s model (a user's, or ``all``) was trained on
    ``snapshot_id``, replacing the previous record. NotFound for an unknown
    user; InvalidArgument for an id that is not one of the subject's
    snapshots (malformed, another user's, or newer than the current one)."""
    problem = InvalidArgument(
        f"'snapshot_id' {snapshot_id[:120]!r} is not a snapshot of '{subject}'; "
        "use the id StreamTrainingData or GetUser returned",
        "invalid_snapshot_id",
    )
    if subject == ALL_SUBJECT:
        match = ALL_SNAPSHOT_RE.fullmatch(snapshot_id)
        if match is None:
            raise problem
        version, count = int(match[1]), int(match[2])
        current_version = session.exec(select(func.coalesce(func.sum(User.ratings_version), 0))).one()
    else:
        user = require_user(session, subject)
        match = USER_SNAPSHOT_RE.fullmatch(snapshot_id)
        if match is None or int(match[1]) != user.id:
            raise problem
        version, count = int(match[2]), int(match[3])
        current_version = user.ratings_version
    if version > current_version or count > version:
        # From the future (forged, or another database's), or impossible:
        # every rating counted was an insert that bumped the version.
        raise problem
    if len(model_version) > MAX_ID_CHARS:
        raise InvalidArgument(f"'model_version' must be at most {MAX_ID_CHARS} characters", "invalid_parameter")
    now = utc_now()
    values = {
        "subject": subject,
        "snapshot_id": snapshot_id,
        "ratings_count": count,
        "model_version": model_version,
        "trained_at": now,
        "metrics": dict(metrics or {}),
    }
    upsert(session, TrainedSnapshot, values, ["subject"])
    if model_version:
        queue_rescoring(session, subject, model_version)
    return TrainedSnapshot(**values)
