"""Which users exist: the dataset service owns users, so the rater asks it."""

from __future__ import annotations

from tagrate_common.grpc_client import Backend
from tagrate_common.protos import users_pb2, users_pb2_grpc

from .config import RaterSettings


class UserDirectory:
    """The dataset service's view of users, through its UserService (GetUser,
    ListUsers). Every call's deadline is the shorter of the rater's own
    outgoing-call deadline and what is left of the caller's."""

    def __init__(self, backend: Backend[users_pb2_grpc.UserServiceStub]) -> None:
        self.backend = backend

    @classmethod
    def from_settings(cls, settings: RaterSettings) -> UserDirectory:
        return cls(
            Backend(
                "dataset",
                settings.dataset_addr,
                users_pb2_grpc.UserServiceStub,
                settings.call_timeout_seconds,
                settings.max_message_bytes,
            )
        )

    def _timeout(self, remaining: float | None) -> float:
        return self.backend.timeout if remaining is None else max(0.001, min(self.backend.timeout, remaining))

    def require(self, user: str, remaining: float | None = None) -> None:
        """Returns when ``user`` exists; NotFound (from the dataset service,
        naming the user) when not; Unavailable when it cannot be asked."""
        self.backend.stub.GetUser(users_pb2.GetUserRequest(user=user), timeout=self._timeout(remaining))

    def names(self, remaining: float | None = None) -> list[str]:
        """Every user name, sorted."""
        reply = self.backend.stub.ListUsers(users_pb2.ListUsersRequest(), timeout=self._timeout(remaining))
        return sorted(reply.users)

    def close(self) -> None:
        self.backend.close()
