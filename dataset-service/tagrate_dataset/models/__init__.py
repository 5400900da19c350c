"""The dataset service's tables (SQLModel). The schema itself is created and
changed only by the Alembic migrations in ``migrations/``; a test checks that
these models and the migrations agree.

Indexes exist for the GetUserData query (see ``library/``): tag filters are
driven from ``image_tags(tagger_model_id, tag_id, score, image_id)``, and a
user's ratings are reached through ``(user_id, rated_at)``, ``(user_id,
rating)`` and the primary key ``(user_id, image_id)``.

One module per resource's tables (``core`` for the users, images, ratings
and tagger tags every resource reads); all are re-exported here, so that
importing this package registers every table.
"""

from __future__ import annotations

from .access import AccessToken, BrowserSession
from .albums import ALBUM_NAME_MAX_CHARS, ALBUM_SOURCE_MAX_CHARS, Album, AlbumImage
from .base import ALL_SUBJECT, DatasetModel, UTCDateTime, utc_now
from .core import (
    SOURCE_MAX_CHARS,
    Image,
    ImageFeatures,
    ImageTag,
    ImageTagging,
    Rating,
    Tag,
    TaggerModel,
    User,
    walked_by_image,
)
from .predictions import PendingScore, PredictedBy, Prediction, PredictionJob
from .similar import HASH_BANDS, DuplicatePair, ImageHash, NotDuplicate
from .tags import (
    HiddenTag,
    ManualTag,
    TagAlias,
    TagImplication,
    TagImplied,
    TagMember,
    TagMembersState,
    TagMemberVersion,
    TaughtImageTag,
    TaughtTag,
)
from .work import TrainedSnapshot, WorkItem, WorkKind, WorkState

__all__ = [
    "ALBUM_NAME_MAX_CHARS",
    "ALBUM_SOURCE_MAX_CHARS",
    "ALL_SUBJECT",
    "HASH_BANDS",
    "SOURCE_MAX_CHARS",
    "AccessToken",
    "Album",
    "AlbumImage",
    "BrowserSession",
    "DatasetModel",
    "DuplicatePair",
    "HiddenTag",
    "Image",
    "ImageFeatures",
    "ImageHash",
    "ImageTag",
    "ImageTagging",
    "ManualTag",
    "NotDuplicate",
    "PendingScore",
    "PredictedBy",
    "Prediction",
    "PredictionJob",
    "Rating",
    "Tag",
    "TagAlias",
    "TagImplication",
    "TagImplied",
    "TagMember",
    "TagMemberVersion",
    "TagMembersState",
    "TaggerModel",
    "TaughtImageTag",
    "TaughtTag",
    "TrainedSnapshot",
    "UTCDateTime",
    "User",
    "WorkItem",
    "WorkKind",
    "WorkState",
    "utc_now",
    "walked_by_image",
]
