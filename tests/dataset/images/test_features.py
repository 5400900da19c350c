"""The feature vector cache against a real rater (the default model's
pooled features), on SQLite and PostgreSQL: vectors are computed once per
image and extractor, in the background for new images and on demand for
training data, and a new extractor id means the old vectors do not count."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import numpy as np
from sqlalchemy import text

from tagrate_common.protos import common_pb2, images_pb2, rater_pb2, rater_pb2_grpc, training_data_pb2, users_pb2
from tests.dataset.conftest import Served, image_file, rpc_error
from tests.dataset.peers import DEADLINE, add_rating, dataset_service, images, rpc_count, wait_for
from tests.support import free_port

DIMENSIONS = 1280


def embed(rater_addr: str, data: bytes) -> tuple[str, np.ndarray]:
    """The rater's own answer for one file: (extractor id, vector)."""
    with grpc.insecure_channel(rater_addr) as channel:
        stub = rater_pb2_grpc.RaterServiceStub(channel)
        reply = stub.Embed(rater_pb2.EmbedRequest(images=[image_file(data, "x.png")]), timeout=DEADLINE)
    return reply.extractor_id, np.array(reply.vectors[0].values, dtype=np.float32)


def extractor_id(rater_addr: str) -> str:
    with grpc.insecure_channel(rater_addr) as channel:
        stub = rater_pb2_grpc.RaterServiceStub(channel)
        return stub.GetExtractorInfo(rater_pb2.GetExtractorInfoRequest(), timeout=DEADLINE).extractor_id


def cached(served: Served, extractor: str) -> dict[str, np.ndarray]:
    """Every cached vector from ``extractor``, by image name."""
    with served.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT i.name, f.vector FROM image_features f JOIN images i ON i.id = f.image_id "
                "WHERE f.extractor_id = :extractor"
            ),
            {"extractor": extractor},
        ).all()
    return {name: np.frombuffer(vector, dtype="<f4") for name, vector in rows}


def stream(served: Served, user: str, extractor: str) -> tuple[str, dict[tuple[str, str], np.ndarray | None]]:
    """(snapshot id, {(user, image): vector or None}) of a training data stream."""
    chunks = list(
        served.stub.training.StreamTrainingData(
            training_data_pb2.StreamTrainingDataRequest(user=user, extractor_id=extractor, chunk_size=2),
            timeout=DEADLINE,
        )
    )
    examples = {
        (e.user, e.image): np.array(e.features.values, dtype=np.float32) if e.HasField("features") else None
        for chunk in chunks
        for e in chunk.examples
    }
    assert len(examples) == chunks[0].total
    return chunks[0].snapshot_id, examples


def test_new_images_get_their_vectors_in_the_background(tmp_path: Path, database_url: str, rater_addr: str) -> None:
    files = images(2)
    extractor = extractor_id(rater_addr)
    with dataset_service(tmp_path, database_url, rater_addr=rater_addr) as (served, _):
        names = [add_rating(served, "alice", data) for data in files]

        def both_cached() -> dict[str, np.ndarray] | None:
            found = cached(served, extractor)
            return found if len(found) == 2 else None

        vectors = wait_for("both vectors to be cached", both_cached)
        for name, data in zip(names, files, strict=True):
            _, expected = embed(rater_addr, data)
            assert vectors[name].shape == (DIMENSIONS,)
            np.testing.assert_allclose(vectors[name], expected, rtol=1e-5, atol=1e-5)
        with served.engine.connect() as conn:
            kinds = conn.execute(text("SELECT DISTINCT kind FROM work_items")).scalars().all()
        assert kinds == ["tag"]  # no tagger configured: only the tagging waits


def test_training_data_computes_missing_vectors_once_and_reuses_them(
    tmp_path: Path, database_url: str, rater_addr: str
) -> None:
    extractor = extractor_id(rater_addr)
    # One image per Embed call: the rater's call count is the image count.
    with dataset_service(tmp_path, database_url, rater_addr=rater_addr, embed_batch_size=1, background_work=False) as (
        served,
        _,
    ):
        files = images(3)
        names = [add_rating(served, "alice", data) for data in files]
        add_rating(served, "bob", files[0])  # rated twice, embedded once

        before = rpc_count("rater", "Embed")
        snapshot, examples = stream(served, "all", extractor)
        assert rpc_count("rater", "Embed") - before == 3
        assert snapshot == served.stub.users.GetUser(users_pb2.GetUserRequest(user="all"), timeout=DEADLINE).snapshot_id
        assert all(vector is not None and vector.shape == (DIMENSIONS,) for vector in examples.values())
        np.testing.assert_array_equal(examples[("alice", names[0])], examples[("bob", names[0])])
        np.testing.assert_allclose(examples[("alice", names[1])], embed(rater_addr, files[1])[1], rtol=1e-5, atol=1e-5)
        assert set(cached(served, extractor)) == set(names)
        with served.engine.connect() as conn:
            embed_work = conn.execute(text("SELECT count(*) FROM work_items WHERE kind = 'embed'")).scalar_one()
        assert embed_work == 0  # the queued work was done on the way

        # Cached: the next streams run the backbone for nothing.
        before = rpc_count("rater", "Embed")
        again = {**stream(served, "all", extractor)[1], **stream(served, "alice", extractor)[1]}
        assert rpc_count("rater", "Embed") == before
        assert again.keys() == examples.keys()
        for key, vector in examples.items():
            np.testing.assert_array_equal(again[key], vector)


def test_a_new_extractor_id_means_the_old_vectors_do_not_count(
    tmp_path: Path, database_url: str, rater_addr: str
) -> None:
    extractor = extractor_id(rater_addr)
    old_vector = [1.0, 2.0, 3.0]
    with dataset_service(tmp_path, database_url, background_work=False) as (served, _):
        alices, bobs = (add_rating(served, user, data) for user, data in zip(("alice", "bob"), images(2), strict=True))
        for name in (alices, bobs):
            served.stub.images.PutImageFeatures(
                images_pb2.PutImageFeaturesRequest(
                    image=name, extractor_id="older-extractor@1", vector=common_pb2.FeatureVector(values=old_vector)
                ),
                timeout=DEADLINE,
            )
        with served.engine.begin() as conn:
            conn.execute(text("DELETE FROM work_items"))  # done, by the older extractor

    with dataset_service(tmp_path, database_url, rater_addr=rater_addr, embed_batch_size=1, background_work=False) as (
        served,
        _,
    ):
        # The older extractor's vectors still serve a stream that asks for them.
        before = rpc_count("rater", "Embed")
        _, examples = stream(served, "alice", "older-extractor@1")
        assert [list(vector) for vector in examples.values()] == [old_vector]  # type: ignore[arg-type]
        # On demand: a stream for the rater's extractor computes its own.
        _, examples = stream(served, "alice", extractor)
        assert rpc_count("rater", "Embed") - before == 1
        assert examples[("alice", alices)].shape == (DIMENSIONS,)  # type: ignore[union-attr]
        assert set(cached(served, extractor)) == {alices}

    # In the background: the worker queues every image lacking the rater's
    # extractor's vector as soon as it meets that extractor.
    with dataset_service(tmp_path, database_url, rater_addr=rater_addr) as (served, _):
        wait_for("a new vector for bob's image", lambda: bobs in cached(served, extractor))
        assert {name: list(v) for name, v in cached(served, "older-extractor@1").items()} == {
            alices: old_vector,
            bobs: old_vector,
        }


def test_an_unreachable_rater_fails_the_stream_naming_it(tmp_path: Path, database_url: str) -> None:
    with dataset_service(
        tmp_path, database_url, rater_addr=f"127.0.0.1:{free_port()}", rater_timeout_seconds=5, background_work=False
    ) as (served, _):
        add_rating(served, "alice", images(1)[0])
        request = training_data_pb2.StreamTrainingDataRequest(user="alice", extractor_id="some-extractor@1")
        status, code, message = rpc_error(served.stub.training.StreamTrainingData, request)
        assert (status, code) == (grpc.StatusCode.UNAVAILABLE, "rater_unavailable")
        assert "rater" in message


def test_one_backbone_pass_tags_and_embeds_a_new_image(
    tmp_path: Path, database_url: str, tagger_addr: str, rater_addr: str
) -> None:
    """The tagger and the rater run the same model: the tagger's pass gives
    the vector too (its features_id is the rater's extractor id), so the
    rater embeds nothing, and the cached vectors are the rater's own."""
    from tagrate_common.protos import tagger_pb2, tagger_pb2_grpc

    with grpc.insecure_channel(tagger_addr) as channel:
        info = tagger_pb2_grpc.TaggerServiceStub(channel).GetModelInfo(tagger_pb2.GetModelInfoRequest())
    extractor = extractor_id(rater_addr)
    assert info.features_id == extractor
    files = images(3, start=40)

    def settled() -> tuple[float] | None:
        # The rater is shared with earlier tests: wait until none of their
        # workers is still finishing an Embed, so the count below is ours.
        count = rpc_count("rater", "Embed")
        time.sleep(0.5)
        return (count,) if rpc_count("rater", "Embed") == count else None  # a tuple: 0.0 is a count too

    (embeds_before,) = wait_for("earlier tests' Embed calls to end", settled)
    with dataset_service(tmp_path, database_url, tagger_addr=tagger_addr, rater_addr=rater_addr) as (served, _):
        names = [add_rating(served, "alice", data) for data in files]

        def all_done() -> dict[str, np.ndarray] | None:
            with served.engine.connect() as conn:
                pending = conn.execute(text("SELECT count(*) FROM work_items")).scalar_one()
            found = cached(served, extractor)
            return found if len(found) == 3 and pending == 0 else None

        vectors = wait_for("tags and vectors of every image", all_done)
        assert rpc_count("rater", "Embed") == embeds_before  # no second pass
        for name, data in zip(names, files, strict=True):
            _, expected = embed(rater_addr, data)
            np.testing.assert_allclose(vectors[name], expected, rtol=1e-5, atol=1e-5)
        with served.engine.connect() as conn:
            tagged = conn.execute(text("SELECT count(*) FROM image_taggings")).scalar_one()
        assert tagged == 3
