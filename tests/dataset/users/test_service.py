"""UserService over real gRPC, on SQLite and PostgreSQL: GetUser (and
"all"), ListUsers and GetStats."""

from __future__ import annotations

import grpc
import pytest

from tagrate_common.protos import users_pb2
from tests.dataset.calls import INVALID, NOT_FOUND, add, assert_refused, name_of, record_trained, update, user_info
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


def test_list_user_snapshots_and_only_untrained(served: Served) -> None:
    def listed(only_untrained: bool) -> dict[str, users_pb2.UserInfo]:
        request = users_pb2.ListUserSnapshotsRequest(only_untrained=only_untrained)
        return {info.user: info for info in served.stub.users.ListUserSnapshots(request, timeout=30).users}

    add(served, "una", make_image(seed=300), 0.2)
    add(served, "una", make_image(seed=301), 0.4)
    add(served, "vic", make_image(seed=302), 0.9)
    every = listed(False)
    assert set(every) == {"una", "vic"}
    for name, info in every.items():  # the same figures GetUser gives
        single = user_info(served, name)
        assert (info.ratings, info.snapshot_id, info.HasField("trained_snapshot_id")) == (
            single.ratings,
            single.snapshot_id,
            False,
        )
    assert every["una"].ratings == 2
    record_trained(served, "una")
    assert set(listed(True)) == {"vic"}
    assert listed(False)["una"].trained_snapshot_id == user_info(served, "una").snapshot_id
    update(served, "una", name_of(make_image(seed=300)), 0.3)  # a changed rating: untrained again
    untrained = listed(True)
    assert set(untrained) == {"una", "vic"}
    assert untrained["una"].snapshot_id != untrained["una"].trained_snapshot_id
