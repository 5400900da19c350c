"""Collection management: ratings, images, tag counts, stats, neighbours."""

from __future__ import annotations

from pydantic import BaseModel, Field

from . import Neighbour
from .common import Timestamp

# ---- collection management ----


class UpdatedRating(BaseModel):
    """/updaterating."""

    success: bool = Field(description="Always true (a failure is an error body).")
    image: str
    user: str
    rating: float
    previous_rating: float | None = Field(description="The user's rating before; null when they had not rated it.")
    new_user: bool = Field(description="Whether the user was created by this request.")


class RemovedRating(BaseModel):
    """/removerating."""

    success: bool = Field(description="Always true (a failure is an error body).")
    image: str
    user: str
    rating: float = Field(description="The rating that was removed.")


class DeletedImage(BaseModel):
    """/deleteimage."""

    success: bool = Field(description="Always true (a failure is an error body).")
    image: str
    ratings_removed: int = Field(description="How many users' ratings of it were removed with it.")


class AddedImage(BaseModel):
    """/addimage with one file (`image`)."""

    success: bool = Field(description="Always true (a failure is an error body).")
    filename: str = Field(description="The stored image name (the original's field name).")
    image: str = Field(description="The stored image name: sha256 of the bytes and the detected format.")
    new_image: bool = Field(description="Whether the image was stored by this request (false: already stored).")
    near_duplicate_of: str | None = Field(
        None, description="A stored image that is a near-duplicate of this new one (perceptual hash), else null."
    )


class AddedBulkImage(BaseModel):
    """One file of a bulk /addimage."""

    image: str
    new_image: bool
    near_duplicate_of: str | None = Field(
        None, description="A stored image that is a near-duplicate of this new one (perceptual hash), else null."
    )


class AddedImages(BaseModel):
    """/addimage with several files (`images`)."""

    success: bool = Field(description="Always true (a failure is an error body).")
    images: list[AddedBulkImage] = Field(description="One per file, in upload order.")


class TagCounts(BaseModel):
    """/gettags."""

    model: str | None = Field(description="The current tagger model; null before any image was tagged.")
    tags: list[str] = Field(description="Tag names in code-point order.")
    counts: list[int] = Field(description="`counts[i]`: the number of images carrying `tags[i]`.")


class StatsTrainer(BaseModel):
    """The running training, in /getstats."""

    is_training: bool
    current_user: str | None = Field(description="Whose model is training (`all`: the global model).")
    progress: str = Field(description='A percentage with two decimals, e.g. `"12.34%"` (clients print it verbatim).')


class StatsModel(BaseModel):
    """The user's personal model, in /getstats."""

    version: str
    trained_at: Timestamp | None
    trained_on_ratings: int
    metrics: dict[str, float] = Field(description="Held-out validation figures (Spearman, MAE, ...).")


class UserStats(BaseModel):
    """/getstats."""

    user: str
    image_count: int = Field(description="Images the user rated.")
    rating_distribution: list[int] = Field(
        description="7 counts: rated images whose round(rating x 6), half to even, is 0..6."
    )
    RaterNNP_up_to_date: bool = Field(description="The user's personal model is trained on their current ratings.")
    RaterNN_up_to_date: bool = Field(description="The global model is trained on everyone's current ratings.")
    trainer: StatsTrainer | None = Field(
        description="The running training; null when none runs (or the trainer could not be asked)."
    )
    model: StatsModel | None = Field(description="The user's personal model; null when none was trained.")


class ImageNeighbours(BaseModel):
    """/getimageneighbours."""

    image: str
    position: int = Field(description="1-based position in the /getuserdata list for the same parameters.")
    max_image: int = Field(description="The length of that list.")
    prev_image: Neighbour
    next_image: Neighbour
