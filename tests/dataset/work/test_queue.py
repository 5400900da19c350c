"""The durable work queue and the background worker, against a real tagger
serving the default model, on SQLite and PostgreSQL: new images are tagged
without anyone asking, a tagger outage delays but loses nothing, poison
images do not block the queue, and the worker stops with the server."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy import text

from tagrate_dataset import records
from tagrate_dataset.db import Database
from tagrate_dataset.models import WorkKind
from tagrate_dataset.tags import crud as tags_crud
from tagrate_dataset.work import queue as workqueue
from tagrate_dataset.work.worker import Backoff
from tests.dataset.conftest import Served
from tests.dataset.peers import add_rating, dataset_service, images, start_tagger, tagged, wait_for
from tests.support import free_port


def work_rows(served: Served) -> list[tuple[str, str, str]]:
    """(image name, kind, state) of every queued item, sorted."""
    with served.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT i.name, w.kind, w.state FROM work_items w JOIN images i ON i.id = w.image_id ORDER BY 1, 2")
        ).all()
    return [tuple(row) for row in rows]


def test_new_images_are_tagged_in_the_background(
    tmp_path: Path, database_url: str, tagger_addr: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="tagrate_dataset.work.worker")
    options = {"tagger_addr": tagger_addr, "work_log_summary_seconds": 0.5}
    with dataset_service(tmp_path, database_url, **options) as (served, dataset):
        names = [
            add_rating(served, user, data) for user, data in zip(("alice", "bob", "alice"), images(3), strict=True)
        ]
        for name in names:
            wait_for(f"{name} to be tagged", lambda name=name: tagged(served, name))

        # A batch is a DEBUG line; INFO has a summary at most every half second.
        def done(level: int) -> list[logging.LogRecord]:
            return [r for r in caplog.records if r.levelno == level and r.getMessage() == "background tag work done"]

        wait_for("the INFO summary", lambda: sum(r.images for r in done(logging.INFO)) == 3)  # type: ignore[attr-defined]
        assert sum(r.images for r in done(logging.DEBUG)) == 3  # type: ignore[attr-defined]
        assert len(done(logging.INFO)) <= len(done(logging.DEBUG))
        # Only the embedding work is left (no rater is configured), waiting.
        wait_for("the tag work to be done", lambda: all(kind == "embed" for _, kind, _ in work_rows(served)))
        assert sorted(work_rows(served)) == sorted((name, "embed", "pending") for name in names)
        worker = dataset.worker
        assert worker is not None
    # The worker stopped with the server.
    assert not worker._thread.is_alive()


def test_images_stored_before_the_queue_existed_are_caught_up(
    tmp_path: Path, database_url: str, tagger_addr: str
) -> None:
    with dataset_service(tmp_path, database_url, background_work=False) as (served, _):
        names = [add_rating(served, "alice", data) for data in images(2)]
        with served.engine.begin() as conn:
            conn.execute(text("DELETE FROM work_items"))  # as if stored by a version without the queue
    with dataset_service(tmp_path, database_url, tagger_addr=tagger_addr) as (served, _):
        for name in names:
            wait_for(f"{name} to be tagged", lambda name=name: tagged(served, name))


def test_a_tagger_outage_delays_tagging_and_loses_nothing(
    tmp_path: Path, database_url: str, vision_model, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    tagger, addr = start_tagger(vision_model, port=port)
    try:
        with dataset_service(tmp_path, database_url, tagger_addr=addr, tagger_timeout_seconds=5) as (served, dataset):
            first = add_rating(served, "alice", images(1)[0])
            wait_for("the first image to be tagged", lambda: tagged(served, first))
            tagger.stop(0)

            caplog.set_level(logging.INFO, logger="tagrate_dataset.work.worker")
            later = [add_rating(served, "alice", data) for data in images(2, start=1)]  # ratings still succeed
            assert dataset.worker is not None
            lane = next(lane for lane in dataset.worker.lanes if lane.work.kind is WorkKind.TAG)
            wait_for("several failed attempts", lambda: lane.backoff.failures >= 3)
            assert not any(tagged(served, name) for name in later)
            assert [(name, kind, state) for name, kind, state in work_rows(served) if kind == "tag"] == sorted(
                (name, "tag", "pending") for name in later
            )

            tagger, _ = start_tagger(vision_model, port=port)  # back, on the same address
            for name in later:
                wait_for(f"{name} to be tagged after the outage", lambda name=name: tagged(served, name))
            paused = [r for r in caplog.records if "tag work paused" in r.getMessage()]
            resumed = [r for r in caplog.records if "tag work resumed" in r.getMessage()]
            assert len(paused) == 1 and len(resumed) == 1  # once per outage, not per attempt
            assert "tagger" in paused[0].getMessage()
    finally:
        tagger.stop(0)


def test_a_poison_image_is_marked_failed_and_does_not_block_the_queue(
    tmp_path: Path, database_url: str, vision_model
) -> None:
    tagger, addr = start_tagger(vision_model, max_image_pixels=64 * 64)
    try:
        with dataset_service(tmp_path, database_url, tagger_addr=addr, tag_batch_size=8) as (served, _):
            poison = add_rating(served, "alice", images(1, start=7, size=(200, 150))[0])
            good = [add_rating(served, "bob", data) for data in images(3)]
            for name in good:
                wait_for(f"{name} to be tagged", lambda name=name: tagged(served, name))
            wait_for("the poison image's work to fail", lambda: (poison, "tag", "failed") in work_rows(served))
            assert tagged(served, poison) is None
            with served.engine.connect() as conn:
                error = conn.execute(text("SELECT error FROM work_items WHERE kind = 'tag'")).scalar_one()
            assert "pixel limit" in error
    finally:
        tagger.stop(0)


# ---- the queue itself (no model service) ----


def test_claims_are_leased_released_and_completed(served: Served) -> None:
    names = [add_rating(served, "alice", data) for data in images(3)]
    db = Database(served.engine)
    first = db.write(lambda s: workqueue.claim(s, WorkKind.TAG, 2, 60, "model@1"))
    assert [image.name for image in first.images] == names[:2]  # oldest first
    # Leased items are not handed to a second claimer.
    second = db.write(lambda s: workqueue.claim(s, WorkKind.TAG, 5, 60, "model@1"))
    assert [image.name for image in second.images] == [names[2]]
    assert db.write(lambda s: workqueue.claim(s, WorkKind.TAG, 5, 60, "model@1")).images == []
    # Given back after an outage: due again at once.
    db.write(lambda s: workqueue.release(s, WorkKind.TAG, [image.image_id for image in first.images]))
    again = db.write(lambda s: workqueue.claim(s, WorkKind.TAG, 5, 60, "model@1"))
    assert [image.image_id for image in again.images] == [image.image_id for image in first.images]
    # An expired lease (a worker died mid-batch) makes the item due again.
    lapsed = db.write(lambda s: workqueue.claim(s, WorkKind.EMBED, 1, -1.0, "extractor@1"))
    assert db.write(lambda s: workqueue.claim(s, WorkKind.EMBED, 1, 60, "extractor@1")).images == lapsed.images


def test_failed_work_is_retried_alone_with_backoff_then_parked(served: Served) -> None:
    """Each claim is an attempt; a failed call gives its items back with a
    backoff, after which each is claimed alone (ahead of fresh work) until it
    is parked at the limit. A busy service's give-back charges nothing."""
    names = [add_rating(served, "alice", data) for data in images(3)]
    db = Database(served.engine)

    def claim(limit: int = 5) -> list[str]:
        return [image.name for image in db.write(lambda s: workqueue.claim(s, WorkKind.TAG, limit, 60, "m@1")).images]

    def retry_later(claimed: list[str], wait: float) -> list[workqueue.Retry]:
        ids = db.write(lambda s: [records.require_image(s, name).id for name in claimed])
        return db.write(lambda s: workqueue.retry_later(s, WorkKind.TAG, ids, "m@1", "the tagger died", 2, wait))

    assert claim(2) == names[:2]
    retries = retry_later(names[:2], wait=60.0)  # the batch failed: not due for a minute
    assert [(r.image, r.attempts, r.parked, r.retry_in) for r in retries] == [
        (names[0], 1, False, 60.0),
        (names[1], 1, False, 60.0),
    ]
    assert claim() == [names[2]]  # only the fresh one is due
    db.write(lambda s: workqueue.release(s, WorkKind.TAG, [records.require_image(s, names[2]).id]))  # busy: uncharged
    with served.engine.begin() as conn:
        conn.execute(text("UPDATE work_items SET retry_at = NULL WHERE kind = 'tag'"))  # the backoff ran out
    # Work that failed before is claimed one at a time, before fresh work.
    assert [claim(), claim(), claim()] == [[names[0]], [names[1]], [names[2]]]
    retries = retry_later(names, wait=1.0)
    assert [(r.image, r.attempts, r.parked) for r in retries] == [
        (names[0], 2, True),
        (names[1], 2, True),
        (names[2], 1, False),  # its release above did not count
    ]
    with served.engine.connect() as conn:
        rows = conn.execute(text("SELECT state, failed_by, error FROM work_items WHERE kind = 'tag'")).all()
    assert sorted(tuple(row) for row in rows) == [
        ("failed", "m@1", "the tagger died"),
        ("failed", "m@1", "the tagger died"),
        ("pending", "", "the tagger died"),
    ]


def test_a_new_model_requeues_what_it_has_not_done(served: Served) -> None:
    """Work counts per model: images tagged by an older model are queued
    again for the new one, and refusals by the older model get a retry."""
    names = [add_rating(served, "alice", data) for data in images(3)]
    db = Database(served.engine)
    with served.engine.begin() as conn:
        conn.execute(text("DELETE FROM work_items WHERE kind = 'tag'"))

    def tag_with(model: str, name: str) -> None:
        db.write(lambda s: tags_crud.put_image_tags(s, name, model, 0.5, {"cat": 0.9}))

    tag_with("model@1", names[0])
    tag_with("model@1", names[1])
    image_id = db.write(lambda s: records.require_image(s, names[2]).id)
    db.write(lambda s: workqueue.fail(s, WorkKind.TAG, image_id, "model@1", "too many pixels"))

    # The same model: only what it has not done and has not refused.
    assert db.write(lambda s: workqueue.enqueue_missing(s, WorkKind.TAG, "model@1")) == 0
    # A new model: everything again, the refused image included.
    assert db.write(lambda s: workqueue.enqueue_missing(s, WorkKind.TAG, "model@2")) == 3
    assert [row for row in work_rows(served) if row[1] == "tag"] == sorted((name, "tag", "pending") for name in names)
    # An image the claimer finds already done is completed, not handed out.
    tag_with("model@2", names[0])
    claim = db.write(lambda s: workqueue.claim(s, WorkKind.TAG, 5, 60, "model@2"))
    assert claim.already_done == 1 and sorted(image.name for image in claim.images) == sorted(names[1:])


def test_backoff_doubles_up_to_its_maximum_and_resets() -> None:
    backoff = Backoff(initial=1.0, maximum=30.0)
    waits = []
    for _ in range(7):
        backoff.failed(now=100.0)
        waits.append(backoff.retry_at - 100.0)
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    backoff.failures = 5000  # a very long outage stays at the maximum
    backoff.failed(now=0.0)
    assert backoff.retry_at == 30.0
    backoff.succeeded()
    assert (backoff.failures, backoff.retry_at) == (0, 0.0)
