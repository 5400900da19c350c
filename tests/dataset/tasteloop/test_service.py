"""TasteLoopService over real gRPC, on SQLite and PostgreSQL: GetRateNext
(never a rated image, diverse over clusters of near-identical images, a
cold-start spread, a new queue for a new model) and ExplainImage (rated
neighbours by similarity, the image's tags with their effect)."""

from __future__ import annotations

import grpc
import numpy as np
from sqlalchemy import text

from tagrate_common.protos import common_pb2, images_pb2, tasteloop_pb2, training_data_pb2
from tests.dataset.calls import INVALID, NOT_FOUND, add, assert_refused, name_of, put_tags, user_info
from tests.dataset.conftest import Served, rpc_error
from tests.imagefactory import make_image

EXTRACTOR = "test-extractor@1"
CLUSTERS, PER_CLUSTER, DIMS = 5, 8, 32


def library(served: Served) -> dict[str, int]:
    """40 stored images in 5 clusters of near-identical feature vectors (the
    clusters far apart); returns each image's cluster."""
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(CLUSTERS, DIMS)) * 3
    cluster_of = {}
    for c in range(CLUSTERS):
        for k in range(PER_CLUSTER):
            data = make_image(seed=1000 + c * 100 + k)
            add(served, "pool", data, 0.5)  # stored by someone else's rating
            name = name_of(data)
            vector = centres[c] + rng.normal(size=DIMS) * 0.05
            served.stub.images.PutImageFeatures(
                images_pb2.PutImageFeaturesRequest(
                    image=name, extractor_id=EXTRACTOR, vector=common_pb2.FeatureVector(values=vector.tolist())
                ),
                timeout=30,
            )
            cluster_of[name] = c
    return cluster_of


def rate_next(served: Served, user: str, limit: int) -> tasteloop_pb2.GetRateNextResponse:
    request = tasteloop_pb2.GetRateNextRequest(user=user, extractor_id=EXTRACTOR, limit=limit)
    return served.stub.tasteloop.GetRateNext(request, timeout=30)


def test_rate_next_skips_rated_images_and_spreads_over_the_clusters(served: Served) -> None:
    cluster_of = library(served)
    names = list(cluster_of)
    # Cold start: "ann" rated one image of another library; the spread
    # covers every cluster before it repeats one.
    add(served, "ann", make_image(seed=5), 0.5)
    first = rate_next(served, "ann", CLUSTERS)
    assert first.strategy == "typical-and-variance" and first.model_version == ""
    assert sorted(cluster_of[i.image] for i in first.images) == list(range(CLUSTERS))
    assert all(not i.HasField("predicted") and i.reason for i in first.images)

    # ann rates 6 images of clusters 0 and 1: those clusters come last now,
    # and no rated image is ever listed.
    rated = [n for n in names if cluster_of[n] == 0][:3] + [n for n in names if cluster_of[n] == 1][:3]
    for n, name in enumerate(rated):
        data = make_image(seed=1000 + cluster_of[name] * 100 + names.index(name) % PER_CLUSTER)
        assert name_of(data) == name
        add(served, "ann", data, 0.9 if cluster_of[name] == 0 else 0.1 + 0.01 * n)
    queue = rate_next(served, "ann", 20)
    assert queue.strategy == "typical-and-variance"
    listed = [i.image for i in queue.images]
    assert len(listed) == 20 and len(set(listed)) == 20 and not set(listed) & set(rated)
    # Measurable diversity: no group of near-identical images twice before
    # every group nothing was rated in is listed (here within the first four).
    groups = [cluster_of[name] for name in listed]
    assert len(set(groups[:4])) == 4 and {2, 3, 4} <= set(groups[:4]), groups

    limit_all = rate_next(served, "ann", 100)
    assert len(limit_all.images) == len(names) - len(rated)  # every unrated image with a vector, once

    # A model recorded for ann (a retrain): a new queue, made for that version.
    served.stub.training.RecordTrainedSnapshot(
        training_data_pb2.RecordTrainedSnapshotRequest(
            user="ann", snapshot_id=user_info(served, "ann").snapshot_id, model_version="v7-abc"
        ),
        timeout=30,
    )
    again = rate_next(served, "ann", 20)
    assert again.model_version == "v7-abc" and not {i.image for i in again.images} & set(rated)


def test_rate_next_refusals(served: Served) -> None:
    add(served, "bo", make_image(seed=6), 0.5)
    for limit in (0, 101):
        assert_refused(
            served,
            served.stub.tasteloop.GetRateNext,
            tasteloop_pb2.GetRateNextRequest(user="bo", extractor_id=EXTRACTOR, limit=limit),
            INVALID,
            "invalid_limit",
        )
    assert_refused(
        served,
        served.stub.tasteloop.GetRateNext,
        tasteloop_pb2.GetRateNextRequest(user="nobody", extractor_id=EXTRACTOR, limit=5),
        NOT_FOUND,
        "user_not_found",
    )
    assert rate_next(served, "bo", 5).images == []  # no vectors yet: nothing to choose from


def test_explain_gives_rated_neighbours_by_similarity_and_tag_effects(served: Served) -> None:
    cluster_of = library(served)
    names = list(cluster_of)
    by_seed = {
        name_of(make_image(seed=1000 + c * 100 + k)): (c, k) for c in range(CLUSTERS) for k in range(PER_CLUSTER)
    }
    rated = [n for n in names if cluster_of[n] == 0][:6] + [n for n in names if cluster_of[n] == 2]
    for name in rated:
        c, k = by_seed[name]
        add(served, "cy", make_image(seed=1000 + c * 100 + k), 0.8 if c == 0 else 0.2)
    target = next(n for n in names if cluster_of[n] == 0 and n not in rated)

    request = tasteloop_pb2.ExplainImageRequest(user="cy", image=target, extractor_id=EXTRACTOR, limit=5)
    found = served.stub.tasteloop.ExplainImage(request, timeout=30)
    assert found.image == target and not found.HasField("predicted") and found.model_version == ""
    similarities = [n.similarity for n in found.neighbours]
    assert len(found.neighbours) == 5 and similarities == sorted(similarities, reverse=True)
    assert all(n.image in rated and n.image != target for n in found.neighbours)
    # The nearest are cy's ratings of the same cluster, near-identical.
    assert all(cluster_of[n.image] == 0 and n.rating == 0.8 and n.similarity > 0.99 for n in found.neighbours)
    assert list(found.tags) == []  # no model: no predictions to compare

    # With a model and predictions: the image's tags, the one whose images
    # are predicted high first.
    served.stub.training.RecordTrainedSnapshot(
        training_data_pb2.RecordTrainedSnapshotRequest(
            user="cy", snapshot_id=user_info(served, "cy").snapshot_id, model_version="v1-x"
        ),
        timeout=30,
    )
    for name in names:
        tags = [("red", 0.9)] if cluster_of[name] == 0 else [("blue", 0.9)]
        put_tags(served, name, "tagger@1", 0.5, [*tags, ("round", 0.9)])
    with served.engine.begin() as conn:
        user_id = conn.execute(text("SELECT id FROM users WHERE name = 'cy'")).scalar_one()
        for name in names:
            image_id = conn.execute(text("SELECT id FROM images WHERE name = :n"), {"n": name}).scalar_one()
            conn.execute(
                text(
                    "INSERT INTO predictions (user_id, image_id, score, model_version, predicted_by, scored_at) "
                    "VALUES (:u, :i, :s, 'v1-x', 'personal', CURRENT_TIMESTAMP)"
                ),
                {"u": user_id, "i": image_id, "s": 0.9 if cluster_of[name] == 0 else 0.3},
            )
    found = served.stub.tasteloop.ExplainImage(request, timeout=30)
    assert found.predicted == 0.9 and found.model_version == "v1-x"
    effects = {t.tag: t for t in found.tags}
    assert list(effects) == ["red", "round"]  # blue is not this image's tag; red moves most
    mean = (0.9 * PER_CLUSTER + 0.3 * PER_CLUSTER * (CLUSTERS - 1)) / len(names)
    assert abs(effects["red"].effect - (0.9 - mean)) < 1e-9 and effects["red"].images == PER_CLUSTER
    assert abs(effects["round"].effect) < 1e-9 and effects["round"].images == len(names)


def test_explain_refusals(served: Served) -> None:
    add(served, "di", make_image(seed=7), 0.5)
    no_vector = name_of(make_image(seed=7))
    call = served.stub.tasteloop.ExplainImage
    request = tasteloop_pb2.ExplainImageRequest(user="di", image=no_vector, extractor_id=EXTRACTOR, limit=5)
    status, code, _ = rpc_error(call, request)
    assert (status, code) == (grpc.StatusCode.FAILED_PRECONDITION, "features_pending")
    missing = tasteloop_pb2.ExplainImageRequest(user="di", image="0" * 64 + ".jpg", extractor_id=EXTRACTOR, limit=5)
    assert rpc_error(call, missing)[:2] == (NOT_FOUND, "image_not_found")
    bad = tasteloop_pb2.ExplainImageRequest(user="di", image=no_vector, extractor_id=EXTRACTOR, limit=51)
    assert rpc_error(call, bad)[:2] == (INVALID, "invalid_limit")


def test_rate_next_keeps_to_the_tag_filter(served: Served) -> None:
    cluster_of = library(served)
    for name, cluster in cluster_of.items():
        put_tags(served, name, "tagger@1", 0.5, [(f"c{cluster}", 0.9), ("even" if cluster % 2 == 0 else "odd", 0.8)])
    add(served, "eve", make_image(seed=8), 0.5)

    def listed(include: list[str], exclude: list[str]) -> set[int]:
        request = tasteloop_pb2.GetRateNextRequest(
            user="eve", extractor_id=EXTRACTOR, limit=100, include_tags=include, exclude_tags=exclude
        )
        return {cluster_of[i.image] for i in served.stub.tasteloop.GetRateNext(request, timeout=30).images}

    assert listed(["even"], []) == {0, 2, 4}
    assert listed(["even"], ["c2"]) == {0, 4}
    assert listed([], ["odd", "no-such-tag"]) == {0, 2, 4}
    assert listed(["no-such-tag"], []) == set()
    request = tasteloop_pb2.GetRateNextRequest(
        user="eve", extractor_id=EXTRACTOR, limit=5, include_tags=[f"t{n}" for n in range(17)]
    )
    assert_refused(served, served.stub.tasteloop.GetRateNext, request, INVALID, "invalid_filters")
