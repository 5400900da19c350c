"""UserService over real gRPC, on SQLite and PostgreSQL: GetUser (and
"all"), ListUsers and GetStats."""

from __future__ import annotations

import grpc
import pytest

from tagrate_common.protos import users_pb2
from tests.dataset.calls import INVALID, NOT_FOUND, add, assert_refused, record_trained, user_info
from tests.dataset.conftest import Served, rpc_error
from tests.imagefactory import make_image


def test_list_users_get_user_and_all(served: Served) -> None:
    for user in ("zed", "Amy", "bob", "42"):
        add(served, user, make_image(seed=50), 0.5)
    add(served, "bob", make_image(seed=51), 0.5)
    assert list(served.stub.users.ListUsers(users_pb2.ListUsersRequest(), timeout=30).users) == [
        "42",
        "Amy",
        "bob",
        "zed",
    ]
    everyone = user_info(served, "all")
    assert (everyone.user, everyone.ratings) == ("all", 5)
    assert not everyone.HasField("created_at")
    assert rpc_error(served.stub.users.GetUser, users_pb2.GetUserRequest(user="nobody"))[:2] == (
        grpc.StatusCode.NOT_FOUND,
        "user_not_found",
    )
    assert rpc_error(served.stub.users.GetUser, users_pb2.GetUserRequest(user="no way"))[:2] == (
        INVALID,
        "invalid_user",
    )


def test_stats_buckets_half_to_even(served: Served) -> None:
    ratings = [0.0, 1 / 12, 3 / 12, 5 / 12, 7 / 12, 9 / 12, 11 / 12, 1.0, 0.5, 0.2]
    for seed, rating in enumerate(ratings):
        add(served, "alice", make_image(seed=200 + seed), rating)
    stats = served.stub.users.GetStats(users_pb2.GetStatsRequest(user="alice"), timeout=30)
    expected = [0] * 7
    for rating in ratings:
        expected[round(rating * 6)] += 1
    assert list(stats.rating_distribution) == expected
    assert stats.image_count == len(ratings)
    assert not stats.personal_up_to_date and not stats.global_up_to_date and not stats.HasField("model")
    record_trained(served, "alice")
    stats = served.stub.users.GetStats(users_pb2.GetStatsRequest(user="alice"), timeout=30)
    assert stats.personal_up_to_date and stats.model.version == "v1"
    assert stats.model.trained_on_ratings == len(ratings) and dict(stats.model.metrics) == {"mae": pytest.approx(0.1)}
    assert_refused(
        served, served.stub.users.GetStats, users_pb2.GetStatsRequest(user="nobody"), NOT_FOUND, "user_not_found"
    )
