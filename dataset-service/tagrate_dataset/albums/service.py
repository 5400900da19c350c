"""The gRPC face of albums (``tagrate.dataset.v1.AlbumService``): creating,
listing (with each album's images, tags and dimensions for the original's
/getmontageposts), reading one, its neighbours, renaming, deleting, adding,
removing and moving images. Each method decodes and validates its request
completely, runs ``crud.py`` (changes) or ``queries.py`` (reads), and
encodes the answer; a call on another user's album is PERMISSION_DENIED."""

from __future__ import annotations

import logging

import grpc

from tagrate_common import validation
from tagrate_common.errors import InvalidArgument
from tagrate_common.protos import albums_pb2, albums_pb2_grpc
from tagrate_common.timestamps import to_datetime, to_timestamp
from tagrate_common.userdata import TagFilter

from ..config import DatasetSettings
from ..db import Database
from ..library.listing import paging
from . import crud, queries

log = logging.getLogger(__name__)

# What the server registers: the generated add function and the full service name.
REGISTRATION = (
    albums_pb2_grpc.add_AlbumServiceServicer_to_server,
    albums_pb2.DESCRIPTOR.services_by_name["AlbumService"].full_name,
)


def _caller(value: str) -> str:
    """The user a call acts as ("" for an admin)."""
    return validation.user_name(value, "caller") if value else ""


def _album_id(value: int) -> int:
    if not 1 <= value < 2**63:
        raise InvalidArgument(f"'id' must be an album id (a whole number from 1 up), got {value}", "invalid_id")
    return value


def _album(album: queries.AlbumSummary) -> albums_pb2.Album:
    return albums_pb2.Album(
        id=album.id,
        user=album.user,
        name=album.name,
        created_at=to_timestamp(album.created_at),
        image_count=album.image_count,
        cover=album.cover,
        source=album.source,
    )


def _entry(entry: queries.AlbumEntry) -> albums_pb2.AlbumImage:
    return albums_pb2.AlbumImage(
        image_id=entry.image_id,
        image=entry.image,
        width=entry.width,
        height=entry.height,
        source=entry.source,
        tags=entry.tags,
        rating=entry.rating,
        position=entry.position,
    )


class AlbumServicer(albums_pb2_grpc.AlbumServiceServicer):
    """``tagrate.dataset.v1.AlbumService``."""

    def __init__(self, settings: DatasetSettings, db: Database) -> None:
        self.settings = settings
        self.db = db

    def _tags(self, include: list[str], exclude: list[str]) -> TagFilter:
        return TagFilter.of(include, exclude).checked(self.settings.max_filter_tags, self.settings.max_tag_chars)

    def _reply(self, album_id: int, caller: str, created: bool = True) -> albums_pb2.AlbumReply:
        with self.db.read_connection() as conn:
            album, _ = queries.album_summary(conn, album_id, caller)
        return albums_pb2.AlbumReply(album=_album(album), created=created)

    def CreateAlbum(self, request: albums_pb2.CreateAlbumRequest, context: grpc.ServicerContext):
        owner = validation.user_name(request.owner, "user")
        name = crud.album_name(request.name)
        source = crud.album_source(request.source)
        most = self.settings.album_max_images
        names = crud.image_names(request.images, most) if request.images else []
        created_at = to_datetime(request.created_at) if request.HasField("created_at") else None
        album, created = self.db.write(
            lambda session: crud.create_album(session, owner, name, names, most, created_at, source)
        )
        assert album.id is not None
        if created:
            log.info("album created", extra={"album": album.id, "user": owner, "images": len(names)})
        return self._reply(album.id, "", created)

    def ListAlbums(self, request: albums_pb2.ListAlbumsRequest, context: grpc.ServicerContext):
        owner = validation.user_name(request.owner, "user") if request.owner else ""
        settings = self.settings
        page = paging(request.page, request.limit, settings.albums_default_limit, settings.albums_max_limit)
        tags = self._tags(list(request.include_tags), list(request.exclude_tags))
        with self.db.read_connection() as conn:
            albums, total = queries.list_albums(conn, owner, page, request.with_images, tags)
        return albums_pb2.ListAlbumsResponse(
            albums=[
                albums_pb2.AlbumWithImages(album=_album(album), images=[_entry(e) for e in images])
                for album, images in albums
            ],
            total=total,
            limit=page.limit,
        )

    def GetAlbum(self, request: albums_pb2.GetAlbumRequest, context: grpc.ServicerContext):
        album_id, caller = _album_id(request.id), _caller(request.caller)
        settings = self.settings
        page = paging(request.page, request.limit, settings.userdata_default_limit, settings.album_max_images)
        tags = self._tags(list(request.include_tags), list(request.exclude_tags))
        with self.db.read_connection() as conn:
            album, images, total = queries.get_album(conn, album_id, caller, page, tags, request.with_tags)
        return albums_pb2.GetAlbumResponse(
            album=_album(album), images=[_entry(e) for e in images], total=total, limit=page.limit
        )

    def GetAlbumNeighbours(self, request: albums_pb2.GetAlbumNeighboursRequest, context: grpc.ServicerContext):
        album_id, owner = _album_id(request.id), validation.user_name(request.owner, "user")
        with self.db.read_connection() as conn:
            found = queries.neighbours(conn, album_id, owner)

        def ref(item: queries.AlbumRef | None) -> albums_pb2.AlbumRef | None:
            return albums_pb2.AlbumRef(id=item.id, created_at=to_timestamp(item.created_at)) if item else None

        return albums_pb2.GetAlbumNeighboursResponse(
            position=found.position, total=found.total, prev=ref(found.prev), next=ref(found.next)
        )

    def UpdateAlbum(self, request: albums_pb2.UpdateAlbumRequest, context: grpc.ServicerContext):
        album_id, caller = _album_id(request.id), _caller(request.caller)
        if not request.HasField("name"):
            raise validation.missing("name")
        name = crud.album_name(request.name)
        self.db.write(lambda session: crud.rename_album(session, album_id, caller, name))
        return self._reply(album_id, caller)

    def DeleteAlbum(self, request: albums_pb2.DeleteAlbumRequest, context: grpc.ServicerContext):
        album_id, caller = _album_id(request.id), _caller(request.caller)
        held = self.db.write(lambda session: crud.delete_album(session, album_id, caller))
        log.info("album deleted", extra={"album": album_id, "images": held})
        return albums_pb2.DeleteAlbumResponse(id=album_id, images=held)

    def AddAlbumImages(self, request: albums_pb2.AddAlbumImagesRequest, context: grpc.ServicerContext):
        album_id, caller = _album_id(request.id), _caller(request.caller)
        most = self.settings.album_max_images
        names = crud.image_names(request.images, most)
        added = self.db.write(lambda session: crud.add_images(session, album_id, caller, names, request.position, most))
        return albums_pb2.AddAlbumImagesResponse(album=self._reply(album_id, caller).album, added=added)

    def RemoveAlbumImage(self, request: albums_pb2.RemoveAlbumImageRequest, context: grpc.ServicerContext):
        album_id, caller = _album_id(request.id), _caller(request.caller)
        image = validation.image_name(request.image)
        self.db.write(lambda session: crud.remove_image(session, album_id, caller, image))
        return self._reply(album_id, caller)

    def MoveAlbumImage(self, request: albums_pb2.MoveAlbumImageRequest, context: grpc.ServicerContext):
        album_id, caller = _album_id(request.id), _caller(request.caller)
        image = validation.image_name(request.image)
        position = request.position
        self.db.write(lambda session: crud.move_image(session, album_id, caller, image, position))
        return self._reply(album_id, caller)
