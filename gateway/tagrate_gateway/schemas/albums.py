"""Albums, and the original's montage posts."""

from __future__ import annotations

from pydantic import BaseModel, Field

from .common import Timestamp

# ---- albums (the original's montage posts) ----


class MontageImageMeta(BaseModel):
    width: int
    height: int
    aspect_ratio: float = Field(description="width / height.")


class MontageImage(BaseModel):
    """One image of a montage post, as the original's clients read it."""

    image_id: int = Field(description="The stored image's numeric id.")
    filename: str = Field(description="The stored image name (`<sha256>.<ext>`).")
    meta: MontageImageMeta
    sankaku_id: int | None = Field(description="The image's source when it is a post number; else null.")
    tags: list[str] = Field(description="The current tagger model's tags of the image, by name.")
    source: str | None = Field(description="Where the image came from (/addimage's `source`); null: unknown.")


class MontagePost(BaseModel):
    id: int
    created_at: Timestamp
    images: list[MontageImage] = Field(description="In album order; only those matching `filters` when given.")
    name: str = Field(description='The album\'s name ("" when it has none).')
    user: str = Field(description="The owner.")


class MontagePosts(BaseModel):
    """/getmontageposts. ``max_page``, ``page`` and ``limit`` only with ``page``."""

    montageposts: list[MontagePost] = Field(description="Newest first.")
    total: int = Field(description="The user's albums over all pages.")
    page: int | None = None
    limit: int | None = None
    max_page: int | None = None


class MontagePostReply(BaseModel):
    """/getmontagepost."""

    montagepost: MontagePost


class CreatedMontagePost(BaseModel):
    """/createmontagepost."""

    montagepost_id: int
    image_count: int


class MontagePostRef(BaseModel):
    id: int | None = Field(description="null at either end of the list.")
    created_at: Timestamp | None


class MontagePostNeighbours(BaseModel):
    """/getmontagepostneighbours: the user's albums newest first."""

    position: int = Field(description="1-based.")
    max_montagepost: int
    next_montagepost: MontagePostRef = Field(description="The next older album.")
    prev_montagepost: MontagePostRef = Field(description="The next newer album.")


class AlbumInfo(BaseModel):
    """An album, as the album endpoints answer."""

    id: int
    name: str = Field(description='"" when it has none.')
    user: str = Field(description="The owner.")
    created_at: Timestamp
    image_count: int
    cover: str | None = Field(description="The first image's stored name; null for an empty album.")


class AlbumList(BaseModel):
    """GET /albums, newest first. ``page``, ``limit`` and ``max_page`` only with ``page``."""

    albums: list[AlbumInfo]
    total: int
    page: int | None = None
    limit: int | None = None
    max_page: int | None = None


class CreatedAlbum(AlbumInfo):
    """POST /albums: 201 for a new album; 200 with ``created: false`` when
    the owner already has an album with the request's ``source``."""

    created: bool


class AlbumImageItem(BaseModel):
    image: str = Field(description="The stored image name.")
    image_id: int
    position: int = Field(description="1-based place in the album.")
    width: int
    height: int
    rating: float | None = Field(description="The owner's rating of the image; null when not rated.")
    source: str | None


class AlbumPage(AlbumInfo):
    """GET /albums/{id}: the album and (a page of) its images in album order."""

    images: list[AlbumImageItem]
    total: int = Field(description="Images matching `filters` over all pages.")
    page: int | None = None
    limit: int | None = None
    max_page: int | None = None


class DeletedAlbum(BaseModel):
    """DELETE /albums/{id}."""

    success: bool
    id: int
    images: int = Field(description="How many images it held (they stay stored).")


class AddedAlbumImages(BaseModel):
    """POST /albums/{id}/images."""

    album: AlbumInfo
    added: list[str] = Field(description="The stored names added (images already there are not).")
