"""Predictions on stored images: every stored image scored for every user
with a model, kept in ``predictions`` so that /getuserdata can filter, sort
by prediction and page in one query, with no model work at request time.

Scores come from the cached feature vectors, never from the backbone: the
rater's ScoreFeatures applies the heads to raw vectors, one stacked matrix
product per chunk, the same numbers /rate computes for the image.

Two kinds of durable work, drained by :class:`Scorer`'s own thread (its own
lane: a rater outage pauses scoring without holding up tagging or
embedding, and the other way round):

- ``prediction_jobs``: a published model (``RecordTrainedSnapshot``, see
  ``jobs.queue_rescoring``) rescores every stored image for its subject (a
  user; ``all``: every user without a personal model). Images go in id
  order, ``score_chunk_images`` vectors per call, and each chunk's rows are
  written in the same transaction that moves the job's resume point, so a
  crash of the rater or of this service loses nothing and repeats at most
  one chunk.
- ``pending_scores``: an image whose vector was just cached (written with
  the vector, ``images/crud.py``) is scored for every user with a
  model in one call: every personal head and the global head, stacked.

Which score is current: the version that serves a user is the one recorded
for them by ``RecordTrainedSnapshot`` (their own model's, else the global
model's). A listing joins only rows of that version, so after a publish the
old scores read as null (not as current) until the new model has rescored
them, and /verifydatasets counts them as ``pending_predictions``. Rows
carry the version the rater answered with, so a rater that serves another
version than the one recorded produces rows that are not shown either.

Several replicas may drain the same tables: the writes are idempotent
upserts, so two replicas working on one chunk cost time, not correctness.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import delete, func, update
from sqlmodel import Session, select

from tagrate_common.errors import DeadlineExceeded, Overloaded, TagrateError, Unavailable

from ..config import DatasetSettings
from ..db import Database
from ..models import (
    ALL_SUBJECT,
    Image,
    ImageFeatures,
    PendingScore,
    PredictedBy,
    Prediction,
    PredictionJob,
    TrainedSnapshot,
    User,
    utc_now,
    walked_by_image,
)
from ..peers import ExtractorInfo, Peers, SubjectScores
from ..work.worker import Backoff

log = logging.getLogger(__name__)

_OUTAGES = (Unavailable, DeadlineExceeded, Overloaded)


# ---- which model serves whom ------------------------------------------------


@dataclass(frozen=True)
class Serving:
    """The recorded model versions: each user's own, and the global one."""

    personal: dict[str, str]  # user name -> version
    global_version: str  # "" without a global model

    def version_for(self, user: str) -> str:
        return self.personal.get(user) or self.global_version


def serving(session: Session) -> Serving:
    rows = session.exec(
        select(TrainedSnapshot.subject, TrainedSnapshot.model_version).where(TrainedSnapshot.model_version != "")
    ).all()
    versions = dict(rows)
    global_version = versions.pop(ALL_SUBJECT, "")
    return Serving(versions, global_version)


def serving_version(session: Session, user: str) -> str:
    """The model version whose predictions are current for ``user`` ("": none)."""
    rows = session.exec(
        select(TrainedSnapshot.subject, TrainedSnapshot.model_version).where(
            TrainedSnapshot.subject.in_([user, ALL_SUBJECT]),  # type: ignore[attr-defined]
            TrainedSnapshot.model_version != "",
        )
    ).all()
    versions = dict(rows)
    return versions.get(user) or versions.get(ALL_SUBJECT, "")


def _users(session: Session) -> dict[str, int]:
    return dict(session.exec(select(User.name, User.id)).all())


def pending_predictions(session: Session) -> int:
    """Predictions owed to the current models: for each rescoring job, the
    images after its resume point times the users it scores for; for each
    image waiting to be scored, the users with a model."""
    state = serving(session)
    users = _users(session)
    without_personal = sum(1 for name in users if name not in state.personal)
    with_model = len(users) if state.global_version else sum(1 for name in users if name in state.personal)
    owed = 0
    for subject, after in session.exec(select(PredictionJob.subject, PredictionJob.after_image_id)).all():
        targets = without_personal if subject == ALL_SUBJECT else int(subject in users)
        if targets:
            left = session.exec(select(func.count()).select_from(Image).where(Image.id > after)).one()  # type: ignore[operator]
            owed += left * targets
    if with_model:
        owed += session.exec(select(func.count()).select_from(PendingScore)).one() * with_model
    return owed


# ---- writing ------------------------------------------------------------------


_UPSERT = (
    "INSERT INTO predictions (user_id, image_id, score, model_version, predicted_by, scored_at) "
    "SELECT {p}, {p}, {p}, {p}, {p}, {p} WHERE EXISTS (SELECT 1 FROM images WHERE id = {p}) "
    "ON CONFLICT (user_id, image_id) DO UPDATE SET score = excluded.score, model_version = excluded.model_version, "
    "predicted_by = excluded.predicted_by, scored_at = excluded.scored_at"
)


def _write(session: Session, user_ids: Sequence[int], image_ids: Sequence[int], answer: SubjectScores, now) -> None:
    """Upserts the rows of ``answer`` for each of ``user_ids``, for the
    images of ``image_ids`` still stored (a deleted image gets no row: the
    statement's EXISTS looks it up by primary key), with one statement
    executed for every row straight through the driver: the values are
    plain tuples, the time converted once. Through SQLAlchemy's executemany
    the per-row parameter processing and an IN list to find the deleted
    images cost 13 and 5 of 25 s per 100,000 rows (profiled on the 100k
    bench library); a multi-row VALUES statement cost even more to compile
    (5 of 8.5 s per 20,000 rows)."""
    if not user_ids or not image_ids:
        return
    connection = session.connection()
    dialect = connection.dialect
    column = Prediction.__table__.c.scored_at  # type: ignore[attr-defined]
    process = column.type.bind_processor(dialect)
    scored_at = process(now) if process is not None else now
    by = (PredictedBy.GLOBAL if answer.model == PredictedBy.GLOBAL else PredictedBy.PERSONAL).value
    scores = answer.scores.tolist()
    rows = [
        (user_id, image_id, score, answer.model_version, by, scored_at, image_id)
        for user_id in user_ids
        for image_id, score in zip(image_ids, scores, strict=True)
    ]
    connection.exec_driver_sql(_UPSERT.format(p="?" if dialect.paramstyle == "qmark" else "%s"), rows)


def vectors_statement(extractor: ExtractorInfo, image_ids=None, after: int | None = None, limit: int = 0):
    """(image id, vector) of ``extractor`` in image id order: of ``image_ids``,
    or the next ``limit`` after image id ``after`` (a rescoring chunk: one
    range of the primary key, see :func:`walked_by_image`)."""
    stmt = select(ImageFeatures.image_id, ImageFeatures.vector).where(
        walked_by_image(extractor.extractor_id), ImageFeatures.dim == extractor.dimensions
    )
    if image_ids is not None:
        stmt = stmt.where(ImageFeatures.image_id.in_(image_ids))  # type: ignore[attr-defined]
    if after is not None:
        stmt = stmt.where(ImageFeatures.image_id > after).limit(limit)
    return stmt.order_by(ImageFeatures.image_id)


# ---- the thread -----------------------------------------------------------------


class Scorer:
    """Keeps the stored predictions current, on a daemon thread until
    :meth:`stop`. A rater that cannot be reached (or fails) pauses the
    work with the same exponential backoff the other lanes use; claimed
    work is never lost, since it is only deleted with its results."""

    kind = "predict"

    def __init__(self, settings: DatasetSettings, db: Database, peers: Peers) -> None:
        self.db = db
        self.peers = peers
        self.chunk = settings.score_chunk_images
        self.poll_seconds = settings.work_poll_seconds
        self.backoff = Backoff(settings.work_backoff_initial_seconds, settings.work_backoff_max_seconds)
        self.stop_timeout = max(1.0, settings.shutdown_grace_seconds)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dataset-scorer", daemon=True)
        # A rescoring job walks its chunks back to back: the extractor the
        # rater runs is asked once per job, not once per chunk, and the next
        # chunk's vectors are read while the rater scores this one (the rater
        # is another process, so the two overlap on the machine's cores).
        # Both are dropped on any failure, and a prefetched chunk is used only
        # for the job position and extractor it was read for.
        self._extractor: ExtractorInfo | None = None
        self._prefetched: tuple[str, int, list] | None = None  # (extractor id, after, rows)
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dataset-scorer-read")

    @property
    def configured(self) -> bool:
        return bool(self.peers.rater.target)

    def start(self) -> None:
        if self.configured:
            self._thread.start()
        else:
            log.warning("no rater is configured: stored images are not scored until one is")

    def wake(self) -> None:
        """Look for work now (a model was published, vectors were stored)."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(self.stop_timeout)
            if self._thread.is_alive():
                log.warning("the scorer is still waiting on a call; leaving it behind")
        self._reader.shutdown(wait=False)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            busy = False
            if time.monotonic() >= self.backoff.retry_at:
                try:
                    busy = self.step() > 0
                except Exception as exc:  # the thread must outlive any failure
                    self._extractor, self._prefetched = None, None
                    self.backoff.failed(time.monotonic())
                    if self.backoff.failures == 1:
                        self._outage_started(exc)
                else:
                    if self.backoff.failures:
                        log.info("background scoring resumed after %d failed attempts", self.backoff.failures)
                    self.backoff.succeeded()
            if busy:
                continue
            wait = self.poll_seconds
            if self.backoff.failures:
                wait = min(wait, max(0.0, self.backoff.retry_at - time.monotonic()))
            self._wake.wait(wait)

    def _outage_started(self, exc: Exception) -> None:
        if isinstance(exc, _OUTAGES):
            log.warning("background scoring paused: %s; retrying with backoff, nothing is lost", exc)
        elif isinstance(exc, TagrateError):
            log.error("background scoring failed: %s; retrying with backoff", exc)
        else:
            log.exception("background scoring failed unexpectedly; retrying with backoff")

    # ---- one step ----

    def step(self) -> int:
        """Scores one chunk of new images, else one chunk of the oldest
        rescoring job; returns how many images it handled (0: nothing due).
        Raises (writing nothing of the chunk) when the rater fails."""
        with self.db.read() as session:
            new = session.exec(select(PendingScore.image_id).order_by(PendingScore.image_id).limit(self.chunk)).all()
            job = session.exec(select(PredictionJob).order_by(PredictionJob.enqueued_at).limit(1)).first()
        if not new and job is None:
            self._extractor, self._prefetched = None, None
            return 0
        if new:
            self._extractor, self._prefetched = None, None
            return self.score_new(self.peers.extractor(), list(new))
        assert job is not None
        if self._extractor is None:
            self._extractor = self.peers.extractor()
        return self.rescore(self._extractor, job.subject, job.model_version, job.after_image_id)

    def _chunk_after(self, extractor: ExtractorInfo, after: int) -> list:
        """The vectors of the next chunk after ``after``: prefetched when the
        previous chunk read them, else read now."""
        prefetched, self._prefetched = self._prefetched, None
        if prefetched is not None and prefetched[:2] == (extractor.extractor_id, after):
            return prefetched[2]
        with self.db.read() as session:
            return self._vectors(session, extractor, after=after)

    def _read_ahead(self, extractor: ExtractorInfo, after: int) -> list:
        with self.db.read() as session:
            return self._vectors(session, extractor, after=after)

    def _vectors(self, session: Session, extractor: ExtractorInfo, image_ids=None, after: int | None = None):
        return session.exec(vectors_statement(extractor, image_ids, after, self.chunk)).all()

    def score_new(self, extractor: ExtractorInfo, pending: list[int]) -> int:
        """Scores newly embedded images for every user with a model: every
        personal head and the global head in one call."""
        with self.db.read() as session:
            found = self._vectors(session, extractor, image_ids=pending)
            state = serving(session)
            users = _users(session)
        subjects = [name for name in state.personal if name in users]
        if state.global_version:
            subjects.append(ALL_SUBJECT)
        answers: list[SubjectScores] = []
        image_ids = [image_id for image_id, _ in found]
        if found and subjects:
            vectors = b"".join(vector for _, vector in found)
            answers = self.peers.score_features(extractor, subjects, vectors, len(found))

        def write(session: Session) -> None:
            now = utc_now()
            personal = {name for name in state.personal if name in users}
            for answer in answers:
                if answer.subject == ALL_SUBJECT:
                    targets = [uid for name, uid in users.items() if name not in personal]
                else:
                    targets = [users[answer.subject]]
                _write(session, targets, image_ids, answer, now)
            # Images without a vector of the current extractor are dropped
            # too: caching one for it queues them again.
            session.exec(delete(PendingScore).where(PendingScore.image_id.in_(pending)))  # type: ignore[attr-defined]

        self.db.write(write)
        log.debug("scored new images", extra={"images": len(image_ids), "subjects": len(answers)})
        return len(pending)

    def rescore(self, extractor: ExtractorInfo, subject: str, version: str, after: int) -> int:
        """Scores the next chunk of stored images (ids after ``after``) for
        a rescoring job, moving its resume point in the same transaction;
        deletes the finished job."""
        found = self._chunk_after(extractor, after)
        with self.db.read() as session:
            state = serving(session)
            users = _users(session)
        if not found:

            def finish(session: Session) -> None:
                session.exec(
                    delete(PredictionJob).where(
                        PredictionJob.subject == subject,  # type: ignore[arg-type]
                        PredictionJob.model_version == version,  # type: ignore[arg-type]
                        PredictionJob.after_image_id == after,  # type: ignore[arg-type]
                    )
                )

            self.db.write(finish)
            log.info("stored images rescored", extra={"subject": subject, "model": version})
            return 1
        if subject == ALL_SUBJECT:
            targets = [uid for name, uid in users.items() if name not in state.personal]
        else:
            targets = [users[subject]] if subject in users else []
        image_ids = [image_id for image_id, _ in found]
        last = image_ids[-1]
        ahead = self._reader.submit(self._read_ahead, extractor, last)
        answers = []
        try:
            if targets:
                vectors = b"".join(vector for _, vector in found)
                answers = self.peers.score_features(extractor, [subject], vectors, len(found))
        finally:
            next_rows = ahead.result()  # a failed read raises here: nothing of this chunk is written
        self._prefetched = (extractor.extractor_id, last, next_rows)

        def write(session: Session) -> None:
            moved = session.exec(
                update(PredictionJob)
                .where(
                    PredictionJob.subject == subject,  # type: ignore[arg-type]
                    PredictionJob.model_version == version,  # type: ignore[arg-type]
                    PredictionJob.after_image_id == after,  # type: ignore[arg-type]
                )
                .values(after_image_id=last)
            )
            if not moved.rowcount:  # type: ignore[attr-defined]
                return  # a newer publish restarted the job, or another replica did this chunk
            now = utc_now()
            for answer in answers:
                _write(session, targets, image_ids, answer, now)

        self.db.write(write)
        return len(found)
