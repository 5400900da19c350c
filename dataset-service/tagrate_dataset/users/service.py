"""The gRPC face of users (``tagrate.dataset.v1.UserService``): a user's
ratings count and snapshots, every user's name, and a user's statistics.
Users are created by their first rating (``ratings/``)."""

from __future__ import annotations

import logging

import grpc

from tagrate_common import validation
from tagrate_common.protos import users_pb2, users_pb2_grpc
from tagrate_common.timestamps import to_timestamp

from ..db import Database
from . import crud

log = logging.getLogger(__name__)

# What the server registers: the generated add function and the full service name.
REGISTRATION = (
    users_pb2_grpc.add_UserServiceServicer_to_server,
    users_pb2.DESCRIPTOR.services_by_name["UserService"].full_name,
)


def user_info(summary: crud.UserSummary) -> users_pb2.UserInfo:
    return users_pb2.UserInfo(
        user=summary.user,
        ratings=summary.ratings,
        snapshot_id=summary.snapshot_id,
        trained_snapshot_id=summary.trained_snapshot_id,
        created_at=to_timestamp(summary.created_at),
    )


class UserServicer(users_pb2_grpc.UserServiceServicer):
    """``tagrate.dataset.v1.UserService``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def GetUser(self, request: users_pb2.GetUserRequest, context: grpc.ServicerContext):
        name = validation.user_name(request.user, allow_all=True)
        with self.db.snapshot() as session:
            summary = crud.user_summary(session, name)
        return user_info(summary)

    def ListUserSnapshots(self, request: users_pb2.ListUserSnapshotsRequest, context: grpc.ServicerContext):
        with self.db.snapshot() as session:
            summaries = crud.user_snapshots(session, request.only_untrained)
        return users_pb2.ListUserSnapshotsResponse(users=[user_info(summary) for summary in summaries])

    def ListUsers(self, request: users_pb2.ListUsersRequest, context: grpc.ServicerContext):
        with self.db.read() as session:
            return users_pb2.ListUsersResponse(users=crud.list_users(session))

    def GetStats(self, request: users_pb2.GetStatsRequest, context: grpc.ServicerContext):
        user = validation.user_name(request.user)
        with self.db.snapshot() as session:
            stats = crud.user_stats(session, user)
        model = None
        if stats.model is not None:
            model = users_pb2.TrainedModelInfo(
                version=stats.model.model_version,
                trained_at=to_timestamp(stats.model.trained_at),
                trained_on_ratings=stats.model.ratings_count,
                metrics=stats.model.metrics or {},
            )
        return users_pb2.GetStatsResponse(
            user=stats.user,
            image_count=stats.image_count,
            rating_distribution=stats.distribution,
            personal_up_to_date=stats.personal_up_to_date,
            global_up_to_date=stats.global_up_to_date,
            model=model,
        )
