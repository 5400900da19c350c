"""Images' tags and a user's dataset: /getimagetags, /getuserdata, /addrating."""

from __future__ import annotations

from pydantic import BaseModel, Field

from .common import TagScore, Timestamp

# ---- images ----


class ImageTags(BaseModel):
    """/getimagetags."""

    image: str = Field(description="The stored image name.")
    tagged: bool = Field(description="Whether the current tagger model has tagged the image yet.")
    model: str | None = Field(description="The tagger model the tags come from; null before any model tagged it.")
    tags: list[str] | list[TagScore] = Field(
        description="Tag names sorted by name; with `scores=true`, `[tag, score]` pairs, highest score first."
    )
    source: str | None = Field(None, description="Where the image came from (/addimage's `source`); null: unknown.")
    original_name: str | None = Field(
        None,
        description="The file name the image was first uploaded or imported under (no folders, at most 255 "
        "characters); a later upload of the same bytes under another name does not change it. null: none known.",
    )


# ---- a user's dataset ----


class UserImage(BaseModel):
    """One image of a /getuserdata listing."""

    image: str = Field(description="The stored image name.")
    rating: float | None = Field(description="The user's rating, 0 to 1; null for an image the user has not rated.")
    rated_at: Timestamp | None = Field(description="When the user rated it (UTC); null when not rated.")
    predicted: float | None = Field(
        description="The rating the user's model (personal, else global) predicts, 0 to 1, stored when the model "
        "was published or the image embedded; null when no model exists or the current model has not scored it yet."
    )


class UserData(BaseModel):
    """/getuserdata. ``page``, ``limit`` and ``max_page`` are present only
    when ``page`` was given."""

    user: str
    images: list[UserImage]
    total: int = Field(description="Images matching the filters over all pages.")
    page: int | None = Field(None, description="The page returned (only with `page`, never null).")
    limit: int | None = Field(None, description="The page size (only with `page`, never null).")
    max_page: int | None = Field(
        None, description="The last page, max(1, ceil(total / limit)) (only with `page`, never null)."
    )


class AddedRating(BaseModel):
    """/addrating."""

    image: str = Field(description="The stored image name: sha256 of the bytes and the detected format.")
    user: str
    rating: float
    new_image: bool = Field(description="Whether the image was stored by this request.")
    new_user: bool = Field(description="Whether the user was created by this request.")
    near_duplicate_of: str | None = Field(
        None, description="A stored image that is a near-duplicate of this new one (perceptual hash), else null."
    )
