"""The gRPC face of training data (``tagrate.dataset.v1.TrainingDataService``),
for the trainer: a user's (or everyone's) training examples streamed in one
snapshot transaction, vectors not cached yet computed through the rater as
the stream reaches them; and the record of which snapshot a published model
was trained on."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from itertools import islice

import grpc
import numpy as np

from tagrate_common import validation
from tagrate_common.errors import InvalidArgument
from tagrate_common.protos import common_pb2, training_data_pb2, training_data_pb2_grpc

from .. import checks, records, snapshots
from ..config import DatasetSettings
from ..db import Database
from ..images.features import FeatureCache, VectorFiller
from ..models import ALL_SUBJECT
from ..records import StoredImage
from . import crud, queries

log = logging.getLogger(__name__)

# What the server registers: the generated add function and the full service name.
REGISTRATION = (
    training_data_pb2_grpc.add_TrainingDataServiceServicer_to_server,
    training_data_pb2.DESCRIPTOR.services_by_name["TrainingDataService"].full_name,
)


class TrainingDataServicer(training_data_pb2_grpc.TrainingDataServiceServicer):
    """``tagrate.dataset.v1.TrainingDataService``."""

    def __init__(
        self,
        settings: DatasetSettings,
        db: Database,
        features: FeatureCache,
        on_new_model: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.features = features
        self.on_new_model = on_new_model

    def StreamTrainingData(
        self, request: training_data_pb2.StreamTrainingDataRequest, context: grpc.ServicerContext
    ) -> Iterator[training_data_pb2.TrainingDataChunk]:
        subject = validation.user_name(request.user, allow_all=True)
        extractor_id = checks.identifier(request.extractor_id, "extractor_id") if request.extractor_id else ""
        chunk_size = request.chunk_size or self.settings.training_chunk_size
        if chunk_size > self.settings.max_training_chunk_size:
            raise InvalidArgument(
                f"'chunk_size' must be at most {self.settings.max_training_chunk_size}, got {chunk_size}",
                "invalid_chunk_size",
            )
        # Vectors not cached yet are computed through the rater as the stream
        # reaches them (and cached, so each image is embedded once).
        filler = self.features.filler(extractor_id) if extractor_id else None
        # One snapshot transaction: the id, the total and the examples agree
        # even when ratings arrive while the stream is being read.
        with self.db.snapshot() as session:
            if subject == ALL_SUBJECT:
                user_id, snapshot = None, snapshots.all_snapshot(session)
            else:
                user = records.require_user(session, subject)
                user_id, snapshot = user.id, snapshots.user_snapshot(session, user)
            head = training_data_pb2.TrainingDataChunk(snapshot_id=snapshot.snapshot_id, total=snapshot.ratings)
            sent = 0
            examples = queries.training_examples(session, user_id, extractor_id, chunk_size)
            while batch := list(islice(examples, chunk_size)):
                chunk = head if not sent else training_data_pb2.TrainingDataChunk()
                chunk.examples.extend(self._training_examples(batch, filler))
                yield chunk
                sent += 1
            if not sent:
                yield head
        log.info("streamed training data", extra={"subject": subject, "snapshot": snapshot.snapshot_id})

    @staticmethod
    def _training_examples(
        batch: list[queries.TrainingExample], filler: VectorFiller | None
    ) -> list[training_data_pb2.TrainingExample]:
        missing = [StoredImage(e.image_id, e.image) for e in batch if e.features is None]
        computed = filler.vectors(missing) if filler is not None and missing else {}
        messages = []
        for example in batch:
            vector = example.features if example.features is not None else computed.get(example.image_id)
            features = None
            if vector is not None:
                features = common_pb2.FeatureVector(values=np.frombuffer(vector, dtype="<f4").tolist())
            messages.append(
                training_data_pb2.TrainingExample(
                    image=example.image, user=example.user, rating=example.rating, features=features
                )
            )
        return messages

    def RecordTrainedSnapshot(
        self, request: training_data_pb2.RecordTrainedSnapshotRequest, context: grpc.ServicerContext
    ):
        subject = validation.user_name(request.user, allow_all=True)
        if not request.snapshot_id:
            raise validation.missing("snapshot_id")
        snapshot_id, version, metrics = request.snapshot_id, request.model_version, dict(request.metrics)
        self.db.write(lambda session: crud.record_trained_snapshot(session, subject, snapshot_id, version, metrics))
        log.info("recorded trained snapshot", extra={"subject": subject, "snapshot": snapshot_id, "model": version})
        self.on_new_model()  # its rescoring of the stored images is queued
        return training_data_pb2.RecordTrainedSnapshotResponse()
