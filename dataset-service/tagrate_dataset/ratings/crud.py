"""Database operations on ratings: adding one together with its image,
setting one on a stored image, removing one. Each moves the user's snapshot
(see ``snapshots.py``) when the stored value changes. Plain functions that
take a Session; transactions are the caller's, see :class:`db.Database`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, select

from tagrate_common.errors import NotFound
from tagrate_common.images import ImageInfo

from .. import records
from ..models import ALL_SUBJECT, Image, Rating, User, utc_now
from ..predictions.jobs import queue_rescoring
from ..records import find_user, require_image, require_user
from ..snapshots import bump_versions, trained_snapshot


@dataclass(frozen=True)
class AddRatingOutcome:
    image: str
    user: str
    rating: float
    new_image: bool
    new_user: bool
    changed: bool  # the stored value is new or different (the snapshot moved)


def add_rating(
    session: Session, user_name: str, info: ImageInfo, original_filename: str, value: float
) -> AddRatingOutcome:
    """Creates the user and the image row if needed and inserts or updates
    the rating (``rated_at`` = now). ``ratings_version`` is bumped only when
    the rating is new or its value changed. The image's blob must already be
    stored. A concurrent call creating the same user, image or rating makes
    the flush fail with IntegrityError: the caller retries the transaction."""
    now = utc_now()
    user, new_user = _user_or_new(session, user_name, now)
    image = session.exec(select(Image).where(Image.sha256 == info.sha256)).first()
    new_image = image is None
    if image is None:
        image = records.new_image(session, info, original_filename, now)
    else:
        records.keep_first_name(image, original_filename)
    previous = _set_rating(session, user, image, value, now)
    return AddRatingOutcome(image.name, user.name, value, new_image, new_user, previous != value)


def _user_or_new(session: Session, name: str, now: datetime) -> tuple[User, bool]:
    user = find_user(session, name)
    if user is not None:
        return user, False
    user = User(name=name, created_at=now)
    session.add(user)
    session.flush()
    # A new user has no model of their own: the global model's scores are
    # theirs until they have one.
    global_model = trained_snapshot(session, ALL_SUBJECT)
    if global_model is not None and global_model.model_version:
        queue_rescoring(session, name, global_model.model_version)
    return user, True


def _set_rating(session: Session, user: User, image: Image, value: float, now: datetime) -> float | None:
    """Inserts or updates the rating (``rated_at`` = now), bumping the
    user's ``ratings_version`` when the value is new or different; returns
    the previous value (None: there was none)."""
    assert user.id is not None and image.id is not None
    rating = session.get(Rating, (user.id, image.id))
    previous = rating.rating if rating is not None else None
    if rating is None:
        session.add(Rating(user_id=user.id, image_id=image.id, rating=value, rated_at=now))
    else:
        rating.rating = value
        rating.rated_at = now
    session.flush()
    if previous != value:
        bump_versions(session, User.id == user.id)
    return previous


@dataclass(frozen=True)
class UpdateRatingOutcome:
    image: str
    user: str
    rating: float
    previous: float | None
    new_user: bool


def update_rating(session: Session, user_name: str, image_name: str, value: float) -> UpdateRatingOutcome:
    """Sets the user's rating of a stored image (insert or update), creating
    the user if needed. NotFound for an unknown image (nothing created)."""
    now = utc_now()
    image = require_image(session, image_name)
    user, new_user = _user_or_new(session, user_name, now)
    previous = _set_rating(session, user, image, value, now)
    return UpdateRatingOutcome(image.name, user.name, value, previous, new_user)


def remove_rating(session: Session, user_name: str, image_name: str) -> float:
    """Removes the user's rating of the image (the image stays) and returns
    the removed value. NotFound for an unknown user or image, or an image
    the user has not rated."""
    user = require_user(session, user_name)
    image = require_image(session, image_name)
    rating = session.get(Rating, (user.id, image.id))
    if rating is None:
        raise NotFound(f"user '{user_name}' has not rated image '{image_name}'", "rating_not_found")
    value = rating.rating
    session.delete(rating)
    session.flush()
    bump_versions(session, User.id == user.id)
    return value
