"""The gRPC face of ratings (``tagrate.dataset.v1.RatingService``): adding a
rating with its image (the blob stored before the rows that name it), setting
one on a stored image, removing one. Each method decodes its request,
validates it completely, calls ``crud.py`` and encodes the answer."""

from __future__ import annotations

import logging
from collections.abc import Callable

import grpc

from tagrate_common import validation
from tagrate_common.images import inspect_image
from tagrate_common.protos import ratings_pb2, ratings_pb2_grpc

from ..checks import clean_filename
from ..config import DatasetSettings
from ..db import Database
from ..images.blobs import BlobStore
from ..similar.hashing import near_duplicates
from . import crud

log = logging.getLogger(__name__)

# What the server registers: the generated add function and the full service name.
REGISTRATION = (
    ratings_pb2_grpc.add_RatingServiceServicer_to_server,
    ratings_pb2.DESCRIPTOR.services_by_name["RatingService"].full_name,
)


class RatingServicer(ratings_pb2_grpc.RatingServiceServicer):
    """``tagrate.dataset.v1.RatingService``."""

    def __init__(
        self, settings: DatasetSettings, db: Database, blobs: BlobStore, on_new_image: Callable[[], None] = lambda: None
    ) -> None:
        self.settings = settings
        self.db = db
        self.blobs = blobs
        self.on_new_image = on_new_image

    def AddRating(self, request: ratings_pb2.AddRatingRequest, context: grpc.ServicerContext):
        user = validation.user_name(request.user)
        rating = validation.rating(request.rating)
        filename = clean_filename(request.image.filename)
        info = inspect_image(request.image.data, filename, self.settings.image_limits, perceptual=True)
        # The blob is durable before the row that names it is committed.
        self.blobs.put(info.name, request.image.data)
        outcome = self.db.write(lambda session: crud.add_rating(session, user, info, filename, rating))
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
        new = [outcome.image] if outcome.new_image else []
        near = near_duplicates(self.db, new, self.settings.duplicate_upload_distance)
        return ratings_pb2.AddRatingResponse(
            image=outcome.image,
            user=outcome.user,
            rating=outcome.rating,
            new_image=outcome.new_image,
            new_user=outcome.new_user,
            near_duplicate_of=near.get(outcome.image),
        )

    def UpdateRating(self, request: ratings_pb2.UpdateRatingRequest, context: grpc.ServicerContext):
        name = validation.image_name(request.image)
        user = validation.user_name(request.user)
        rating = validation.rating(request.rating)
        outcome = self.db.write(lambda session: crud.update_rating(session, user, name, rating))
        if outcome.new_user:
            log.info("user created", extra={"user": user})
        return ratings_pb2.UpdateRatingResponse(
            image=outcome.image,
            user=outcome.user,
            rating=outcome.rating,
            previous_rating=outcome.previous,
            new_user=outcome.new_user,
        )

    def RemoveRating(self, request: ratings_pb2.RemoveRatingRequest, context: grpc.ServicerContext):
        name = validation.image_name(request.image)
        user = validation.user_name(request.user)
        removed = self.db.write(lambda session: crud.remove_rating(session, user, name))
        log.info("rating removed", extra={"user": user, "image": name})
        return ratings_pb2.RemoveRatingResponse(image=name, user=user, rating=removed)
