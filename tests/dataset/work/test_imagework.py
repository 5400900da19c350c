"""Background work against deletion: results computed for an image that is
deleted meanwhile are dropped, not written."""

from __future__ import annotations

from sqlalchemy import text

from tagrate_common.dataset_stubs import DatasetStubs
from tagrate_dataset.server import create_server
from tests.dataset.calls import add
from tests.dataset.conftest import Served
from tests.imagefactory import make_image


def test_background_results_for_a_deleted_image_are_dropped(settings, engine) -> None:
    """The worker's tagging and embedding of an image deleted while the
    model ran store nothing for it, finish the rest of the batch, and raise
    nothing (the deleted image's work is done)."""
    import numpy as np

    from tagrate_dataset.peers import ExtractorInfo, TaggerModelInfo
    from tagrate_dataset.records import StoredImage
    from tagrate_dataset.tags import tagging as tagging_module
    from tagrate_dataset.work.imagework import BatchOutcome

    server = create_server(settings)
    servicer_tagging, servicer_features = server.tagging, server.features
    port = server.start()
    try:
        import grpc as _grpc

        from tagrate_common.protos import (
            images_pb2,
        )

        with _grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = DatasetStubs(channel)
            served = Served(settings, stub, f"127.0.0.1:{port}", engine)
            doomed = add(served, "alice", make_image(seed=400), 0.5).image
            kept = add(served, "alice", make_image(seed=401), 0.5).image
            with engine.connect() as conn:
                ids = dict(conn.execute(text("SELECT name, id FROM images")).all())
            batch = [StoredImage(ids[doomed], doomed), StoredImage(ids[kept], kept)]
            stub.images.DeleteImage(images_pb2.DeleteImageRequest(image=doomed), timeout=30)
            tagger = TaggerModelInfo("m1", 0.5, 2)
            # The tagger's result type is changing ("one backbone pass"): a
            # Tagged where it exists, the plain tag list before.
            result = getattr(tagging_module, "Tagged", lambda tags: tags)
            servicer_tagging.store(tagger, BatchOutcome([(image, result([("cat", 0.9)])) for image in batch], []))
            vector = np.ones(4, dtype="<f4")
            servicer_features.store(ExtractorInfo("x1", 4), BatchOutcome([(image, vector) for image in batch], []))
            with engine.connect() as conn:
                tagged = {n for (n,) in conn.execute(text("SELECT image_id FROM image_taggings"))}
                embedded = {n for (n,) in conn.execute(text("SELECT image_id FROM image_features"))}
                images = {n for (n,) in conn.execute(text("SELECT name FROM images"))}
            assert tagged == embedded == {ids[kept]}
            assert images == {kept}
    finally:
        server.stop(0)
