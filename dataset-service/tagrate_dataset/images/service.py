"""The gRPC face of images (``tagrate.dataset.v1.ImageService``): storing
images without a rating, serving them (original, resized, square
thumbnail, with ETags), deleting one, and caching an image's feature vector.
Each method decodes its request, validates it completely, calls the domain
(``crud.py``, the blob store ``blobs.py``) and encodes the answer; failures
are TagrateErrors, turned into status codes by the shared server."""

from __future__ import annotations

import logging
from collections.abc import Callable

import grpc
import numpy as np

from tagrate_common import validation
from tagrate_common.errors import InvalidArgument, NotFound
from tagrate_common.images import CONTENT_TYPES, inspect_image, naming_file
from tagrate_common.protos import images_pb2, images_pb2_grpc

from .. import checks, records
from ..checks import clean_filename
from ..config import DatasetSettings
from ..db import Database
from ..models import SOURCE_MAX_CHARS
from ..similar.hashing import near_duplicates
from . import crud
from .blobs import THUMBNAIL_CONTENT_TYPE, BlobStore, resized_content_type

log = logging.getLogger(__name__)

# What the server registers: the generated add function and the full service name.
REGISTRATION = (
    images_pb2_grpc.add_ImageServiceServicer_to_server,
    images_pb2.DESCRIPTOR.services_by_name["ImageService"].full_name,
)

MIN_RESIZE, MAX_RESIZE = 16, 4096

# Thumbnails: the original service's grid size, and the sides allowed.
THUMBNAIL_DEFAULT, MIN_THUMBNAIL, MAX_THUMBNAIL = 305, 16, 1024


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


class ImageServicer(images_pb2_grpc.ImageServiceServicer):
    """``tagrate.dataset.v1.ImageService``."""

    def __init__(
        self, settings: DatasetSettings, db: Database, blobs: BlobStore, on_new_image: Callable[[], None] = lambda: None
    ) -> None:
        self.settings = settings
        self.db = db
        self.blobs = blobs
        self.on_new_image = on_new_image

    def AddImages(self, request: images_pb2.AddImagesRequest, context: grpc.ServicerContext):
        if not request.images:
            raise validation.missing("images")
        source = clean_source(request.source)
        checked = []
        for index, image in enumerate(request.images):
            filename = clean_filename(image.filename)
            with naming_file(index + 1, filename):
                checked.append(
                    (inspect_image(image.data, filename, self.settings.image_limits, perceptual=True), filename)
                )
        # Every blob is durable before the rows that name them are committed.
        for (info, _), image in zip(checked, request.images, strict=True):
            self.blobs.put(info.name, image.data)
        added = self.db.write(lambda session: crud.add_images(session, checked, source))
        if any(new for _, new in added):
            log.debug("stored new images", extra={"images": sum(new for _, new in added)})
            self.on_new_image()  # their tagging and feature extraction are queued
        near = near_duplicates(self.db, [name for name, new in added if new], self.settings.duplicate_upload_distance)
        return images_pb2.AddImagesResponse(
            images=[
                images_pb2.AddedImage(image=name, new_image=new, near_duplicate_of=near.get(name))
                for name, new in added
            ]
        )

    def GetImage(self, request: images_pb2.GetImageRequest, context: grpc.ServicerContext):
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
            return images_pb2.GetImageResponse(content_type=content_type, etag=etag, not_modified=True)
        try:
            if size:
                data, content_type = self.blobs.resized(name, fmt, size)
            else:
                data = self.blobs.get(name)
        except FileNotFoundError:
            raise blob_missing(name) from None
        return images_pb2.GetImageResponse(data=data, content_type=content_type, etag=etag)

    def GetThumbnail(self, request: images_pb2.GetThumbnailRequest, context: grpc.ServicerContext):
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
            return images_pb2.GetImageResponse(content_type=THUMBNAIL_CONTENT_TYPE, etag=etag, not_modified=True)
        try:
            data = self.blobs.thumbnail(name, fmt, size)
        except FileNotFoundError:
            raise blob_missing(name) from None
        return images_pb2.GetImageResponse(data=data, content_type=THUMBNAIL_CONTENT_TYPE, etag=etag)

    def DeleteImage(self, request: images_pb2.DeleteImageRequest, context: grpc.ServicerContext):
        name = validation.image_name(request.image)
        # Rows first, in one transaction: from its commit on nothing serves or
        # counts the image. Then the files; a crash in between leaves files
        # without a row, which the next start collects.
        deleted = self.db.write(lambda session: crud.delete_image(session, name))
        files = self.blobs.remove(name)
        log.info("image deleted", extra={"image": name, "ratings": deleted.ratings_removed, "files": files})
        return images_pb2.DeleteImageResponse(image=name, ratings_removed=deleted.ratings_removed)

    def PutImageFeatures(self, request: images_pb2.PutImageFeaturesRequest, context: grpc.ServicerContext):
        name = validation.image_name(request.image)
        extractor_id = checks.identifier(request.extractor_id, "extractor_id")
        vector = np.asarray(request.vector.values, dtype="<f4")
        if vector.size == 0:
            raise InvalidArgument("'vector' must hold at least one value", "invalid_vector")
        if not np.isfinite(vector).all():
            raise InvalidArgument("'vector' must hold only finite numbers", "invalid_vector")
        data, dim = vector.tobytes(), int(vector.size)
        self.db.write(lambda session: crud.put_image_features(session, name, extractor_id, data, dim))
        log.debug("stored features", extra={"image": name, "extractor": extractor_id, "dim": dim})
        return images_pb2.PutImageFeaturesResponse()
