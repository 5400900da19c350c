"""Automatic retraining against a real dataset service and a real rater:
enough rating changes train a user's model with no TrainUser call, the
threshold and the interval hold, a request's job stops an automatic one, and
a SIGKILL during an automatic job loses nothing: the restarted trainer runs
it again."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlmodel import select

from tagrate_common.protos import training_data_pb2, users_pb2
from tagrate_trainer.autotrain import changes_since
from tagrate_trainer.jobs import ACTIVE_STATES, CRASHED_MESSAGE, JobStore, TrainingJob

from .conftest import ENDLESS
from .services import Services

# Polls often, so the tests wait little.
AUTO = {"retrain_after_ratings": 10, "retrain_poll_seconds": 0.2, "retrain_quiet_seconds": 0.3}


@pytest.fixture(autouse=True)
def others_up_to_date(services: Services) -> None:
    """Every user other tests left (the scene pool's among them) counts as
    trained on their current ratings, so the automatic trainers here train
    only this test's users."""
    reply = services.dataset.users.ListUserSnapshots(users_pb2.ListUserSnapshotsRequest(only_untrained=True))
    for info in reply.users:
        services.dataset.training.RecordTrainedSnapshot(
            training_data_pb2.RecordTrainedSnapshotRequest(
                user=info.user, snapshot_id=info.snapshot_id, model_version="elsewhere"
            ),
            timeout=30,
        )


def jobs_of(data_dir: Path, user: str) -> list[TrainingJob]:
    """Every job of ``user`` in a trainer's jobs database, oldest first."""
    store = JobStore.open(f"sqlite:///{data_dir / 'trainer' / 'jobs.db'}")
    try:
        with store.db.read() as session:
            jobs = session.exec(select(TrainingJob).where(TrainingJob.user == user)).all()
            return sorted(jobs, key=lambda job: job.started_at)
    finally:
        store.dispose()


def ended_jobs_of(data_dir: Path, user: str, timeout: float = 30.0) -> list[TrainingJob]:
    """:func:`jobs_of` once none of them is recorded as still running."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = jobs_of(data_dir, user)
        if all(job.state not in ACTIVE_STATES for job in jobs):
            return jobs
        assert time.monotonic() < deadline, f"{user}'s jobs still running after {timeout} s: {jobs}"
        time.sleep(0.05)


def wait_trained(services: Services, user: str, timeout: float = 90.0) -> None:
    """Until the user's model is trained on their current ratings."""
    deadline = time.monotonic() + timeout
    while True:
        info = services.user(user)
        if info.HasField("trained_snapshot_id") and info.trained_snapshot_id == info.snapshot_id:
            return
        assert time.monotonic() < deadline, f"{user}'s model was never trained on the current ratings: {info}"
        time.sleep(0.1)


def test_changes_since_counts_every_added_changed_or_removed_rating():
    assert changes_since("7:25:20", "7:10:10") == 15
    assert changes_since("7:25:20", None) == 25  # never trained: every change counts
    assert changes_since("7:25:20", "8:3:3") == 25  # another user's id (a name used again)
    assert changes_since("7:25:20", "7:25:20") == 0
    assert changes_since("garbage", "7:1:1") == 0


def test_enough_changes_train_with_no_request_and_the_threshold_and_interval_hold(services, start_trainer, tmp_path):
    data_dir = tmp_path / "auto"
    trainer = start_trainer(data_dir, retrain_min_interval_seconds=3600, **AUTO)
    services.rate_scenes("otto", 9, offset=0)
    time.sleep(1.0)  # five polls: 9 ratings are below both the threshold and the minimum
    assert jobs_of(data_dir, "otto") == [] and services.head("otto") is None

    services.rate_scenes("otto", 3, offset=9)  # 12 ratings: due
    wait_trained(services, "otto")
    (job,) = jobs_of(data_dir, "otto")
    assert job.automatic and job.state == "succeeded" and job.snapshot_id == services.user("otto").snapshot_id
    head = services.head("otto")
    assert head is not None and head.version == job.model_version
    trainer.wait_finished()

    # 15 more changes, but within the interval: no second training.
    services.rate_scenes("otto", 15, offset=12)
    time.sleep(1.5)
    assert len(jobs_of(data_dir, "otto")) == 1


def test_the_interval_lets_a_second_training_through_and_small_changes_wait(services, start_trainer, tmp_path):
    data_dir = tmp_path / "auto"
    start_trainer(data_dir, retrain_min_interval_seconds=0, **AUTO)
    services.rate_scenes("paz", 12, offset=20)
    wait_trained(services, "paz")
    services.rate_scenes("paz", 5, offset=32)  # 5 changes: fewer than 10
    time.sleep(1.5)
    assert len(jobs_of(data_dir, "paz")) == 1
    services.rate_scenes("paz", 5, offset=37)  # 10 changes since the training
    wait_trained(services, "paz")
    jobs = ended_jobs_of(data_dir, "paz")  # the head is published before the job is recorded as succeeded
    assert [job.automatic for job in jobs] == [True, True] and jobs[-1].state == "succeeded"


def test_a_request_stops_a_running_automatic_job(services, start_trainer, tmp_path):
    data_dir = tmp_path / "auto"
    trainer = start_trainer(data_dir, retrain_min_interval_seconds=3600, **AUTO, **ENDLESS)
    services.rate_scenes("quin", 12, offset=40)
    trainer.wait(lambda s: s.is_training and s.current_user == "quin" and s.epoch >= 1)
    status = trainer.train("quin")  # at once: the automatic job makes way
    assert status.is_training and status.current_user == "quin"
    trainer.stop()
    trainer.wait_finished()
    automatic, requested = jobs_of(data_dir, "quin")
    assert (automatic.automatic, automatic.state) == (True, "stopped")
    assert (requested.automatic, requested.state) == (False, "stopped")


def test_a_sigkill_during_an_automatic_job_loses_nothing_and_it_runs_again(services, trainer_process, tmp_path):
    auto_env = {**AUTO, "retrain_min_interval_seconds": 3600}
    process, trainer = trainer_process(**auto_env, **ENDLESS)
    services.rate_scenes("rudi", 14, offset=45)
    trainer.wait(lambda s: s.is_training and s.current_user == "rudi" and s.epoch >= 1)
    process.kill()  # SIGKILL: nothing recorded
    assert services.head("rudi") is None

    # The restarted trainer (same jobs database) trains rudi again at once:
    # the crashed job counts neither as an attempt nor for the interval.
    process, trainer = trainer_process(**auto_env)
    wait_trained(services, "rudi")
    crashed, again = jobs_of(tmp_path / "process-data", "rudi")
    assert (crashed.state, crashed.error, crashed.automatic) == ("failed", CRASHED_MESSAGE, True)
    assert (again.state, again.automatic) == ("succeeded", True)
    assert services.head("rudi").version == again.model_version


def test_a_burst_of_ratings_gives_one_training_on_all_of_them(services, start_trainer, tmp_path):
    data_dir = tmp_path / "auto"
    start_trainer(data_dir, retrain_min_interval_seconds=3600, **{**AUTO, "retrain_quiet_seconds": 1.5})
    services.rate_scenes("sam", 40, offset=0)  # 40 ratings, far past the threshold, as fast as they come
    wait_trained(services, "sam")
    (job,) = jobs_of(data_dir, "sam")
    assert job.automatic and job.snapshot_id == services.user("sam").snapshot_id
    assert job.metrics["train_examples"] + job.metrics["heldout_examples"] == 40
