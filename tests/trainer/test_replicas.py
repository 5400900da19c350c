"""Trainer replicas sharing one PostgreSQL jobs table: one job at a time
across them, status and stop through any replica, a job whose replica was
killed taken over by another once its lease expired, a graceful shutdown
handing its job over at once."""

from __future__ import annotations

import grpc
import pytest
from sqlalchemy import text

from tagrate_trainer.claims import MAX_ATTEMPTS, JobClaims
from tagrate_trainer.jobs import RUNNING, JobStore, TrainingJob
from tagrate_trainer.server import create_server

from .conftest import ENDLESS, Trainer, trainer_settings


@pytest.fixture
def jobs_url(make_pg_database) -> str:
    return make_pg_database()


def test_one_job_at_a_time_across_replicas_and_stop_through_either(services, start_trainer, jobs_url, tmp_path):
    services.rate_scenes("rina", 12, offset=40)
    services.rate_scenes("rudi", 12, offset=41)
    one = start_trainer(tmp_path / "one", database_url=jobs_url, **ENDLESS)
    two = start_trainer(tmp_path / "two", database_url=jobs_url, **ENDLESS)
    one.train("rina")
    one.wait_epochs(1)
    seen = two.wait(lambda s: s.epoch >= 1)[-1]
    assert (seen.is_training, seen.current_user) == (True, "rina")
    for trainer, user in ((two, "rudi"), (two, "rina"), (one, "rudi")):
        with pytest.raises(grpc.RpcError) as error:
            trainer.train(user)
        assert error.value.code() == grpc.StatusCode.ALREADY_EXISTS
    two.stop()  # the job runs on the other replica
    for trainer in (one, two):
        done = trainer.wait_finished()[-1]
        assert (done.state, done.last_job.user) == ("stopped", "rina")
    assert two.train("rudi").current_user == "rudi"
    assert one.wait(lambda s: s.current_user == "rudi")[-1].is_training
    one.stop()
    assert two.wait_finished()[-1].last_job.user == "rudi"


def test_a_killed_replicas_job_is_taken_over_and_finishes(services, trainer_process, start_trainer, jobs_url, tmp_path):
    services.rate_scenes("tara", 20, offset=30)
    lease = {"database_url": jobs_url, "job_lease_seconds": 1.5}
    process, doomed = trainer_process(**lease, **ENDLESS)
    doomed.train("tara")
    doomed.wait_epochs(1)
    survivor = start_trainer(tmp_path / "survivor", **lease)
    process.kill()  # SIGKILL: no chance to hand anything over
    statuses = survivor.wait(lambda s: s.state == "succeeded", timeout=120)
    assert any(s.is_training and s.current_user == "tara" for s in statuses)
    done = statuses[-1]
    assert done.last_job.user == "tara" and done.last_job.outcome == "succeeded"
    assert services.head("tara") is not None  # published by the survivor
    store = JobStore.open(jobs_url)
    try:
        job = store.get(done.last_job.job_id)
        assert job.attempts == 2 and job.owner != survivor.target
    finally:
        store.dispose()


def test_a_graceful_shutdown_hands_the_job_over(services, start_trainer, jobs_url, tmp_path):
    services.rate_scenes("gus", 20, offset=35)
    settings = trainer_settings(services, tmp_path / "leaving", database_url=jobs_url, job_lease_seconds=60, **ENDLESS)
    server = create_server(settings)
    leaving = Trainer(f"127.0.0.1:{server.start()}")
    try:
        leaving.train("gus")
        leaving.wait_epochs(1)
        staying = start_trainer(tmp_path / "staying", database_url=jobs_url, job_lease_seconds=1.5)
    finally:
        leaving.close()
        server.stop(1.0)  # as SIGTERM does: the job is handed back, not stopped
    # Taken over within a renewal interval, not after the leaving replica's 60 s lease.
    statuses = staying.wait(lambda s: s.state == "succeeded", timeout=45)
    assert statuses[-1].last_job.user == "gus"
    assert not any(s.state == "stopped" for s in statuses)


def test_claims_fence_the_old_owner_and_give_up_after_max_attempts(jobs_url):
    store = JobStore.open(jobs_url)
    try:
        first, second = JobClaims(store, "first", 60), JobClaims(store, "second", 60)
        job = TrainingJob(user="fenced")
        assert first.insert(job) is None
        assert second.insert(TrainingJob(user="other")).id == job.id  # one job at a time
        assert second.claim_expired() is None  # the lease holds
        expire = text("UPDATE training_jobs SET lease_expires_at = now() - interval '1 second'")
        store.db.write(lambda s: s.execute(expire))
        taken = second.claim_expired()
        assert (taken.id, taken.owner, taken.attempts, taken.state) == (job.id, "second", 2, RUNNING)
        job.progress = 0.9
        assert first.save(job) is None and first.renew(job.id) is None  # fenced out
        assert store.get(job.id).progress == 0.0
        for attempt in range(2, MAX_ATTEMPTS):
            store.db.write(lambda s: s.execute(expire))
            assert first.claim_expired().attempts == attempt + 1
        store.db.write(lambda s: s.execute(expire))
        assert second.claim_expired() is None
        gave_up = store.get(job.id)
        assert gave_up.state == "failed" and f"{MAX_ATTEMPTS} times" in gave_up.error
    finally:
        store.dispose()
