"""The dataset state: users' datasets, background work, retagging."""

from __future__ import annotations

from pydantic import BaseModel, Field

from .common import Timestamp

# ---- dataset state ----


class UserDatasetState(BaseModel):
    """One user's line in /verifydatasets."""

    user: str
    ratings: int = Field(description="How many images the user has rated.")
    model_up_to_date: bool = Field(description="The user's personal model is trained on their current ratings.")
    trained_on_ratings: int | None = Field(description="Ratings the personal model was trained on; null: no model.")
    trained_at: Timestamp | None = Field(description="When the personal model was trained; null: no model.")
    last_rating_at: Timestamp | None = Field(description="When the user last rated an image.")


class WorkCounts(BaseModel):
    """Background work of one kind still owed."""

    pending: int = Field(description="Images waiting for this work.")
    failed: int = Field(description="Images whose work is parked as failed (see /retryfailed).")


class FailedWork(BaseModel):
    """One piece of background work parked as failed."""

    image: str
    kind: str = Field(description="`tag` or `embed`.")
    error: str = Field(description="Why it failed, the last time.")
    attempts: int


class DatasetsState(BaseModel):
    """/verifydatasets."""

    valid: bool = Field(description="No user's ratings changed since their personal model was trained.")
    users: list[UserDatasetState]
    untagged_images: int = Field(description="Stored images the current tagger model has not tagged.")
    pending_predictions: int = Field(
        description="Predictions not yet computed for the current models ((user, image) pairs): a new model "
        "rescores every stored image in the background."
    )
    work: dict[str, WorkCounts] = Field(description="Background work still owed, by kind (`tag`, `embed`).")
    failed_work: list[FailedWork] = Field(description="The first few images whose background work failed.")


class RetriedWork(BaseModel):
    """/retryfailed."""

    retried: int = Field(description="Pieces of failed work queued again.")


class UpdatedTags(BaseModel):
    """/updatetags."""

    updated_images_count: int = Field(description="Images tagged by this request.")
    model: str = Field(description="The tagger model that tagged them.")
