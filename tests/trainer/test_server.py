"""The trainer over gRPC against a real dataset service and a real rater:
validation, a whole run, publishing, stopping, a crash, a restart."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from tagrate_trainer.jobs import CRASHED_MESSAGE
from tagrate_trainer.runner import SHUTDOWN_MESSAGE

from .conftest import ENDLESS


def rpc_error(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kwargs)
    return info.value


def test_idle_trainer_status(trainer):
    status = trainer.status()
    assert (status.is_training, status.state, status.progress) == (False, "idle", 0.0)
    assert not status.HasField("last_job") and not status.HasField("current_user")


def test_refuses_unknown_users_bad_names_and_too_few_ratings(services, trainer):
    error = rpc_error(trainer.train, "nobody")
    assert error.code() == grpc.StatusCode.NOT_FOUND and "nobody" in error.details()
    assert rpc_error(trainer.train, "bad name!").code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rpc_error(trainer.train, "").code() == grpc.StatusCode.INVALID_ARGUMENT

    services.rate_scenes("few", 4)
    error = rpc_error(trainer.train, "few")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "4 ratings" in error.details() and "at least 10" in error.details()
    assert trainer.status().state == "idle"  # nothing was started


def test_min_ratings_is_a_setting(services, start_trainer):
    services.rate_scenes("enough", 4, offset=4)
    trainer = start_trainer(min_ratings=3)
    assert trainer.train("enough").is_training
    # The job runs; on three or four ratings no Spearman correlation can
    # clear the guard's 1.645 standard errors, so it publishes nothing.
    final = trainer.wait_finished()[-1]
    assert final.state == "failed" and "no candidate beat predicting the mean" in final.last_job.error


def test_a_whole_run_publishes_and_records_the_snapshot(services, trainer):
    services.rate_scenes("walt", 40)
    before = services.user("walt")
    assert services.head("walt") is None
    assert not services.dataset_state("walt").model_up_to_date

    started = trainer.train("walt")
    assert (started.is_training, started.state, started.current_user) == (True, "running", "walt")
    seen = trainer.wait_finished()
    final = seen[-1]
    progress = [status.progress for status in seen]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert (final.state, final.is_training) == ("succeeded", False)
    assert not final.HasField("current_user") and not final.HasField("eta_seconds")
    for name in ("spearman", "mae", "mean_spearman", "mean_mae", "train_examples", "heldout_examples"):
        assert name in final.metrics
    assert final.metrics["train_examples"] + final.metrics["heldout_examples"] == 40
    # Every candidate's cross-validated figures, the mean's, and the one selected.
    for name in ("ridge", "current", "mean"):
        assert {f"cv_{name}_spearman", f"cv_{name}_mae"} <= set(final.metrics)
    selected = [name.removeprefix("selected_") for name in final.metrics if name.startswith("selected_")]
    assert len(selected) == 1 and selected[0] in ("ridge", "current")
    assert final.metrics[f"cv_{selected[0]}_spearman"] > final.metrics["cv_threshold"]
    assert final.metrics[f"cv_{selected[0]}_mae"] < final.metrics["cv_mean_mae"]
    # The selected head beats predicting the mean on the held-out scenes too.
    assert final.metrics["spearman"] > 0.5 > final.metrics["mean_spearman"]
    assert final.metrics["mae"] < final.metrics["mean_mae"]
    assert final.last_job.user == "walt" and final.last_job.outcome == "succeeded"
    assert dict(final.last_job.metrics) == dict(final.metrics)

    head = services.head("walt")
    assert head is not None and head.kind in ("linear", "mlp")
    assert head.snapshot_id == before.snapshot_id
    assert dict(head.metrics) == dict(final.metrics)
    assert services.rate("walt", [services.scenes[0][0]]).model == "personal"
    assert services.dataset_state("walt").model_up_to_date
    assert services.user("walt").trained_snapshot_id == before.snapshot_id

    # The same ratings again: already trained, unless forced.
    error = rpc_error(trainer.train, "walt")
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "force" in error.details()
    assert trainer.train("walt", force=True).is_training
    assert trainer.wait_finished()[-1].state == "succeeded"
    assert services.head("walt").version != head.version

    # One more rating: not up to date any more, and training is allowed.
    services.add_ratings("walt", [(services.scenes[45][0], 0.5)])
    assert not services.dataset_state("walt").model_up_to_date
    assert trainer.train("walt").is_training
    trainer.wait_finished()


def test_a_second_job_is_refused_and_stop_publishes_nothing(services, start_trainer):
    services.rate_scenes("stella", 30, invert=True)
    quick = start_trainer()
    quick.train("stella")
    assert quick.wait_finished()[-1].state == "succeeded"
    old_head = services.head("stella")
    old_rating = services.rate("stella", [services.scenes[50][0]])
    old_trained = services.user("stella").trained_snapshot_id
    services.add_ratings("stella", [(services.scenes[50][0], 0.9)])

    slow = start_trainer(**ENDLESS)  # another trainer, same services
    slow.train("stella")
    running = slow.wait_epochs(2)
    assert running.is_training and running.epochs == ENDLESS["max_epochs"]
    assert running.HasField("eta_seconds") and running.eta_seconds > 0
    services.rate_scenes("sam", 10, offset=20)
    for user in ("sam", "stella"):
        error = rpc_error(slow.train, user)
        assert error.code() == grpc.StatusCode.ALREADY_EXISTS and "stella" in error.details()

    stopped = slow.stop()
    if stopped.state == "stopping":  # the job acknowledges at its next batch
        stopped = slow.wait_finished()[-1]
    assert (stopped.state, stopped.is_training) == ("stopped", False)
    assert stopped.last_job.outcome == "stopped" and not stopped.last_job.error
    assert services.head("stella").version == old_head.version
    assert list(services.rate("stella", [services.scenes[50][0]]).ratings) == list(old_rating.ratings)
    assert services.user("stella").trained_snapshot_id == old_trained

    error = rpc_error(slow.stop)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    # A new job may start after the stop.
    assert slow.train("stella").is_training
    slow.stop()


def test_stop_with_nothing_running(trainer):
    error = rpc_error(trainer.stop)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "nothing" in error.details()


def test_status_survives_a_restart(services, start_trainer, tmp_path):
    services.rate_scenes("rex", 20, offset=20)
    first = start_trainer(tmp_path / "shared")
    first.train("rex")
    done = first.wait_finished()[-1]
    assert done.state == "succeeded"

    again = start_trainer(tmp_path / "shared").status()
    assert (again.state, again.is_training) == ("succeeded", False)
    assert again.last_job.job_id == done.last_job.job_id
    assert dict(again.metrics) == dict(done.metrics)


def test_a_crash_mid_run_shows_failed_and_a_new_job_can_start(services, trainer_process):
    services.rate_scenes("carl", 20, offset=10)
    process, trainer = trainer_process(**ENDLESS)
    trainer.train("carl")
    trainer.wait_epochs(1)
    process.kill()  # SIGKILL: no chance to record anything

    process, trainer = trainer_process()
    status = trainer.status()
    assert (status.state, status.is_training) == ("failed", False)
    assert status.last_job.user == "carl" and status.last_job.outcome == "failed"
    assert status.last_job.error == CRASHED_MESSAGE
    assert trainer.train("carl").is_training
    assert trainer.wait_finished()[-1].state == "succeeded"


def test_shutdown_stops_a_running_job(services, trainer_process):
    services.rate_scenes("sid", 12, offset=30)
    process, trainer = trainer_process(**ENDLESS)
    trainer.train("sid")
    trainer.wait_epochs(1)
    assert process.terminate() == 0

    _, trainer = trainer_process()
    status = trainer.status()
    assert status.state == "stopped" and status.last_job.error == SHUTDOWN_MESSAGE


def test_global_head_and_the_comparison_with_it(services, trainer):
    services.rate_scenes("gina", 30, offset=5, invert=True)  # the opposite of everyone else's taste
    trainer.train("all")
    final = trainer.wait_finished()[-1]
    assert final.state == "succeeded", final.last_job.error
    assert final.metrics["train_examples"] + final.metrics["heldout_examples"] == services.user("all").ratings
    head = services.head("all")
    assert head is not None and head.snapshot_id.startswith("all:")
    assert services.user("all").trained_snapshot_id == head.snapshot_id
    # A user without a personal head is rated by the global one.
    services.rate_scenes("newbie", 1)
    assert services.rate("newbie", [services.scenes[0][0]]).model == "global"

    # Personal training now reports the global head's figures beside its own,
    # and the global head is what the residual and blend candidates build on
    # (they replace the prior candidate, the global head's linear copy).
    trainer.train("gina")
    final = trainer.wait_finished()[-1]
    assert final.state == "succeeded"
    assert {"global_spearman", "global_mae", "cv_global_spearman", "cv_global_mae"} <= set(final.metrics)
    assert {"cv_residual_spearman", "cv_residual_mae", "cv_blend_spearman", "cv_blend_mae"} <= set(final.metrics)
    assert "cv_prior_spearman" not in final.metrics
    assert final.metrics["cv_global_spearman"] < 0  # gina's taste is the opposite
    assert services.head("gina") is not None


def test_ratings_without_a_taste_publish_nothing(services, trainer):
    # Random levels for the scenes: no candidate beats predicting the mean.
    rng = np.random.default_rng(11)
    services.add_ratings("noisy", [(png, float(rng.integers(0, 7)) / 6) for png, _, _ in services.scenes[:40]])
    trainer.train("noisy")
    final = trainer.wait_finished()[-1]
    assert (final.state, final.last_job.outcome) == ("failed", "failed")
    assert "no candidate beat predicting the mean rating" in final.last_job.error
    assert "nothing was published" in final.last_job.error
    assert final.last_job.metrics["selected_none"] == 1.0
    assert {"cv_ridge_spearman", "cv_current_spearman", "cv_mean_mae"} <= set(final.last_job.metrics)
    assert services.head("noisy") is None
    # No model was trained on these ratings: still not up to date, and a new
    # job may start without force.
    assert not services.dataset_state("noisy").model_up_to_date
    assert not services.user("noisy").HasField("trained_snapshot_id")
    assert trainer.train("noisy").is_training
    trainer.wait_finished()


def test_images_without_feature_vectors_fail_the_job(services, trainer):
    from tests.trainer.scenes import scene

    services.rate_scenes("nofeat", 10, offset=40)
    services.add_ratings("nofeat", [(scene(0.3, seed=424242), 0.3)])  # never embedded
    trainer.train("nofeat")
    final = trainer.wait_finished()[-1]
    assert final.state == "failed" and final.last_job.error
    assert services.head("nofeat") is None


def test_the_next_job_starts_as_soon_as_the_last_one_is_seen_finished(services, trainer):
    services.rate_scenes("eager", 20, offset=12)
    for _ in range(4):
        assert trainer.train("eager", force=True).is_training
        assert trainer.wait_finished()[-1].state == "succeeded"
