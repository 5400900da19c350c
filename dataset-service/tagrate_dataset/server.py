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

from collections.abc import Callable, Iterable
from typing import Any

import grpc

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
from .tags import owned_service
from .tags import service as tags_service
from .tags.tagging import Tagging
from .tokens import service as tokens_service
from .training import service as training_service
from .users import service as users_service
from .work import service as work_service
from .work.worker import BackgroundWorker

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
        _service(albums_service.REGISTRATION, albums_service.AlbumServicer(settings, db)),
        _service(owned_service.REGISTRATION, owned_service.OwnedTagServicer(settings, db)),
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
    ) -> None:
        self.worker = worker
        self.scorer = scorer
        self.tagging = tagging
        self.features = features

        def shutdown() -> None:
            if worker is not None:
                worker.stop()
            if scorer is not None:
                scorer.stop()
            tagging.peers.close()
            db.dispose()

        super().__init__("dataset", settings, services, on_shutdown=shutdown)

    def start(self) -> int:
        port = super().start()
        if self.worker is not None:
            self.worker.start()
        if self.scorer is not None:
            self.scorer.start()
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
    blobs = BlobStore(settings.blob_path, settings.cache_path)
    blobs.remove_stale_temp_files(settings.stale_temp_seconds)
    db = Database(engine, settings.write_retries)

    def stored(shas: Iterable[str]) -> set[str]:
        with db.read() as session:
            return records.existing_image_shas(session, shas)

    blobs.collect_orphans(stored, settings.stale_temp_seconds, settings.orphan_sweep_seconds)
    peers = Peers(settings)
    tagging = Tagging(settings, db, blobs, peers)
    features = FeatureCache(settings, db, blobs, peers)
    worker = BackgroundWorker(settings, db, [tagging, features]) if settings.background_work else None
    if worker is not None and worker.lanes:  # thumbnails are made alongside the other background work
        blobs.warm_thumbnails(images_service.THUMBNAIL_DEFAULT)
    scorer = Scorer(settings, db, peers) if settings.background_work else None
    services = resource_services(
        settings,
        db,
        blobs,
        tagging,
        features,
        on_new_image=worker.wake if worker is not None else lambda: None,
        on_new_model=scorer.wake if scorer is not None else lambda: None,
    )
    return DatasetServer(settings, db, tagging, features, services, worker, scorer)
