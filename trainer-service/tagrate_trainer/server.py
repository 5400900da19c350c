"""The trainer's gRPC face: decode the request, call :class:`JobRunner`,
encode the answer. Errors are TagrateErrors raised by the domain code; the
shared server interceptor maps them to status codes."""

from __future__ import annotations

import logging

import grpc

from tagrate_common.database import is_sqlite
from tagrate_common.grpc_server import GrpcServer
from tagrate_common.protos import trainer_pb2, trainer_pb2_grpc
from tagrate_common.timestamps import to_timestamp
from tagrate_common.vision.loaders import set_torch_threads

from .autotrain import AutoRetrainer
from .config import TrainerSettings
from .jobs import JobStore, JobSummary, TrainerStatus
from .peers import Peers
from .published import GlobalHeadCopies
from .runner import JobRunner
from .shared_runner import SharedJobRunner
from .taught_loop import TaughtTagLearner

log = logging.getLogger(__name__)

SERVICE_NAME = trainer_pb2.DESCRIPTOR.services_by_name["TrainerService"].full_name


def job_summary(summary: JobSummary) -> trainer_pb2.JobSummary:
    return trainer_pb2.JobSummary(
        job_id=summary.job_id,
        user=summary.user,
        outcome=summary.outcome,
        metrics=summary.metrics,
        error=summary.error or "",
        started_at=to_timestamp(summary.started_at),
        finished_at=to_timestamp(summary.finished_at),
    )


def trainer_status(status: TrainerStatus) -> trainer_pb2.TrainerStatus:
    return trainer_pb2.TrainerStatus(
        is_training=status.is_training,
        state=status.state,
        current_user=status.current_user,
        progress=status.progress,
        epoch=status.epoch,
        epochs=status.epochs,
        loss=status.loss,
        metrics=status.metrics,
        started_at=to_timestamp(status.started_at),
        eta_seconds=status.eta_seconds,
        last_job=job_summary(status.last_job) if status.last_job is not None else None,
    )


class TrainerServicer(trainer_pb2_grpc.TrainerServiceServicer):
    """``tagrate.trainer.v1.TrainerService`` over a :class:`JobRunner`."""

    def __init__(self, runner: JobRunner) -> None:
        self.runner = runner

    def TrainUser(self, request: trainer_pb2.TrainUserRequest, context: grpc.ServicerContext):
        status = self.runner.start(request.user, force=request.force)
        return trainer_pb2.TrainUserResponse(status=trainer_status(status))

    def GetStatus(self, request: trainer_pb2.GetStatusRequest, context: grpc.ServicerContext):
        return trainer_status(self.runner.status())

    def StopTraining(self, request: trainer_pb2.StopTrainingRequest, context: grpc.ServicerContext):
        return trainer_pb2.StopTrainingResponse(status=trainer_status(self.runner.stop()))


def create_server(settings: TrainerSettings) -> GrpcServer:
    """The trainer, ready to ``start()``: the jobs database is opened (and
    jobs a crash cut off are marked failed) before the server can bind."""
    set_torch_threads(settings.torch_threads)  # off the main thread, see there
    store = JobStore.open(settings.database_url)
    peers = Peers(settings)
    runner_cls = JobRunner if is_sqlite(store.engine) else SharedJobRunner
    runner = runner_cls(settings, store, peers, GlobalHeadCopies(settings.global_head_store()))
    runner.recover()
    learner = TaughtTagLearner(settings, peers)
    learner.start()
    autotrain = AutoRetrainer(settings, runner, store, peers)
    autotrain.start()

    def shutdown() -> None:
        learner.stop()
        autotrain.close()
        runner.close()
        peers.close()
        store.dispose()

    servicer = TrainerServicer(runner)
    return GrpcServer(
        "trainer",
        settings,
        [(trainer_pb2_grpc.add_TrainerServiceServicer_to_server, servicer, SERVICE_NAME)],
        on_shutdown=shutdown,
    )
