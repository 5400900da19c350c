"""The JSON bodies the gateway answers with, as pydantic models: each route
declares its own (``response_model``), so /openapi.json describes every
body and a client generator gets typed responses.

Field names are the REST contract's (docs/API.md). Tag scores are
``[name, score]`` pairs and per-user ratings ``[user, rating]`` pairs, as the
original service sent them. Fields the contract shows as ``null`` are
``X | None`` and always present; the paging fields of /getuserdata are
present only when a page was asked for. Error bodies are
:class:`tagrate_gateway.errors.ErrorBody`.
"""

from __future__ import annotations

from typing import Any

import pydantic_core
from fastapi.responses import Response
from pydantic import BaseModel, Field

TagScore = tuple[str, float]
UserScore = tuple[str, float]
Timestamp = str  # RFC 3339 UTC with a "Z", e.g. "2026-11-26T22:47:41Z"


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


class Neighbour(BaseModel):
    """The image before or after, in /getimageneighbours."""

    image: str | None = Field(description="null at the start (prev) or end (next) of the list.")
    rating: float | None = Field(description="The user's rating of it; null when unrated or no image.")


class ImageNeighbours(BaseModel):
    """/getimageneighbours."""

    image: str
    position: int = Field(description="1-based position in the /getuserdata list for the same parameters.")
    max_image: int = Field(description="The length of that list.")
    prev_image: Neighbour
    next_image: Neighbour


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


# ---- operations ----


class Health(BaseModel):
    """/healthz."""

    status: str = Field(description="Always `ok`: the process answers.")


class Readiness(BaseModel):
    """/readyz when every configured backend serves."""

    ready: bool
    services: dict[str, str] = Field(
        description="Each backend's gRPC health status (`SERVING`, `NOT_CONFIGURED`, or why not); "
        "`storage: LOW_DISK` when the dataset service's disk is below TAGRATE_MIN_FREE_BYTES."
    )


class NotReady(Readiness):
    """/readyz (503) when a backend does not serve: the error body plus the detail."""

    error: str
    code: str


def serialised(body: dict[str, Any], status_code: int = 200) -> Response:
    """``body`` as a JSON response, serialised once without validating it
    against the route's model. For bodies of up to a thousand items (a
    /getuserdata page), where building and checking a model per item would
    triple the gateway's cost of the answer; the routes' tests check these
    bodies against their models instead."""
    return Response(pydantic_core.to_json(body), status_code=status_code, media_type="application/json")


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


class FullDatasetState(BaseModel):
    """/verifyfulldataset."""

    valid: bool = Field(description="The global model is trained on everyone's current ratings.")


class FullDatasetCreated(BaseModel):
    """/createfulldataset."""

    success: bool
