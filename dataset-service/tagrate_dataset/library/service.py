"""The gRPC face of the library (``tagrate.dataset.v1.LibraryService``): a
user's listing (GetUserData: tag filters, sorting, rated/unrated, paging)
and an image's place and neighbours in it. Each method decodes and
validates its request, runs ``listing.py`` / ``neighbours.py`` (whose SQL
text is ``sql.py``) and encodes the rows."""

from __future__ import annotations

import logging

import grpc

from tagrate_common import validation
from tagrate_common.errors import NotFound
from tagrate_common.protos import library_pb2, library_pb2_grpc
from tagrate_common.userdata import RatedFilter, SortOrder, TagFilter

from .. import records
from ..config import DatasetSettings
from ..db import Database
from ..predictions import scoring
from . import listing, neighbours
from .listing import NO_USER

log = logging.getLogger(__name__)

# What the server registers: the generated add function and the full service name.
REGISTRATION = (
    library_pb2_grpc.add_LibraryServiceServicer_to_server,
    library_pb2.DESCRIPTOR.services_by_name["LibraryService"].full_name,
)


class LibraryServicer(library_pb2_grpc.LibraryServiceServicer):
    """``tagrate.dataset.v1.LibraryService``."""

    def __init__(self, settings: DatasetSettings, db: Database) -> None:
        self.settings = settings
        self.db = db

    def GetUserData(self, request: library_pb2.GetUserDataRequest, context: grpc.ServicerContext):
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
            result = listing.user_data_by_name(conn, user, tags, sort, rated, page, settings.tag_members)
        reply = library_pb2.GetUserDataResponse(user=user, total=result.total, limit=page.limit)
        # Added to the reply's list as they are read: a UserImage message
        # built apart and copied in costs about as much again.
        add = reply.images.add
        for image, rating, rated_at, predicted, predicted_by in result.rows:
            add(
                image=image,
                rating=rating,
                rated_at=listing.stored_timestamp(rated_at),
                predicted=predicted,
                predicted_by=predicted_by or "",
            )
        return reply

    def GetImageNeighbours(self, request: library_pb2.GetImageNeighboursRequest, context: grpc.ServicerContext):
        name = validation.image_name(request.image)
        user = validation.user_name(request.user)
        settings = self.settings
        tags = TagFilter.of(request.include_tags, request.exclude_tags).checked(
            settings.max_filter_tags, settings.max_tag_chars
        )
        sort, rated = SortOrder.from_proto(request.sort), RatedFilter.from_proto(request.rated)
        with self.db.snapshot() as session:
            # Someone who has not rated yet has a list too when it holds unrated images.
            known = records.find_user(session, user) if rated is not RatedFilter.YES else None
            user_id = known.id if known is not None else NO_USER
            if rated is RatedFilter.YES:
                user_id = records.require_user(session, user).id
            records.require_image(session, name)
            assert user_id is not None
            version = scoring.serving_version(session, user)  # the predicted orders follow the listing
            found = neighbours.neighbours(session, user_id, name, tags, sort, rated, version, settings.tag_members)
        if found is None:
            raise NotFound(f"image '{name}' is not in user '{user}'s list for these parameters", "image_not_in_list")

        def neighbour(row: listing.UserImage | None) -> library_pb2.Neighbour | None:
            return library_pb2.Neighbour(image=row.image, rating=row.rating) if row is not None else None

        return library_pb2.GetImageNeighboursResponse(
            image=name,
            position=found.position,
            max_image=found.total,
            prev=neighbour(found.prev),
            next=neighbour(found.next),
        )
