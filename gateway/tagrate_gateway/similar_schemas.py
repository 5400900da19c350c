"""Response models of finding things (/getsimilar, /getduplicates,
/resolveduplicates): kept apart from ``schemas.py``."""

from __future__ import annotations

from pydantic import BaseModel, Field


class SimilarImage(BaseModel):
    image: str
    similarity: float = Field(description="Cosine similarity of the feature vectors, clipped to 0..1.")
    rating: float | None = Field(description="The user's rating (null: not rated, or no `user`).")
    predicted: float | None = Field(description="The user's current predicted rating (null: none).")


class SimilarImages(BaseModel):
    """/getsimilar."""

    image: str | None = Field(description="The query image; null for a search by an uploaded example.")
    results: list[SimilarImage] = Field(description="Most similar first; the query image itself excluded.")


class DuplicateImage(BaseModel):
    image: str
    width: int
    height: int
    bytes: int
    original_name: str = Field(description='The file name it was uploaded under ("" when unknown).')


class DuplicateGroup(BaseModel):
    images: list[DuplicateImage]
    similarity: float = Field(description="The lowest feature similarity of the pairs that join the group.")


class DuplicateGroups(BaseModel):
    """/getduplicates."""

    groups: list[DuplicateGroup]
    total: int = Field(description="Groups over all pages.")
    pending: int = Field(description="Stored images not compared yet (hash or features still to come).")


class ResolvedDuplicates(BaseModel):
    """/resolveduplicates with `keep`."""

    kept: str
    removed: list[str]
    ratings_moved: int = Field(description="Ratings moved onto the kept image (users who had not rated it).")


class NotDuplicates(BaseModel):
    """/resolveduplicates with `not_duplicates`."""

    not_duplicates: list[str]
    pairs: int = Field(description="Pairs recorded as different pictures.")
