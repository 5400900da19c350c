"""The dataset service's process: one gRPC server, on one port and over one
database, serving each resource's servicer (images, ratings, the library
listing, tags, background work, users, training data, tokens, albums: see
:func:`resource_services`), with gRPC health and reflection from the shared
bootstrap (``tagrate_common.grpc_server``), which also turns the servicers'
TagrateErrors into status codes. :class:`DatasetServer` runs the background
worker (``work/worker.py``) and the scorer (``predictions/scoring.py``)
next to it.

Every request is validated completely before anything is read or written,
so a refused call leaves the database and the blob store as they were.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from tagrate_common.errors import Unavailable
from tagrate_common.files import STORAGE_CHECK_SECONDS, STORAGE_HEALTH
from tagrate_common.grpc_server import GrpcServer

from . import records
from .albums import service as albums_service
from .config import DatasetSettings
from .db import Database, create_db_engine, migrate
from .images import service as images_service
from .images.blobs import BlobStore
from .images.features import FeatureCache
from .library import service as library_service
from .peers import Peers
from .predictions.scoring import Scorer
from .ratings import service as ratings_service
from .similar import service as similar_service
from .similar.duplicates import DuplicateFinder, GroupingSettings
from .similar.hashing import HashWork
from .similar.vectors import VectorIndex
from .tags import owned_service
from .tags import service as tags_service
from .tags.tagging import Tagging
from .tasteloop import service as tasteloop_service
from .tokens import service as tokens_service
from .tokens import sessions as sessions_service
from .training import service as training_service
from .users import service as users_service
from .work import service as work_service
from .work.worker import BackgroundWorker

log = logging.getLogger(__name__)

Service = tuple[Callable[[Any, grpc.Server], None], Any, str]


def _service(registration: tuple[Callable[[Any, grpc.Server], None], str], servicer: Any) -> Service:
    add, name = registration
    return add, servicer, name


def resource_services(
    settings: DatasetSettings,
    db: Database,
    blobs: BlobStore,
    tagging: Tagging,
    features: FeatureCache,
    on_new_image: Callable[[], None] = lambda: None,
    on_new_model: Callable[[], None] = lambda: None,
    index: VectorIndex | None = None,
) -> list[Service]:
    """Every resource's servicer, as the shared server registers them.
    ``on_new_image`` wakes the background worker (new images, work queued
    again); ``on_new_model`` wakes the scorer (a model recorded)."""
    return [
        _service(images_service.REGISTRATION, images_service.ImageServicer(settings, db, blobs, on_new_image)),
        _service(ratings_service.REGISTRATION, ratings_service.RatingServicer(settings, db, blobs, on_new_image)),
        _service(library_service.REGISTRATION, library_service.LibraryServicer(settings, db)),
        _service(tags_service.REGISTRATION, tags_service.TagServicer(settings, db, tagging, on_new_image)),
        _service(work_service.REGISTRATION, work_service.WorkServicer(settings, db, on_new_image)),
        _service(users_service.REGISTRATION, users_service.UserServicer(db)),
        _service(
            training_service.REGISTRATION, training_service.TrainingDataServicer(settings, db, features, on_new_model)
        ),
        _service(tokens_service.REGISTRATION, tokens_service.TokenServicer(db)),
        _service(sessions_service.REGISTRATION, sessions_service.SessionServicer(db)),
        _service(albums_service.REGISTRATION, albums_service.AlbumServicer(settings, db)),
        _service(owned_service.REGISTRATION, owned_service.OwnedTagServicer(settings, db)),
        _service(tasteloop_service.REGISTRATION, tasteloop_service.TasteLoopServicer(db)),
        _service(
            similar_service.REGISTRATION,
            similar_service.SimilarServicer(
                settings,
                db,
                blobs,
                index or VectorIndex(db, settings.similar_max_vectors, settings.similar_sync_seconds),
            ),
        ),
    ]


class DatasetServer(GrpcServer):
    """The dataset service's gRPC server plus its background worker, which
    runs while the server does (``background_work`` on)."""

    def __init__(
        self,
        settings: DatasetSettings,
        db: Database,
        tagging: Tagging,
        features: FeatureCache,
        services: list[Service],
        worker: BackgroundWorker | None,
        scorer: Scorer | None = None,
        finder: DuplicateFinder | None = None,
    ) -> None:
        self.worker = worker
        self.scorer = scorer
        self.finder = finder
        self.tagging = tagging
        self.features = features

        def shutdown() -> None:
            if worker is not None:
                worker.stop()
            if scorer is not None:
                scorer.stop()
            if finder is not None:
                finder.stop()
            tagging.peers.close()
            db.dispose()

        super().__init__("dataset", settings, services, on_shutdown=shutdown)

    def watch_storage(self, blobs: BlobStore) -> None:
        """Keeps the ``STORAGE_HEALTH`` health status NOT_SERVING while the
        blob disk has less than ``TAGRATE_MIN_FREE_BYTES`` free (the
        gateway's /readyz reports it), SERVING again once space is freed."""
        self._blobs = blobs

    def _storage_loop(self) -> None:
        last = None
        while not self._stopped.wait(0 if last is None else STORAGE_CHECK_SECONDS):
            low = self._blobs.low_on_space()
            if low != last:
                if low:
                    log.warning("the blob disk is below TAGRATE_MIN_FREE_BYTES: uploads are refused (507)")
                elif last is not None:
                    log.info("the blob disk has room again: uploads are accepted")
                status = health_pb2.HealthCheckResponse.NOT_SERVING if low else health_pb2.HealthCheckResponse.SERVING
                self.health.set(STORAGE_HEALTH, status)
                last = low

    def start(self) -> int:
        port = super().start()
        if getattr(self, "_blobs", None) is not None:
            threading.Thread(target=self._storage_loop, name="dataset-storage", daemon=True).start()
        if self.worker is not None:
            self.worker.start()
        if self.scorer is not None:
            self.scorer.start()
        if self.finder is not None:
            self.finder.start()  # builds the similarity index first
        return port


def create_server(settings: DatasetSettings) -> DatasetServer:
    """The dataset service, migrated and ready to ``start()``: brings the
    database schema up to date and clears stale temp files first."""
    engine = create_db_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        sqlite_busy_timeout_seconds=settings.sqlite_busy_timeout_seconds,
    )
    migrate(engine)
    blobs = BlobStore(*settings.blob_stores(), settings.min_free_bytes, settings.max_upload_bytes)
    blobs.remove_stale_temp_files(settings.stale_temp_seconds)
    db = Database(engine, settings.write_retries)

    def stored(shas: Iterable[str]) -> set[str]:
        with db.read() as session:
            return records.existing_image_shas(session, shas)

    try:
        blobs.collect_orphans(stored, settings.stale_temp_seconds, settings.orphan_sweep_seconds)
    except Unavailable as exc:  # an object store that does not answer yet: serve, sweep at the next start
        log.warning("skipped the sweep for files of images without a row: %s", exc.message)
    peers = Peers(settings)
    tagging = Tagging(settings, db, blobs, peers)
    features = FeatureCache(settings, db, blobs, peers)
    hashing = HashWork(db, blobs, settings.image_limits)
    worker = BackgroundWorker(settings, db, [tagging, features, hashing]) if settings.background_work else None
    # Thumbnails are made alongside the model services' background work (the
    # hash lane, which runs in this process, does not count).
    if worker is not None and any(lane.work is not hashing for lane in worker.lanes):
        blobs.warm_thumbnails(images_service.THUMBNAIL_DEFAULT)
    scorer = Scorer(settings, db, peers) if settings.background_work else None
    index = VectorIndex(
        db, settings.similar_max_vectors, settings.similar_sync_seconds, settings.similar_ann_min_vectors
    )
    grouping = GroupingSettings(
        settings.duplicate_hash_distance,
        settings.duplicate_min_similarity,
        settings.duplicate_neighbour_similarity,
        settings.duplicate_min_alignment,
        settings.duplicate_batch_images,
        settings.duplicate_neighbours,
    )
    finder = DuplicateFinder(db, index, grouping, settings.work_poll_seconds) if settings.background_work else None
    services = resource_services(
        settings,
        db,
        blobs,
        tagging,
        features,
        on_new_image=worker.wake if worker is not None else lambda: None,
        on_new_model=scorer.wake if scorer is not None else lambda: None,
        index=index,
    )
    server = DatasetServer(settings, db, tagging, features, services, worker, scorer, finder)
    server.watch_storage(blobs)
    return server
