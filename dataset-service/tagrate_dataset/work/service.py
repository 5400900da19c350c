"""The gRPC face of background work and the datasets' state
(``tagrate.dataset.v1.WorkService``): VerifyDatasets (whose models are
trained on their current ratings, the tagging, embedding and scoring still
owed, the work parked as failed) and RetryFailedWork. The work itself is
done by ``worker.py`` from the queue in ``queue.py``."""

from __future__ import annotations

import logging
from collections.abc import Callable

import grpc

from tagrate_common.errors import InvalidArgument
from tagrate_common.protos import work_pb2, work_pb2_grpc
from tagrate_common.timestamps import to_timestamp

from ..config import DatasetSettings
from ..db import Database
from ..models import WorkKind
from ..predictions import scoring
from . import queries
from . import queue as workqueue

log = logging.getLogger(__name__)

# What the server registers: the generated add function and the full service name.
REGISTRATION = (
    work_pb2_grpc.add_WorkServiceServicer_to_server,
    work_pb2.DESCRIPTOR.services_by_name["WorkService"].full_name,
)


def work_kind(value: str) -> WorkKind:
    try:
        return WorkKind(value)
    except ValueError:
        kinds = ", ".join(kind.value for kind in WorkKind)
        raise InvalidArgument(f"'kind' must be one of {kinds}, got {value[:40]!r}", "invalid_kind") from None


class WorkServicer(work_pb2_grpc.WorkServiceServicer):
    """``tagrate.dataset.v1.WorkService``."""

    def __init__(
        self, settings: DatasetSettings, db: Database, on_new_image: Callable[[], None] = lambda: None
    ) -> None:
        self.settings = settings
        self.db = db
        self.on_new_image = on_new_image

    def VerifyDatasets(self, request: work_pb2.VerifyDatasetsRequest, context: grpc.ServicerContext):
        with self.db.read() as session:
            state = queries.verify_datasets(session, self.settings.failed_work_listed)
            pending_predictions = scoring.pending_predictions(session)
        return work_pb2.VerifyDatasetsResponse(
            valid=state.valid,
            users=[
                work_pb2.UserDatasetState(
                    user=user.user,
                    ratings=user.ratings,
                    model_up_to_date=user.model_up_to_date,
                    trained_on_ratings=user.trained.ratings_count if user.trained else None,
                    trained_at=to_timestamp(user.trained.trained_at) if user.trained else None,
                    last_rating_at=to_timestamp(user.last_rating_at),
                )
                for user in state.users
            ],
            untagged_images=state.untagged_images,
            work=[
                work_pb2.WorkQueueState(kind=work.kind, pending=work.pending, failed=work.failed) for work in state.work
            ],
            failed_work=[
                work_pb2.FailedWork(
                    image=item.image, kind=item.kind, error=item.error, attempts=item.attempts, failed_by=item.failed_by
                )
                for item in state.failed_work
            ],
            pending_predictions=pending_predictions,
        )

    def RetryFailedWork(self, request: work_pb2.RetryFailedWorkRequest, context: grpc.ServicerContext):
        kind = work_kind(request.kind) if request.kind else None
        retried = self.db.write(lambda session: workqueue.retry_failed(session, kind))
        if retried:
            log.info("failed background work queued again", extra={"kind": request.kind or "all", "images": retried})
            self.on_new_image()  # wakes the worker
        return work_pb2.RetryFailedWorkResponse(retried=retried)
