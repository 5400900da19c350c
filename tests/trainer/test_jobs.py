"""Job records on SQLite and PostgreSQL: saved, found again, and recovered
after a crash; the status they add up to."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tagrate_trainer.jobs import (
    CRASHED_MESSAGE,
    FAILED,
    RUNNING,
    STOPPING,
    SUCCEEDED,
    JobStore,
    TrainerStatus,
    TrainingJob,
)


def test_jobs_are_saved_updated_and_found(database_url):
    store = JobStore.open(database_url)
    try:
        start = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        old = TrainingJob(user="alice", state=SUCCEEDED, started_at=start, metrics={"spearman": 0.5})
        store.save(old)
        new = TrainingJob(user="bob", started_at=start + timedelta(minutes=1), epochs=200)
        store.save(new)
        assert store.latest().id == new.id
        assert store.latest(finished_only=True).id == old.id

        new.progress, new.epoch, new.loss, new.metrics = 0.5, 7, 0.02, {"mae": 0.1}
        store.save(new)
        again = store.get(new.id)
        assert (again.progress, again.epoch, again.loss, again.metrics) == (0.5, 7, 0.02, {"mae": 0.1})
        assert again.started_at.replace(tzinfo=UTC) == start + timedelta(minutes=1)
        # A new store on the same database sees the same jobs.
        other = JobStore.open(database_url)
        assert other.get(old.id).metrics == {"spearman": 0.5}
        other.dispose()
    finally:
        store.dispose()


def test_recover_marks_cut_off_jobs_failed(database_url):
    store = JobStore.open(database_url)
    try:
        running, stopping = TrainingJob(user="a", state=RUNNING), TrainingJob(user="b", state=STOPPING)
        done = TrainingJob(user="c", state=SUCCEEDED)
        for job in (running, stopping, done):
            store.save(job)
        assert store.recover() == 2
        for job in (running, stopping):
            found = store.get(job.id)
            assert (found.state, found.error) == (FAILED, CRASHED_MESSAGE)
            assert found.finished_at is not None
        assert store.get(done.id).state == SUCCEEDED
        assert store.recover() == 0
    finally:
        store.dispose()


def test_status_of_a_running_and_a_finished_job():
    assert TrainerStatus.of(None, None).state == "idle"
    finished = TrainingJob(user="alice", state=SUCCEEDED, progress=1.0, metrics={"spearman": 0.9})
    running = TrainingJob(user="bob", state=RUNNING, progress=0.3, epoch=4, epochs=200, eta_seconds=3.0)

    status = TrainerStatus.of(running, finished)
    assert (status.is_training, status.state, status.current_user, status.epoch) == (True, RUNNING, "bob", 4)
    assert status.eta_seconds == 3.0
    assert status.last_job is not None and status.last_job.user == "alice"

    status = TrainerStatus.of(finished, finished)
    assert (status.is_training, status.state, status.current_user, status.progress) == (False, SUCCEEDED, None, 1.0)
    assert status.metrics == {"spearman": 0.9}
    assert status.last_job is not None and status.last_job.outcome == SUCCEEDED
