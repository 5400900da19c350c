"""The services a training job talks to, as plain Python: the dataset
service (users, training data, trained snapshots) and the rater (feature
extractor, published heads). Failures arrive as TagrateErrors naming the
service, from :class:`~tagrate_common.grpc_client.Backend`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from tagrate_common.dataset_stubs import DatasetStubs
from tagrate_common.errors import Conflict, TagrateError
from tagrate_common.grpc_client import Backend
from tagrate_common.protos import rater_pb2, rater_pb2_grpc, training_data_pb2, users_pb2

from .config import TrainerSettings
from .training import TrainingData

log = logging.getLogger(__name__)

# Examples per streamed message: ~2.5 MB of 1280-d float vectors.
CHUNK_SIZE = 512


class StreamCancelled(Exception):
    """The training data stream was cancelled by :class:`StreamHandle`."""


@dataclass(frozen=True)
class UserInfo:
    user: str
    ratings: int
    snapshot_id: str
    trained_snapshot_id: str | None


@dataclass(frozen=True)
class Extractor:
    extractor_id: str
    dimensions: int


@dataclass(frozen=True)
class Snapshot:
    """Training examples and the dataset snapshot id they represent."""

    snapshot_id: str
    data: TrainingData


@dataclass(frozen=True)
class PublishedHead:
    user: str
    version: str
    kind: str
    extractor_id: str


class StreamHandle:
    """Lets another thread cancel a job's training data stream (so a stop
    request does not wait for a slow chunk)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancel: Callable[[], object] | None = None
        self._cancelled = False

    def attach(self, cancel: Callable[[], object]) -> None:
        with self._lock:
            self._cancel = cancel
            if self._cancelled:
                cancel()

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            if self._cancel is not None:
                self._cancel()

    @property
    def cancelled(self) -> bool:
        return self._cancelled


class Peers:
    """Clients of the dataset service and the rater for one trainer."""

    def __init__(self, settings: TrainerSettings) -> None:
        self.settings = settings
        timeout, size = settings.call_timeout_seconds, settings.max_message_bytes
        self.dataset = Backend("dataset", settings.dataset_addr, DatasetStubs, timeout, size)
        self.rater = Backend("rater", settings.rater_addr, rater_pb2_grpc.RaterServiceStub, timeout, size)

    def close(self) -> None:
        self.dataset.close()
        self.rater.close()

    # ---- dataset service ----

    def user(self, name: str) -> UserInfo:
        """The user's ratings count and snapshots; NotFound for an unknown user."""
        reply = self.dataset.stub.users.GetUser(users_pb2.GetUserRequest(user=name))
        trained = reply.trained_snapshot_id if reply.HasField("trained_snapshot_id") else None
        return UserInfo(reply.user, reply.ratings, reply.snapshot_id, trained)

    def untrained_users(self) -> list[UserInfo]:
        """Every user whose current ratings snapshot is not the one their
        model was trained on (one call, whatever the number of users)."""
        request = users_pb2.ListUserSnapshotsRequest(only_untrained=True)
        reply = self.dataset.stub.users.ListUserSnapshots(request)
        return [
            UserInfo(info.user, info.ratings, info.snapshot_id, info.trained_snapshot_id or None)
            for info in reply.users
        ]

    def training_data(
        self,
        user: str,
        extractor: Extractor,
        handle: StreamHandle | None = None,
        on_progress: Callable[[int, int], None] = lambda done, total: None,
    ) -> Snapshot:
        """Every rating of ``user`` (``all``: of everyone) with its image's
        cached feature vector from ``extractor``, and the snapshot id.

        Conflict when an image has no vector (the dataset service computes
        missing ones; this means it could not) or one of the wrong length.
        StreamCancelled when ``handle`` was cancelled."""
        request = training_data_pb2.StreamTrainingDataRequest(
            user=user, extractor_id=extractor.extractor_id, chunk_size=CHUNK_SIZE
        )
        # The stream's deadline, not the per-call one, covers the whole stream;
        # the call object is what can be cancelled from another thread.
        call = self.dataset.stub.training.StreamTrainingData(request, timeout=self.settings.stream_timeout_seconds)
        if handle is not None:
            handle.attach(call.cancel)
        snapshot_id, total, filled = "", 0, 0
        features = np.empty((0, extractor.dimensions), dtype=np.float32)
        ratings = np.empty(0, dtype=np.float32)
        images: list[str] = []
        missing: list[str] = []
        try:
            for chunk in call:
                if not snapshot_id:
                    snapshot_id, total = chunk.snapshot_id, int(chunk.total)
                    features = np.empty((total, extractor.dimensions), dtype=np.float32)
                    ratings = np.empty(total, dtype=np.float32)
                for example in chunk.examples:
                    if filled >= len(ratings):
                        raise TagrateError("the dataset service sent more training examples than it announced")
                    values = example.features.values
                    if not example.HasField("features") or len(values) == 0:
                        missing.append(example.image)
                        continue
                    if len(values) != extractor.dimensions:
                        raise Conflict(
                            f"the cached feature vector of image {example.image} has {len(values)} values, but "
                            f"extractor {extractor.extractor_id} gives {extractor.dimensions}",
                            "feature_mismatch",
                        )
                    features[filled] = values
                    ratings[filled] = example.rating
                    images.append(example.image)
                    filled += 1
                on_progress(filled + len(missing), total)
        except TagrateError:
            # A stream cancelled through the handle fails as CANCELLED (mapped
            # by the client to a plain TagrateError); the job asked for that.
            if handle is not None and handle.cancelled:
                raise StreamCancelled() from None
            raise
        finally:
            call.cancel()  # a no-op once the stream has ended; frees it when the job stopped reading
        if missing:
            raise Conflict(
                f"{len(missing)} of the {total} rated images have no feature vector from extractor "
                f"{extractor.extractor_id} yet (e.g. {missing[0]}); try again once the dataset service has "
                "computed them",
                "features_missing",
            )
        if filled != total:
            raise TagrateError(f"the dataset service announced {total} training examples but sent {filled}")
        return Snapshot(snapshot_id, TrainingData(features[:filled], ratings[:filled], images))

    def record_snapshot(self, user: str, snapshot_id: str, model_version: str, metrics: dict[str, float]) -> None:
        """Tells the dataset service which ratings the published model was
        trained on, with its held-out metrics (/getstats shows them)."""
        request = training_data_pb2.RecordTrainedSnapshotRequest(
            user=user, snapshot_id=snapshot_id, model_version=model_version, metrics=metrics
        )
        self.dataset.stub.training.RecordTrainedSnapshot(request)

    # ---- rater ----

    def extractor(self) -> Extractor:
        reply = self.rater.stub.GetExtractorInfo(rater_pb2.GetExtractorInfoRequest())
        return Extractor(reply.extractor_id, reply.dimensions)

    def live_head(self, user: str) -> PublishedHead | None:
        """The head the rater serves as ``user``'s own (``all``: the global
        head), or None."""
        reply = self.rater.stub.ListHeads(rater_pb2.ListHeadsRequest())
        for meta in reply.heads:
            if meta.user == user:
                return PublishedHead(meta.user, meta.version, meta.kind, meta.extractor_id)
        return None

    def publish(
        self, user: str, kind: str, weights: bytes, extractor_id: str, snapshot_id: str, metrics: dict[str, float]
    ) -> PublishedHead:
        """Hands a trained head to the rater, which makes it live; returns
        the version the rater gave it."""
        created = Timestamp()
        created.FromDatetime(datetime.now(UTC))
        metadata = rater_pb2.HeadMetadata(
            user=user,
            extractor_id=extractor_id,
            snapshot_id=snapshot_id,
            metrics=metrics,
            created_at=created,
            kind=kind,
        )
        reply = self.rater.stub.PublishHead(rater_pb2.PublishHeadRequest(metadata=metadata, weights=weights))
        meta = reply.metadata
        log.info("published %s head %s for %s", meta.kind, meta.version, meta.user)
        return PublishedHead(meta.user, meta.version, meta.kind, meta.extractor_id)
