"""Automatic retraining: a user's model is trained again, in the background,
once enough of their ratings changed.

Every ``retrain_poll_seconds`` (while no job runs) the trainer asks the
dataset service for the users whose ratings are not the ones their model was
trained on (one call). A user's snapshot id is ``<user id>:<version>:<count>``
and the version grows by one with every rating added, changed or removed
(see the dataset service's ``snapshots.py``), so the number of changes since
a snapshot is the difference of the versions. A user is trained when

- they have at least ``min_ratings`` ratings,
- at least ``retrain_after_ratings`` changes happened since the *baseline*:
  the later of the snapshot their model was trained on and the snapshot of
  their last job that ended (succeeded or failed: a failure such as "no
  better than the mean" is not retried until enough new ratings arrive), and
- no automatic job of theirs started in the last
  ``retrain_min_interval_seconds``, and
- debounced: their snapshot stayed the same for ``retrain_quiet_seconds``
  (a burst of ratings ends before it is trained on), unless they have been
  changing it for ``retrain_max_wait_seconds`` already (someone rating
  steadily still gets fresh models).

The users with the most changes go first; one job runs at a time, through
:class:`~.runner.JobRunner` like a request's, but ``automatic``: at a lowered
CPU priority, and stopped when a request to train arrives.

Only the debounce is kept in memory (after a restart a user waits one quiet
period more); everything else is not: the baseline and the last start come
from the dataset service and the jobs table. A job cut off by a crash (marked
failed with the crash message at the next start) counts neither as an
attempt nor for the interval, so after a restart it simply runs again; a
job stopped by a request or /stoptraining does not count as an attempt
either, only for the interval.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlmodel import col, select

from tagrate_common.errors import TagrateError

from .config import TrainerSettings
from .jobs import CRASHED_MESSAGE, FAILED, SUCCEEDED, JobStore, TrainingJob, utc_now
from .peers import Peers, UserInfo
from .runner import JobRunner

log = logging.getLogger(__name__)


def _utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every time in the jobs table is UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


@dataclass(frozen=True)
class SnapshotVersion:
    user_id: int
    version: int


def snapshot_version(snapshot_id: str | None) -> SnapshotVersion | None:
    """The (user id, ratings version) of a user's snapshot id, or None for
    anything else."""
    parts = (snapshot_id or "").split(":")
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        return None
    return SnapshotVersion(int(parts[0]), int(parts[1]))


def changes_since(current: str, baseline: str | None) -> int:
    """Ratings added, changed or removed between two snapshots of one user
    (every change when the baseline is not one of this user's)."""
    now = snapshot_version(current)
    if now is None:
        return 0
    then = snapshot_version(baseline)
    if then is None or then.user_id != now.user_id or then.version > now.version:
        return now.version
    return now.version - then.version


@dataclass(frozen=True)
class History:
    """What the jobs table says about a user's automatic training."""

    last_attempt_snapshot: str | None  # the snapshot of the last job that ended, crashes aside
    last_automatic_start: datetime | None  # crashes aside


def user_history(store: JobStore, user: str) -> History:
    """Two small indexed queries on the user's jobs."""
    not_crashed = (col(TrainingJob.error).is_(None)) | (col(TrainingJob.error) != CRASHED_MESSAGE)
    newest_first = (col(TrainingJob.started_at).desc(), col(TrainingJob.id).desc())
    attempt = (
        select(TrainingJob.snapshot_id)
        .where(TrainingJob.user == user, col(TrainingJob.state).in_((SUCCEEDED, FAILED)), not_crashed)
        .where(col(TrainingJob.snapshot_id).is_not(None))
        .order_by(*newest_first)
        .limit(1)
    )
    automatic = (
        select(TrainingJob.started_at)
        .where(TrainingJob.user == user, col(TrainingJob.automatic).is_(True), not_crashed)
        .order_by(*newest_first)
        .limit(1)
    )
    with store.db.read() as session:
        return History(session.exec(attempt).first(), _utc(session.exec(automatic).first()))


def due_changes(info: UserInfo, history: History) -> int:
    """Changes since the later of the trained snapshot and the last attempt."""
    return min(
        changes_since(info.snapshot_id, info.trained_snapshot_id),
        changes_since(info.snapshot_id, history.last_attempt_snapshot),
    )


class AutoRetrainer:
    """The polling thread; :meth:`start` and :meth:`close`."""

    def __init__(self, settings: TrainerSettings, runner: JobRunner, store: JobStore, peers: Peers) -> None:
        self.settings = settings
        self.runner = runner
        self.store = store
        self.peers = peers
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # user -> (snapshot id last seen, monotonic time it was first seen, time their changes began)
        self._seen: dict[str, tuple[str, float, float]] = {}

    @property
    def enabled(self) -> bool:
        return self.settings.retrain_after_ratings > 0

    def start(self) -> None:
        if not self.enabled:
            log.info("automatic retraining is off (TRAINER_RETRAIN_AFTER_RATINGS=0)")
            return
        self._thread = threading.Thread(target=self._run, name="autotrain", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10.0)

    def _run(self) -> None:
        failures = 0
        while not self._stop.wait(self.settings.retrain_poll_seconds * min(2**failures, 30)):
            try:
                self.poll()
                failures = 0
            except TagrateError as exc:  # the dataset service is down: try again, less often
                failures += 1
                if failures == 1:
                    log.warning("automatic retraining cannot list changed users: %s", exc.message)
            except Exception:
                failures += 1
                log.exception("automatic retraining failed; trying again")

    def poll(self) -> str | None:
        """Starts one due user's training, if any is due and no job runs;
        returns that user."""
        if self.runner.busy():
            return None
        now, clock = utc_now(), time.monotonic()
        interval = timedelta(seconds=self.settings.retrain_min_interval_seconds)
        due: list[tuple[int, str]] = []
        untrained = self.peers.untrained_users()
        seen = self._seen
        self._seen = {}
        for info in untrained:
            snapshot, since, began = seen.get(info.user, (info.snapshot_id, clock, clock))
            if snapshot != info.snapshot_id:
                snapshot, since = info.snapshot_id, clock
            self._seen[info.user] = (snapshot, since, began)
            if info.ratings < self.settings.min_ratings:
                continue
            settled = clock - since >= self.settings.retrain_quiet_seconds
            if not settled and clock - began < self.settings.retrain_max_wait_seconds:
                continue
            if changes_since(info.snapshot_id, info.trained_snapshot_id) < self.settings.retrain_after_ratings:
                continue  # too few changes whatever the jobs say: no query for this user
            history = user_history(self.store, info.user)
            changes = due_changes(info, history)
            if changes < self.settings.retrain_after_ratings:
                continue
            if history.last_automatic_start is not None and now - history.last_automatic_start < interval:
                continue
            due.append((changes, info.user))
        for changes, user in sorted(due, key=lambda item: (-item[0], item[1])):
            try:
                self.runner.start(user, automatic=True)
            except TagrateError as exc:  # a request's job started first, or the user changed meanwhile
                log.info("automatic training for %s not started: %s", user, exc.message)
                if self.runner.busy():
                    return None
                continue
            log.info("automatic training started for %s after %d rating changes", user, changes)
            self._seen.pop(user, None)
            return user
        return None
