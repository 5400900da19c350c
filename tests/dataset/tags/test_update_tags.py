"""UpdateTags against a real tagger serving the default model, on SQLite
and PostgreSQL. The background worker is off here, so every tagging seen
is UpdateTags' own."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from sqlalchemy import text

from tagrate_common.protos import tags_pb2, work_pb2
from tagrate_dataset.models import WorkKind
from tests.dataset.calls import put_tags
from tests.dataset.conftest import Served, rpc_error
from tests.dataset.peers import DEADLINE, add_rating, dataset_service, images, start_tagger, tagged
from tests.support import free_port


def update(served: Served, full: bool = False) -> tags_pb2.UpdateTagsResponse:
    return served.stub.tags.UpdateTags(tags_pb2.UpdateTagsRequest(full=full), timeout=DEADLINE)


def untagged(served: Served) -> int:
    return served.stub.work.VerifyDatasets(work_pb2.VerifyDatasetsRequest(), timeout=DEADLINE).untagged_images


def model_info(tagger_addr: str):
    from tagrate_common.grpc_client import Backend
    from tagrate_common.protos import tagger_pb2, tagger_pb2_grpc

    client = Backend("tagger", tagger_addr, tagger_pb2_grpc.TaggerServiceStub, DEADLINE, 1 << 20)
    try:
        return client.stub.GetModelInfo(tagger_pb2.GetModelInfoRequest())
    finally:
        client.close()


def test_update_tags_tags_the_untagged_images_then_everything_on_full(
    tmp_path: Path, database_url: str, tagger_addr: str
) -> None:
    model = model_info(tagger_addr)
    with dataset_service(tmp_path, database_url, tagger_addr=tagger_addr, background_work=False) as (served, _):
        names = [add_rating(served, "alice", data) for data in images(3)]
        assert untagged(served) == 3

        reply = update(served)
        assert (reply.updated_images_count, reply.model_id) == (3, model.model_id)
        assert untagged(served) == 0
        for name in names:
            tags = tagged(served, name)
            assert tags is not None and tags.model_id == model.model_id
            assert all(tag.score >= model.default_threshold for tag in tags.tags)
        # Scores below the model's threshold are kept too (down to the
        # floor), so the threshold can change without running the model.
        with served.engine.connect() as conn:
            stored = conn.execute(text("SELECT count(*), min(score) FROM image_tags")).one()
            tagging_work = conn.execute(text("SELECT count(*) FROM work_items WHERE kind = 'tag'")).scalar_one()
        shown = sum(len(tagged(served, name).tags) for name in names)  # type: ignore[union-attr]
        assert stored[0] > shown and 0.01 <= stored[1] < model.default_threshold
        assert tagging_work == 0  # the queued work is done with the tagging

        assert update(served).updated_images_count == 0  # nothing left
        new = add_rating(served, "bob", images(1, start=10)[0])
        assert update(served).updated_images_count == 1
        assert tagged(served, new) is not None
        assert update(served, full=True).updated_images_count == 4


def test_an_image_tagged_by_an_older_model_counts_as_untagged(
    tmp_path: Path, database_url: str, tagger_addr: str
) -> None:
    model = model_info(tagger_addr)
    with dataset_service(tmp_path, database_url, tagger_addr=tagger_addr, background_work=False) as (served, _):
        old, fresh = (add_rating(served, "alice", data) for data in images(2))
        put_tags(served, old, "older-model@1", 0.5, [("cat", 0.9)])
        assert tagged(served, old).model_id == "older-model@1"  # type: ignore[union-attr]

        assert update(served).updated_images_count == 2
        tags = tagged(served, old)
        assert tags is not None and tags.model_id == model.model_id
        assert "cat" not in {tag.name for tag in tags.tags}  # the older model's scores are not shown

        # Another model registered later (say, tried and rolled back): the
        # tagger's model becomes the current one again, already complete.
        put_tags(served, fresh, "newer-model@2", 0.5, [("dog", 0.9)])
        assert untagged(served) == 1
        reply = update(served)
        assert (reply.updated_images_count, reply.model_id) == (0, model.model_id)
        assert untagged(served) == 0
        assert tagged(served, fresh).model_id == model.model_id  # type: ignore[union-attr]


def test_an_unreachable_tagger_answers_unavailable_and_writes_nothing(tmp_path: Path, database_url: str) -> None:
    with dataset_service(
        tmp_path, database_url, tagger_addr=f"127.0.0.1:{free_port()}", tagger_timeout_seconds=5, background_work=False
    ) as (served, _):
        add_rating(served, "alice", images(1)[0])
        before = served.state()
        status, code, message = rpc_error(served.stub.tags.UpdateTags, tags_pb2.UpdateTagsRequest(full=True))
        assert (status, code) == (grpc.StatusCode.UNAVAILABLE, "tagger_unavailable")
        assert "tagger" in message
        assert served.state() == before


def test_a_tagger_lost_mid_run_keeps_whole_batches_only(tmp_path: Path, database_url: str, vision_model) -> None:
    """The tagger goes away between two batches: the first batch stays
    stored, the failing one writes nothing, and the answer is UNAVAILABLE."""
    server, addr = start_tagger(vision_model)
    with dataset_service(
        tmp_path, database_url, tagger_addr=addr, tag_batch_size=2, tagger_timeout_seconds=5, background_work=False
    ) as (served, dataset):
        names = [add_rating(served, "alice", data) for data in images(4)]
        # The real tagger is stopped right after the first batch is stored.
        original = dataset.tagging.process
        calls = 0

        def process_then_stop(model, batch):
            nonlocal calls
            calls += 1
            outcome = original(model, batch)
            if calls == 1:
                server.stop(0)
            return outcome

        dataset.tagging.process = process_then_stop  # type: ignore[method-assign]
        status, code, _ = rpc_error(served.stub.tags.UpdateTags, tags_pb2.UpdateTagsRequest())
        assert (status, code) == (grpc.StatusCode.UNAVAILABLE, "tagger_unavailable")
        assert [tagged(served, name) is not None for name in names] == [True, True, False, False]
        with served.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM image_taggings")).scalar_one() == 2
    server.stop(0)


def test_a_refused_image_is_recorded_and_the_others_are_tagged(tmp_path: Path, database_url: str, vision_model) -> None:
    """The tagger refuses an image over its pixel limit (INVALID_ARGUMENT):
    the rest of its batch is tagged, the refusal is recorded as failed work."""
    server, addr = start_tagger(vision_model, max_image_pixels=64 * 64)
    try:
        with dataset_service(tmp_path, database_url, tagger_addr=addr, background_work=False) as (served, _):
            small = [add_rating(served, "alice", data) for data in images(2)]
            big = add_rating(served, "alice", images(1, start=5, size=(200, 150))[0])
            assert update(served).updated_images_count == 2
            assert all(tagged(served, name) for name in small)
            assert tagged(served, big) is None
            with served.engine.connect() as conn:
                state, failed_by, error = conn.execute(
                    text("SELECT state, failed_by, error FROM work_items WHERE kind = :kind"), {"kind": WorkKind.TAG}
                ).one()
            assert state == "failed" and failed_by == model_info(addr).model_id
            assert "pixels" in error
            assert untagged(served) == 1
    finally:
        server.stop(0)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_update_tags_without_a_configured_tagger(tmp_path: Path, database_url: str) -> None:
    with dataset_service(tmp_path, database_url, background_work=False) as (served, _):
        status, code, message = rpc_error(served.stub.tags.UpdateTags, tags_pb2.UpdateTagsRequest())
        assert (status, code) == (grpc.StatusCode.UNAVAILABLE, "tagger_unavailable")
        assert "not configured" in message
