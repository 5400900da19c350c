"""The gRPC face of the dataset service: each method decodes its request,
validates it, calls the domain (``crud``, ``queries``, ``blobs``,
``tagging``, ``features``) and encodes the answer. Failures are raised as
TagrateError subclasses; the shared server bootstrap turns them into status
codes. :class:`DatasetServer` runs the background worker (``worker.py``)
next to the gRPC server.

Every request is validated completely before anything is read or written,
so a refused call leaves the database and the blob store as they were.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator
from itertools import islice

import grpc
import numpy as np

from tagrate_common import validation
from tagrate_common.errors import InvalidArgument, NotFound
from tagrate_common.grpc_server import GrpcServer
from tagrate_common.images import CONTENT_TYPES, inspect_image, naming_file
from tagrate_common.protos import common_pb2, dataset_pb2, dataset_pb2_grpc
from tagrate_common.timestamps import to_timestamp
from tagrate_common.userdata import RatedFilter, SortOrder, TagFilter

from . import checks, records, snapshots
from .config import DatasetSettings
from .db import Database, create_db_engine, migrate
from .images import crud as images_crud
from .images.blobs import THUMBNAIL_CONTENT_TYPE, BlobStore, resized_content_type
from .images.features import FeatureCache, VectorFiller
from .library import listing, neighbours
from .models import ALL_SUBJECT, SOURCE_MAX_CHARS, AccessToken, WorkKind
from .peers import Peers
from .predictions import scoring
from .predictions.scoring import Scorer
from .ratings import crud as ratings_crud
from .tags import crud as tags_crud
from .tags import queries as tags_queries
from .tags.tagging import Tagging
from .tokens import crud as tokens
from .training import crud as training_crud
from .training import queries as training_queries
from .users import crud as users_crud
from .work import queries as work_queries
from .work import queue as workqueue
from .work.queue import StoredImage
from .work.worker import BackgroundWorker

log = logging.getLogger(__name__)

SERVICE_NAME = dataset_pb2.DESCRIPTOR.services_by_name["DatasetService"].full_name
MIN_RESIZE, MAX_RESIZE = 16, 4096
MAX_FILENAME_CHARS = 255
# Thumbnails: the original service's grid size, and the sides allowed.
THUMBNAIL_DEFAULT, MIN_THUMBNAIL, MAX_THUMBNAIL = 305, 16, 1024
MAX_TAG_LIST = 100_000


def blob_missing(name: str) -> NotFound:
    """A row whose file is gone (lost from the volume, or a delete in
    progress) is never served: logged, and answered as an unknown image."""
    log.error("the blob of stored image %s is missing", name)
    return NotFound(f"the file of image '{name}' is missing from the store", "image_not_found")


def clean_source(source: str) -> str:
    """An image's source as storable metadata: printable, at most 2048 characters."""
    if len(source) > SOURCE_MAX_CHARS:
        raise InvalidArgument(
            f"'source' must be at most {SOURCE_MAX_CHARS} characters, got {len(source)}", "invalid_source"
        )
    return "".join(ch for ch in source if ch.isprintable()).strip()


def work_kind(value: str) -> WorkKind:
    try:
        return WorkKind(value)
    except ValueError:
        kinds = ", ".join(kind.value for kind in WorkKind)
        raise InvalidArgument(f"'kind' must be one of {kinds}, got {value[:40]!r}", "invalid_kind") from None


def etag_matches(if_none_match: str, etag: str) -> bool:
    """Whether an If-None-Match value names ``etag``: ``*``, or a
    comma-separated list of tags, quoted or not, weak (``W/``) or strong
    (RFC 9110 compares weakly for If-None-Match)."""
    if not if_none_match.strip():
        return False
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*":
            return True
        if candidate.startswith("W/"):
            candidate = candidate[2:]
        if candidate.strip('"') == etag:
            return True
    return False


def clean_filename(filename: str) -> str:
    """The client's filename as storable metadata: no control characters
    (PostgreSQL text cannot hold NUL), at most 255 characters."""
    return "".join(ch for ch in filename if ch.isprintable())[:MAX_FILENAME_CHARS]


class DatasetServicer(dataset_pb2_grpc.DatasetServiceServicer):
    """``tagrate.dataset.v1.DatasetService`` over a database and a blob store."""

    def __init__(
        self,
        settings: DatasetSettings,
        db: Database,
        blobs: BlobStore,
        tagging: Tagging,
        features: FeatureCache,
        on_new_image: Callable[[], None] = lambda: None,
        on_new_model: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.blobs = blobs
        self.tagging = tagging
        self.features = features
        self.on_new_image = on_new_image
        self.on_new_model = on_new_model

    # ---- behind the REST API ----

    def AddRating(self, request: dataset_pb2.AddRatingRequest, context: grpc.ServicerContext):
        user = validation.user_name(request.user)
        rating = validation.rating(request.rating)
        filename = clean_filename(request.image.filename)
        info = inspect_image(request.image.data, filename, self.settings.image_limits)
        # The blob is durable before the row that names it is committed.
        self.blobs.put(info.name, request.image.data)
        outcome = self.db.write(lambda session: ratings_crud.add_rating(session, user, info, filename, rating))
        if outcome.new_user:
            log.info("user created", extra={"user": user})
        if outcome.new_image:
            log.debug("stored new image", extra={"image": info.name, "bytes": info.size_bytes})
            self.on_new_image()  # its tagging and feature extraction are queued
        log.debug(
            "rating %s",
            "stored" if outcome.changed else "unchanged",
            extra={"user": user, "image": info.name, "rating": rating},
        )
        return dataset_pb2.AddRatingResponse(
            image=outcome.image,
            user=outcome.user,
            rating=outcome.rating,
            new_image=outcome.new_image,
            new_user=outcome.new_user,
        )

    def GetImage(self, request: dataset_pb2.GetImageRequest, context: grpc.ServicerContext):
        name = validation.image_name(request.image)
        size = request.size
        if size and not MIN_RESIZE <= size <= MAX_RESIZE:
            raise InvalidArgument(
                f"'size' must be between {MIN_RESIZE} and {MAX_RESIZE} pixels, got {size}", "invalid_size"
            )
        with self.db.read() as session:
            image = records.require_image(session, name)
            fmt, sha = image.format, image.sha256
        etag = f"{sha}-{size}" if size else sha
        content_type = resized_content_type(fmt) if size else CONTENT_TYPES[name.rsplit(".", 1)[1]]
        if etag_matches(request.if_none_match, etag):
            return dataset_pb2.GetImageResponse(content_type=content_type, etag=etag, not_modified=True)
        try:
            if size:
                data, content_type = self.blobs.resized(name, fmt, size)
            else:
                data = self.blobs.get(name)
        except FileNotFoundError:
            raise blob_missing(name) from None
        return dataset_pb2.GetImageResponse(data=data, content_type=content_type, etag=etag)

    def GetImageTags(self, request: dataset_pb2.GetImageTagsRequest, context: grpc.ServicerContext):
        name = validation.image_name(request.image)
        with self.db.read() as session:
            tags = tags_crud.image_tags(session, name)
        return dataset_pb2.GetImageTagsResponse(
            image=tags.image,
            tagged=tags.tagged,
            model_id=tags.model_id,
            tags=[dataset_pb2.ImageTagScore(name=tag, score=score) for tag, score in tags.tags],
            source=tags.source,
        )

    def GetUserData(self, request: dataset_pb2.GetUserDataRequest, context: grpc.ServicerContext):
        user = validation.user_name(request.user)
        settings = self.settings
        tags = TagFilter.of(request.include_tags, request.exclude_tags).checked(
            settings.max_filter_tags, settings.max_tag_chars
        )
        page = listing.paging(request.page, request.limit, settings.userdata_default_limit, settings.userdata_max_limit)
        sort, rated = SortOrder.from_proto(request.sort), RatedFilter.from_proto(request.rated)
        # One connection, plain SQL, no ORM objects: the listing's own
        # statements and one round trip that resolves everything they need.
        with self.db.read_connection() as conn:
            result = listing.user_data_by_name(conn, user, tags, sort, rated, page)
        return dataset_pb2.GetUserDataResponse(
            user=user,
            images=[
                dataset_pb2.UserImage(
                    image=row.image,
                    rating=row.rating,
                    rated_at=to_timestamp(row.rated_at),
                    predicted=row.predicted,
                    predicted_by=row.predicted_by or "",
                )
                for row in result.images
            ],
            total=result.total,
            limit=page.limit,
        )

    def VerifyDatasets(self, request: dataset_pb2.VerifyDatasetsRequest, context: grpc.ServicerContext):
        with self.db.read() as session:
            state = work_queries.verify_datasets(session, self.settings.failed_work_listed)
            pending_predictions = scoring.pending_predictions(session)
        return dataset_pb2.VerifyDatasetsResponse(
            valid=state.valid,
            users=[
                dataset_pb2.UserDatasetState(
                    user=user.user,
                    ratings=user.ratings,
                    model_up_to_date=user.model_up_to_date,
                    trained_on_ratings=user.trained.ratings_count if user.trained else None,
                    trained_at=to_timestamp(user.trained.trained_at) if user.trained else None,
                    last_rating_at=to_timestamp(user.last_rating_at),
                )
                for user in state.users
            ],
            untagged_images=state.untagged_images,
            work=[
                dataset_pb2.WorkQueueState(kind=work.kind, pending=work.pending, failed=work.failed)
                for work in state.work
            ],
            failed_work=[
                dataset_pb2.FailedWork(
                    image=item.image, kind=item.kind, error=item.error, attempts=item.attempts, failed_by=item.failed_by
                )
                for item in state.failed_work
            ],
            pending_predictions=pending_predictions,
        )

    def UpdateTags(self, request: dataset_pb2.UpdateTagsRequest, context: grpc.ServicerContext):
        # A caller that gave up (deadline, disconnect) stops the catch-up
        # between batches; what was stored so far stays stored.
        outcome = self.tagging.update_tags(request.full, keep_going=context.is_active)
        if outcome.requeued_images:
            self.on_new_image()  # wakes the worker for the failed work queued again
        return dataset_pb2.UpdateTagsResponse(updated_images_count=outcome.updated_images, model_id=outcome.model_id)

    def RetryFailedWork(self, request: dataset_pb2.RetryFailedWorkRequest, context: grpc.ServicerContext):
        kind = work_kind(request.kind) if request.kind else None
        retried = self.db.write(lambda session: workqueue.retry_failed(session, kind))
        if retried:
            log.info("failed background work queued again", extra={"kind": request.kind or "all", "images": retried})
            self.on_new_image()  # wakes the worker
        return dataset_pb2.RetryFailedWorkResponse(retried=retried)

    # ---- collection management ----

    def UpdateRating(self, request: dataset_pb2.UpdateRatingRequest, context: grpc.ServicerContext):
        name = validation.image_name(request.image)
        user = validation.user_name(request.user)
        rating = validation.rating(request.rating)
        outcome = self.db.write(lambda session: ratings_crud.update_rating(session, user, name, rating))
        if outcome.new_user:
            log.info("user created", extra={"user": user})
        return dataset_pb2.UpdateRatingResponse(
            image=outcome.image,
            user=outcome.user,
            rating=outcome.rating,
            previous_rating=outcome.previous,
            new_user=outcome.new_user,
        )

    def RemoveRating(self, request: dataset_pb2.RemoveRatingRequest, context: grpc.ServicerContext):
        name = validation.image_name(request.image)
        user = validation.user_name(request.user)
        removed = self.db.write(lambda session: ratings_crud.remove_rating(session, user, name))
        log.info("rating removed", extra={"user": user, "image": name})
        return dataset_pb2.RemoveRatingResponse(image=name, user=user, rating=removed)

    def DeleteImage(self, request: dataset_pb2.DeleteImageRequest, context: grpc.ServicerContext):
        name = validation.image_name(request.image)
        # Rows first, in one transaction: from its commit on nothing serves or
        # counts the image. Then the files; a crash in between leaves files
        # without a row, which the next start collects.
        deleted = self.db.write(lambda session: images_crud.delete_image(session, name))
        files = self.blobs.remove(name)
        log.info("image deleted", extra={"image": name, "ratings": deleted.ratings_removed, "files": files})
        return dataset_pb2.DeleteImageResponse(image=name, ratings_removed=deleted.ratings_removed)

    def AddImages(self, request: dataset_pb2.AddImagesRequest, context: grpc.ServicerContext):
        if not request.images:
            raise validation.missing("images")
        source = clean_source(request.source)
        checked = []
        for index, image in enumerate(request.images):
            filename = clean_filename(image.filename)
            with naming_file(index + 1, filename):
                checked.append((inspect_image(image.data, filename, self.settings.image_limits), filename))
        # Every blob is durable before the rows that name them are committed.
        for (info, _), image in zip(checked, request.images, strict=True):
            self.blobs.put(info.name, image.data)
        added = self.db.write(lambda session: images_crud.add_images(session, checked, source))
        if any(new for _, new in added):
            log.debug("stored new images", extra={"images": sum(new for _, new in added)})
            self.on_new_image()  # their tagging and feature extraction are queued
        return dataset_pb2.AddImagesResponse(
            images=[dataset_pb2.AddedImage(image=name, new_image=new) for name, new in added]
        )

    def GetThumbnail(self, request: dataset_pb2.GetThumbnailRequest, context: grpc.ServicerContext):
        name = validation.image_name(request.image)
        size = request.size or THUMBNAIL_DEFAULT
        if not MIN_THUMBNAIL <= size <= MAX_THUMBNAIL:
            raise InvalidArgument(
                f"'size' must be between {MIN_THUMBNAIL} and {MAX_THUMBNAIL} pixels, got {size}", "invalid_size"
            )
        with self.db.read() as session:
            image = records.require_image(session, name)
            fmt, sha = image.format, image.sha256
        etag = f"{sha}-square{size}"
        if etag_matches(request.if_none_match, etag):
            return dataset_pb2.GetImageResponse(content_type=THUMBNAIL_CONTENT_TYPE, etag=etag, not_modified=True)
        try:
            data = self.blobs.thumbnail(name, fmt, size)
        except FileNotFoundError:
            raise blob_missing(name) from None
        return dataset_pb2.GetImageResponse(data=data, content_type=THUMBNAIL_CONTENT_TYPE, etag=etag)

    def ListTags(self, request: dataset_pb2.ListTagsRequest, context: grpc.ServicerContext):
        user = validation.user_name(request.user) if request.user else None
        if request.limit > MAX_TAG_LIST:
            raise InvalidArgument(
                f"'limit' must be a whole number from 1 to {MAX_TAG_LIST}, got {request.limit}", "invalid_limit"
            )
        prefix = tags_crud.normalise_tag(request.prefix)
        if len(prefix) > self.settings.max_tag_chars or not prefix.isprintable():
            raise InvalidArgument(
                f"'prefix' must be at most {self.settings.max_tag_chars} printable characters", "invalid_prefix"
            )
        with self.db.read() as session:
            user_id = records.require_user(session, user).id if user is not None else None
            counts = tags_queries.tag_counts(session, prefix, user_id, request.limit)
        return dataset_pb2.ListTagsResponse(
            model=counts.model, tags=[tag for tag, _ in counts.tags], counts=[n for _, n in counts.tags]
        )

    def GetStats(self, request: dataset_pb2.GetStatsRequest, context: grpc.ServicerContext):
        user = validation.user_name(request.user)
        with self.db.snapshot() as session:
            stats = users_crud.user_stats(session, user)
        model = None
        if stats.model is not None:
            model = dataset_pb2.TrainedModelInfo(
                version=stats.model.model_version,
                trained_at=to_timestamp(stats.model.trained_at),
                trained_on_ratings=stats.model.ratings_count,
                metrics=stats.model.metrics or {},
            )
        return dataset_pb2.GetStatsResponse(
            user=stats.user,
            image_count=stats.image_count,
            rating_distribution=stats.distribution,
            personal_up_to_date=stats.personal_up_to_date,
            global_up_to_date=stats.global_up_to_date,
            model=model,
        )

    def GetImageNeighbours(self, request: dataset_pb2.GetImageNeighboursRequest, context: grpc.ServicerContext):
        name = validation.image_name(request.image)
        user = validation.user_name(request.user)
        settings = self.settings
        tags = TagFilter.of(request.include_tags, request.exclude_tags).checked(
            settings.max_filter_tags, settings.max_tag_chars
        )
        sort, rated = SortOrder.from_proto(request.sort), RatedFilter.from_proto(request.rated)
        with self.db.snapshot() as session:
            user_id = records.require_user(session, user).id
            records.require_image(session, name)
            assert user_id is not None
            version = scoring.serving_version(session, user)  # the predicted orders follow the listing
            found = neighbours.neighbours(session, user_id, name, tags, sort, rated, version)
        if found is None:
            raise NotFound(f"image '{name}' is not in user '{user}'s list for these parameters", "image_not_in_list")

        def neighbour(row: listing.UserImage | None) -> dataset_pb2.Neighbour | None:
            return dataset_pb2.Neighbour(image=row.image, rating=row.rating) if row is not None else None

        return dataset_pb2.GetImageNeighboursResponse(
            image=name,
            position=found.position,
            max_image=found.total,
            prev=neighbour(found.prev),
            next=neighbour(found.next),
        )

    # ---- for internal callers ----

    def GetUser(self, request: dataset_pb2.GetUserRequest, context: grpc.ServicerContext):
        name = validation.user_name(request.user, allow_all=True)
        with self.db.snapshot() as session:
            summary = users_crud.user_summary(session, name)
        return dataset_pb2.UserInfo(
            user=summary.user,
            ratings=summary.ratings,
            snapshot_id=summary.snapshot_id,
            trained_snapshot_id=summary.trained_snapshot_id,
            created_at=to_timestamp(summary.created_at),
        )

    def ListUsers(self, request: dataset_pb2.ListUsersRequest, context: grpc.ServicerContext):
        with self.db.read() as session:
            return dataset_pb2.ListUsersResponse(users=users_crud.list_users(session))

    def PutImageTags(self, request: dataset_pb2.PutImageTagsRequest, context: grpc.ServicerContext):
        name = validation.image_name(request.image)
        model_id = checks.identifier(request.model_id, "model_id")
        threshold = request.threshold
        if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
            raise InvalidArgument(
                f"'threshold' must be a number between 0 and 1, got {threshold!r}", "invalid_threshold"
            )
        scores = tags_crud.tag_scores(((tag.name, tag.score) for tag in request.tags), self.settings.max_tag_chars)
        model = self.db.write(lambda session: tags_crud.put_image_tags(session, name, model_id, threshold, scores))
        log.debug("stored tags", extra={"image": name, "model": model.model_id, "tags": len(scores)})
        return dataset_pb2.PutImageTagsResponse()

    def PutImageFeatures(self, request: dataset_pb2.PutImageFeaturesRequest, context: grpc.ServicerContext):
        name = validation.image_name(request.image)
        extractor_id = checks.identifier(request.extractor_id, "extractor_id")
        vector = np.asarray(request.vector.values, dtype="<f4")
        if vector.size == 0:
            raise InvalidArgument("'vector' must hold at least one value", "invalid_vector")
        if not np.isfinite(vector).all():
            raise InvalidArgument("'vector' must hold only finite numbers", "invalid_vector")
        data, dim = vector.tobytes(), int(vector.size)
        self.db.write(lambda session: images_crud.put_image_features(session, name, extractor_id, data, dim))
        log.debug("stored features", extra={"image": name, "extractor": extractor_id, "dim": dim})
        return dataset_pb2.PutImageFeaturesResponse()

    def StreamTrainingData(
        self, request: dataset_pb2.StreamTrainingDataRequest, context: grpc.ServicerContext
    ) -> Iterator[dataset_pb2.TrainingDataChunk]:
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
            head = dataset_pb2.TrainingDataChunk(snapshot_id=snapshot.snapshot_id, total=snapshot.ratings)
            sent = 0
            examples = training_queries.training_examples(session, user_id, extractor_id, chunk_size)
            while batch := list(islice(examples, chunk_size)):
                chunk = head if not sent else dataset_pb2.TrainingDataChunk()
                chunk.examples.extend(self._training_examples(batch, filler))
                yield chunk
                sent += 1
            if not sent:
                yield head
        log.info("streamed training data", extra={"subject": subject, "snapshot": snapshot.snapshot_id})

    @staticmethod
    def _training_examples(
        batch: list[training_queries.TrainingExample], filler: VectorFiller | None
    ) -> list[dataset_pb2.TrainingExample]:
        missing = [StoredImage(e.image_id, e.image) for e in batch if e.features is None]
        computed = filler.vectors(missing) if filler is not None and missing else {}
        messages = []
        for example in batch:
            vector = example.features if example.features is not None else computed.get(example.image_id)
            features = None
            if vector is not None:
                features = common_pb2.FeatureVector(values=np.frombuffer(vector, dtype="<f4").tolist())
            messages.append(
                dataset_pb2.TrainingExample(
                    image=example.image, user=example.user, rating=example.rating, features=features
                )
            )
        return messages

    def RecordTrainedSnapshot(self, request: dataset_pb2.RecordTrainedSnapshotRequest, context: grpc.ServicerContext):
        subject = validation.user_name(request.user, allow_all=True)
        if not request.snapshot_id:
            raise validation.missing("snapshot_id")
        snapshot_id, version, metrics = request.snapshot_id, request.model_version, dict(request.metrics)
        self.db.write(
            lambda session: training_crud.record_trained_snapshot(session, subject, snapshot_id, version, metrics)
        )
        log.info("recorded trained snapshot", extra={"subject": subject, "snapshot": snapshot_id, "model": version})
        self.on_new_model()  # its rescoring of the stored images is queued
        return dataset_pb2.RecordTrainedSnapshotResponse()

    # ---- access tokens (for the gateway; hashes only) ----

    def CreateToken(self, request: dataset_pb2.CreateTokenRequest, context: grpc.ServicerContext):
        token = self.db.write(
            lambda session: tokens.create(
                session, request.token_sha256, request.user, request.admin, request.expires_in_seconds
            )
        )
        log.info("access token created", extra={"token_id": token.id, "user": token.user, "admin": token.admin})
        return _access_token(token)

    def ListTokens(self, request: dataset_pb2.ListTokensRequest, context: grpc.ServicerContext):
        with self.db.read() as session:
            return dataset_pb2.ListTokensResponse(tokens=[_access_token(t) for t in tokens.list_tokens(session)])

    def RevokeToken(self, request: dataset_pb2.RevokeTokenRequest, context: grpc.ServicerContext):
        self.db.write(lambda session: tokens.revoke(session, request.id))
        log.info("access token revoked", extra={"token_id": request.id})
        return dataset_pb2.RevokeTokenResponse()

    def AuthenticateToken(self, request: dataset_pb2.AuthenticateTokenRequest, context: grpc.ServicerContext):
        with self.db.read() as session:
            return _access_token(tokens.authenticate(session, request.token_sha256))


def _access_token(token: AccessToken) -> dataset_pb2.AccessToken:
    return dataset_pb2.AccessToken(
        id=token.id,
        user=token.user,
        admin=token.admin,
        created_at=to_timestamp(token.created_at),
        expires_at=to_timestamp(token.expires_at) if token.expires_at else None,
    )


class DatasetServer(GrpcServer):
    """The dataset service's gRPC server plus its background worker, which
    runs while the server does (``background_work`` on)."""

    def __init__(
        self,
        settings: DatasetSettings,
        servicer: DatasetServicer,
        worker: BackgroundWorker | None,
        scorer: Scorer | None = None,
    ) -> None:
        self.worker = worker
        self.scorer = scorer
        self.tagging = servicer.tagging
        self.features = servicer.features

        def shutdown() -> None:
            if worker is not None:
                worker.stop()
            if scorer is not None:
                scorer.stop()
            servicer.tagging.peers.close()
            servicer.db.dispose()

        super().__init__(
            "dataset",
            settings,
            [(dataset_pb2_grpc.add_DatasetServiceServicer_to_server, servicer, SERVICE_NAME)],
            on_shutdown=shutdown,
        )

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
        blobs.warm_thumbnails(THUMBNAIL_DEFAULT)
    scorer = Scorer(settings, db, peers) if settings.background_work else None
    servicer = DatasetServicer(
        settings,
        db,
        blobs,
        tagging,
        features,
        on_new_image=worker.wake if worker is not None else lambda: None,
        on_new_model=scorer.wake if scorer is not None else lambda: None,
    )
    return DatasetServer(settings, servicer, worker, scorer)
