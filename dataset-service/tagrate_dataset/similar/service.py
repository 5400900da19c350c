"""The gRPC face of finding things (``tagrate.dataset.v1.SimilarService``):
GetSimilar (``search.py``), GetDuplicates (``duplicates.py``),
ResolveDuplicates and MarkNotDuplicates (``resolve.py``). Each method
validates its request completely before reading or writing anything."""

from __future__ import annotations

import logging
from collections.abc import Callable

import grpc
import numpy as np
from sqlmodel import select

from tagrate_common import validation
from tagrate_common.errors import InvalidArgument
from tagrate_common.protos import library_pb2, similar_pb2, similar_pb2_grpc
from tagrate_common.userdata import RatedFilter, TagFilter

from .. import checks
from ..config import DatasetSettings
from ..db import Database
from ..images.blobs import BlobStore
from ..models import Image
from . import duplicates, resolve, search
from .vectors import VectorIndex

log = logging.getLogger(__name__)

REGISTRATION = (
    similar_pb2_grpc.add_SimilarServiceServicer_to_server,
    similar_pb2.DESCRIPTOR.services_by_name["SimilarService"].full_name,
)

DEFAULT_LIMIT, MAX_LIMIT = 24, 200
DEFAULT_GROUPS, MAX_GROUPS = 20, 100
# The longest vector a search by example may send.
MAX_DIM = 16384


class SimilarServicer(similar_pb2_grpc.SimilarServiceServicer):
    def __init__(
        self,
        settings: DatasetSettings,
        db: Database,
        blobs: BlobStore,
        index: VectorIndex,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.blobs = blobs
        self.index = index
        self.on_change = on_change

    def GetSimilar(self, request: similar_pb2.GetSimilarRequest, context: grpc.ServicerContext):
        settings = self.settings
        name = validation.image_name(request.image) if request.image else ""
        vector: np.ndarray | None = None
        extractor_id = ""
        if not name:
            values = request.vector.values
            if not values:
                raise validation.missing("image")
            if len(values) > MAX_DIM:
                raise InvalidArgument(f"'vector' holds at most {MAX_DIM} values", "invalid_vector")
            vector = np.asarray(values, dtype=np.float32)
            if not np.isfinite(vector).all():
                raise InvalidArgument("'vector' must hold only finite numbers", "invalid_vector")
            extractor_id = checks.identifier(request.extractor_id, "extractor_id")
        user = validation.user_name(request.user) if request.user else ""
        limit = request.limit or DEFAULT_LIMIT
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidArgument(f"'limit' must be between 1 and {MAX_LIMIT}, got {limit}", "invalid_limit")
        tags = TagFilter.of(request.include_tags, request.exclude_tags).checked(
            settings.max_filter_tags, settings.max_tag_chars
        )
        rated = (
            RatedFilter.ALL
            if request.rated == library_pb2.RATED_FILTER_UNSPECIFIED
            else RatedFilter.from_proto(request.rated)
        )
        query = search.Query(name, vector, extractor_id, user, limit, tags, rated, settings.tag_members)
        image, results = search.similar(self.db, self.index, query)
        return similar_pb2.GetSimilarResponse(
            image=image,
            results=[
                similar_pb2.SimilarImage(image=r.image, similarity=r.similarity, rating=r.rating, predicted=r.predicted)
                for r in results
            ],
        )

    def GetDuplicates(self, request: similar_pb2.GetDuplicatesRequest, context: grpc.ServicerContext):
        limit = request.limit or DEFAULT_GROUPS
        if not 1 <= limit <= MAX_GROUPS:
            raise InvalidArgument(f"'limit' must be between 1 and {MAX_GROUPS}, got {limit}", "invalid_limit")
        page = request.page or 1
        with self.db.snapshot() as session:
            found = duplicates.groups(session)
            shown = found[(page - 1) * limit : page * limit]
            ids = [i for group in shown for i in group.image_ids]
            images = {
                image.id: image
                for start in range(0, len(ids), 500)
                for image in session.exec(select(Image).where(Image.id.in_(ids[start : start + 500]))).all()  # type: ignore[union-attr]
            }
            pending = duplicates.pending_count(session)
        return similar_pb2.GetDuplicatesResponse(
            groups=[
                similar_pb2.DuplicateGroup(
                    images=[
                        similar_pb2.DuplicateImage(
                            image=images[i].name,
                            width=images[i].width,
                            height=images[i].height,
                            bytes=images[i].size_bytes,
                            original_name=images[i].original_filename,
                        )
                        for i in group.image_ids
                        if i in images
                    ],
                    similarity=max(0.0, min(1.0, group.similarity)),
                )
                for group in shown
            ],
            total=len(found),
            pending=max(0, pending),
        )

    def ResolveDuplicates(self, request: similar_pb2.ResolveDuplicatesRequest, context: grpc.ServicerContext):
        keep = validation.image_name(request.keep, "keep")
        if not request.remove:
            raise validation.missing("remove")
        remove = resolve.check_names([validation.image_name(n, "remove") for n in request.remove], "remove")
        done = self.db.write(lambda session: resolve.resolve(session, keep, remove))
        for name, _ in done.removed:
            self.blobs.remove(name)
        log.info(
            "duplicates resolved",
            extra={
                "kept": done.kept,
                "removed": len(done.removed),
                "ratings_moved": done.ratings_moved,
                "tags_moved": done.tags_moved,
            },
        )
        return similar_pb2.ResolveDuplicatesResponse(
            kept=done.kept, removed=[name for name, _ in done.removed], ratings_moved=done.ratings_moved
        )

    def MarkNotDuplicates(self, request: similar_pb2.MarkNotDuplicatesRequest, context: grpc.ServicerContext):
        names = resolve.check_names(
            [validation.image_name(n, "not_duplicates") for n in request.images], "not_duplicates"
        )
        pairs = self.db.write(lambda session: resolve.mark_not_duplicates(session, names))
        return similar_pb2.MarkNotDuplicatesResponse(pairs=pairs)
