"""Predictions on stored images against a real rater (the default model's
pooled features, real heads), on SQLite and PostgreSQL: a recorded publish
rescores every stored image from the cached vectors, the listing sorts by
the serving model's scores, a newer model replaces them, new images are
scored for every user with a model, and a deleted image's scores go."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import grpc
import numpy as np
import pytest
from sqlalchemy import text
from sqlmodel import Session

from tagrate_common.protos import (
    common_pb2,
    images_pb2,
    library_pb2,
    rater_pb2,
    rater_pb2_grpc,
    training_data_pb2,
    users_pb2,
    work_pb2,
)
from tagrate_common.userdata import RatedFilter, SortOrder, TagFilter
from tagrate_common.vision.rating_heads import serialize_weights
from tagrate_dataset.db import create_db_engine, migrate
from tagrate_dataset.library.listing import Paging, user_data
from tagrate_dataset.library.neighbours import neighbours
from tagrate_dataset.models import Prediction
from tests.dataset.library.test_listing import FILTERS as QUERY_FILTERS
from tests.dataset.library.test_listing import T0
from tests.dataset.library.test_listing import _build as queries_world
from tests.dataset.library.test_listing import _expected as queries_expected
from tests.dataset.peers import DEADLINE, add_rating, dataset_service, images, start_rater, wait_for

DIMENSIONS = 1280


def _publish(stub: rater_pb2_grpc.RaterServiceStub, user: str, weight: np.ndarray, bias: float) -> str:
    extractor = stub.GetExtractorInfo(rater_pb2.GetExtractorInfoRequest(), timeout=DEADLINE).extractor_id
    weights = serialize_weights({"weight": weight, "bias": np.array(bias)})
    request = rater_pb2.PublishHeadRequest(
        metadata=rater_pb2.HeadMetadata(user=user, kind="linear", extractor_id=extractor), weights=weights
    )
    return stub.PublishHead(request, timeout=DEADLINE).metadata.version


def _expected(stub: rater_pb2_grpc.RaterServiceStub, data: bytes, weight: np.ndarray, bias: float) -> float:
    """The head's rating of the image, computed here from a fresh Embed."""
    reply = stub.Embed(rater_pb2.EmbedRequest(images=[common_pb2.ImageFile(data=data, filename="x.png")]))
    vector = np.array(reply.vectors[0].values, dtype=np.float64)
    return float(1.0 / (1.0 + np.exp(-(vector @ weight + bias))))


def _listing(served, user: str, sort=library_pb2.SORT_ORDER_PREDICTED_DESC) -> list[library_pb2.UserImage]:
    request = library_pb2.GetUserDataRequest(user=user, sort=sort, rated=library_pb2.RATED_FILTER_ALL)
    return list(served.stub.library.GetUserData(request, timeout=DEADLINE).images)


def _pending(served) -> int:
    return served.stub.work.VerifyDatasets(work_pb2.VerifyDatasetsRequest(), timeout=DEADLINE).pending_predictions


def test_publish_rescores_the_library_and_the_listing_sorts_by_it(
    tmp_path: Path, database_url: str, vision_model
) -> None:
    rater, rater_addr = start_rater(vision_model, tmp_path / "heads")
    channel = grpc.insecure_channel(rater_addr)
    stub = rater_pb2_grpc.RaterServiceStub(channel)
    try:
        files = images(5, size=(96, 72))
        with dataset_service(tmp_path, database_url, rater_addr=rater_addr, tagger_addr="") as (served, _):
            names = [add_rating(served, "alice", data, 0.5) for data in files[:4]]
            by_name = dict(zip(names, files, strict=False))

            def vectors_cached() -> bool:
                with served.engine.connect() as conn:
                    return conn.execute(text("SELECT count(*) FROM image_features")).scalar_one() == 4

            wait_for("the vectors", vectors_cached)
            # Before any model: every prediction null, the order by name.
            assert all(not item.HasField("predicted") for item in _listing(served, "alice"))

            rng = np.random.default_rng(7)
            weight = rng.normal(0, 0.05, DIMENSIONS)
            version = _publish(stub, "alice", weight, 0.1)
            snapshot = served.stub.users.GetUser(users_pb2.GetUserRequest(user="alice"), timeout=DEADLINE).snapshot_id
            served.stub.training.RecordTrainedSnapshot(
                training_data_pb2.RecordTrainedSnapshotRequest(
                    user="alice", snapshot_id=snapshot, model_version=version
                ),
                timeout=DEADLINE,
            )

            def scored() -> list[library_pb2.UserImage] | None:
                rows = _listing(served, "alice")
                return rows if all(row.HasField("predicted") for row in rows) and _pending(served) == 0 else None

            rows = wait_for("the rescoring", scored)
            for row in rows:
                assert row.predicted_by == "personal"
                assert abs(row.predicted - _expected(stub, by_name[row.image], weight, 0.1)) < 1e-5
            predicted = [row.predicted for row in rows]
            assert predicted == sorted(predicted, reverse=True)
            ascending = [row.predicted for row in _listing(served, "alice", library_pb2.SORT_ORDER_PREDICTED_ASC)]
            assert ascending == sorted(predicted)

            # A newer model: the old scores are not shown as current, then replaced.
            weight2 = -weight
            version2 = _publish(stub, "alice", weight2, -0.2)
            served.stub.training.RecordTrainedSnapshot(
                training_data_pb2.RecordTrainedSnapshotRequest(
                    user="alice", snapshot_id=snapshot, model_version=version2
                ),
                timeout=DEADLINE,
            )
            rows = wait_for("the rescoring by the new model", scored)
            for row in rows:
                assert abs(row.predicted - _expected(stub, by_name[row.image], weight2, -0.2)) < 1e-5
            with served.engine.connect() as conn:
                versions = conn.execute(text("SELECT DISTINCT model_version FROM predictions")).scalars().all()
            assert versions == [version2]

            # A new image (bob has no model) is scored for alice.
            new = add_rating(served, "bob", files[4], 0.9)
            by_name[new] = files[4]
            rows = wait_for("the new image's score", lambda: scored() if len(_listing(served, "alice")) == 5 else None)
            assert abs({r.image: r.predicted for r in rows}[new] - _expected(stub, files[4], weight2, -0.2)) < 1e-5
            assert all(not item.HasField("predicted") for item in _listing(served, "bob"))

            # A deleted image's scores go with it.
            served.stub.images.DeleteImage(images_pb2.DeleteImageRequest(image=new), timeout=DEADLINE)
            with served.engine.connect() as conn:
                left = conn.execute(
                    text("SELECT count(*) FROM predictions p JOIN images i ON i.id = p.image_id WHERE i.name = :n"),
                    {"n": new},
                ).scalar_one()
                total = conn.execute(text("SELECT count(*) FROM predictions")).scalar_one()
            assert left == 0 and total == 4
    finally:
        channel.close()
        rater.stop(0)


# ---- the predicted orders against a reference --------------------------------------

CURRENT, STALE = "v2", "v1"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def scored_world(request, tmp_path_factory, make_pg_database):
    """library/test_listing.py's world, plus predictions: alice (1) has current scores
    on most images (many tied) and stale ones on some others; bob (2) only
    stale ones, so every page of his is past the scored rows."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('predicted') / 'tagrate.db'}"
    else:
        url = make_pg_database()
    engine = create_db_engine(url, pool_size=2, max_overflow=0)
    migrate(engine)
    world = queries_world(engine)
    rng = random.Random(11)
    scores: dict[int, dict[int, tuple[float, str, str]]] = {1: {}, 2: {}}
    for i in world.names:
        if i % 7 != 3:
            by = "personal" if i % 2 else "global"
            scores[1][i] = (rng.choice([0.125, 0.25, 0.5, 0.5, 0.75]), CURRENT if i % 9 else STALE, by)
        if i % 3 == 0:
            scores[2][i] = (rng.random(), STALE, "global")
    rows = [
        {"user_id": u, "image_id": i, "score": s, "model_version": v, "predicted_by": by, "scored_at": T0}
        for u, per_user in scores.items()
        for i, (s, v, by) in per_user.items()
    ]
    with engine.begin() as conn:
        conn.execute(Prediction.__table__.insert(), rows)  # type: ignore[attr-defined]
    yield engine, world, scores
    engine.dispose()


def _expected_predicted(world, scores, user: int, tags: TagFilter, sort: SortOrder, rated: RatedFilter) -> list:
    by_name = queries_expected(world, user, tags, SortOrder.NAME_ASC, rated)
    ids = {name: i for i, name in world.names.items()}
    rows = []
    for row in by_name:
        score, version, by = scores[user].get(ids[row.image], (None, None, None))
        current = version == CURRENT
        rows.append(row._replace(predicted=score if current else None, predicted_by=by if current else None))
    scored = [row for row in rows if row.predicted is not None]
    scored.sort(key=lambda row: row.predicted, reverse=sort is SortOrder.PREDICTED_DESC)  # stable: ties by name
    return scored + [row for row in rows if row.predicted is None]


PREDICTED_PAGES = [Paging(), Paging(1, 1000), Paging(40, 5)] + [Paging(p, 7) for p in range(1, 9)]


@pytest.mark.parametrize("rated", list(RatedFilter))
@pytest.mark.parametrize("sort", [SortOrder.PREDICTED_DESC, SortOrder.PREDICTED_ASC])
def test_predicted_orders_match_the_reference(scored_world, sort: SortOrder, rated: RatedFilter) -> None:
    """Every page equals the reference: current scores in the sort's
    direction, ties by name, then the images without a current score (none,
    or a stale version's) by name; totals count both."""
    engine, world, scores = scored_world
    with Session(engine) as session:
        for user, tags in itertools.product((1, 2), QUERY_FILTERS):
            expected = _expected_predicted(world, scores, user, tags, sort, rated)
            for page in PREDICTED_PAGES:
                got = user_data(session, user, tags, sort, rated, page, version=CURRENT)
                window = expected if not page.page else expected[(page.page - 1) * page.limit :][: page.limit]
                context = f"user={user} tags={tags} page={page}"
                assert got.total == len(expected), context
                assert got.images == window, context


@pytest.mark.parametrize("rated", list(RatedFilter))
@pytest.mark.parametrize("sort", [SortOrder.PREDICTED_DESC, SortOrder.PREDICTED_ASC])
def test_neighbours_follow_the_predicted_listing(scored_world, sort: SortOrder, rated: RatedFilter) -> None:
    """GetImageNeighbours' position, previous and next image for every
    image of the listing equal the listing's own order, in both of the
    neighbours' strategies (a rare included tag is numbered in one pass,
    the others probed by keyset queries)."""
    engine, world, scores = scored_world
    with Session(engine) as session:
        for user, tags in itertools.product(
            (1, 2), [TagFilter(), TagFilter(("cat",)), TagFilter(("outdoor",), ("dog",))]
        ):
            expected = [row.image for row in _expected_predicted(world, scores, user, tags, sort, rated)]
            for position, name in enumerate(expected):
                found = neighbours(session, user, name, tags, sort, rated, version=CURRENT)
                context = f"user={user} tags={tags} image #{position + 1}"
                assert found is not None, context
                assert (found.position, found.total) == (position + 1, len(expected)), context
                prev = expected[position - 1] if position else None
                after = expected[position + 1] if position + 1 < len(expected) else None
                assert (found.prev and found.prev.image, found.next and found.next.image) == (prev, after), context
