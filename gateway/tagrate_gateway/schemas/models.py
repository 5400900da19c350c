"""The model services' replies: tagging, rating, training and the global
model's full dataset."""

from __future__ import annotations

from pydantic import BaseModel, Field

from .common import TagScore, Timestamp, UserScore

# ---- tagging ----


class TagResult(BaseModel):
    """/tag."""

    model: str = Field(description="The tagger model id.")
    tags: list[TagScore] = Field(description="`[tag, score]` pairs, highest score first.")


class BulkTagResult(BaseModel):
    """/tagbulk."""

    model: str = Field(description="The tagger model id.")
    tags: list[list[TagScore]] = Field(description="One list of `[tag, score]` pairs per image, in upload order.")


# ---- rating ----


class UserRating(BaseModel):
    """/rate for one user."""

    user: str
    rating: float = Field(description="The predicted rating, 0 to 1.")
    model: str = Field(description="`personal` (the user's own model) or `global` (trained on every user).")
    model_version: str


class EveryUserRating(BaseModel):
    """/rate with ``user=all``."""

    ratings: list[UserScore] = Field(description="`[user, rating]` for every user with a model, sorted by user.")
    models: dict[str, str] = Field(description="Which model rated for each user: `personal` or `global`.")


class UserBulkRatings(BaseModel):
    """/ratebulk for one user."""

    user: str
    ratings: list[float] = Field(description="One predicted rating per image, in upload order.")


class EveryUserBulkRatings(BaseModel):
    """/ratebulk with ``user=all``."""

    users: list[str] = Field(description="Every user with a model, sorted by name.")
    ratings: list[list[float]] = Field(description="One row per image, in upload order: a rating per user.")


# ---- training ----


class JobSummary(BaseModel):
    """The last finished training."""

    job_id: str
    user: str
    outcome: str = Field(description="`succeeded`, `failed` or `stopped`.")
    metrics: dict[str, float] = Field(description="Held-out validation figures (Spearman, MAE, ...).")
    error: str | None = Field(description="Why it failed; null unless it failed.")
    started_at: Timestamp | None
    finished_at: Timestamp | None


class TrainerStatus(BaseModel):
    """The trainer's state, as every training endpoint reports it."""

    is_training: bool
    state: str = Field(description="`idle`, `running`, `stopping`, `succeeded`, `failed` or `stopped`.")
    current_user: str | None = Field(description="Whose model is training; null when none is.")
    progress: float = Field(description="0.0 to 1.0.")
    epoch: int
    epochs: int
    loss: float | None
    metrics: dict[str, float] = Field(description="Held-out validation figures, once available.")
    started_at: Timestamp | None
    eta_seconds: float | None
    last_job: JobSummary | None


class TrainerStatusReply(BaseModel):
    """/trainerstatus."""

    status: TrainerStatus


class TrainingAction(BaseModel):
    """/trainuser (202) and /stoptraining."""

    success: bool
    status: TrainerStatus


class FullDatasetState(BaseModel):
    """/verifyfulldataset."""

    valid: bool = Field(description="The global model is trained on everyone's current ratings.")


class FullDatasetCreated(BaseModel):
    """/createfulldataset."""

    success: bool
