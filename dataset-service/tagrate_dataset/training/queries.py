"""The training examples StreamTrainingData sends: every rating of a user
(or of every user) with the image's cached feature vector."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import and_, func, literal
from sqlmodel import Session, select

from ..models import Image, ImageFeatures, Rating, User


@dataclass(frozen=True)
class TrainingExample:
    image_id: int
    image: str
    user: str
    rating: float
    features: bytes | None  # float32 little-endian, when cached for the extractor


def training_examples_count(session: Session, user_id: int | None) -> int:
    stmt = select(func.count()).select_from(Rating)
    if user_id is not None:
        stmt = stmt.where(Rating.user_id == user_id)
    return session.exec(stmt).one()


def training_examples(
    session: Session, user_id: int | None, extractor_id: str, batch_size: int = 512
) -> Iterator[TrainingExample]:
    """Every rating of the user (``None``: of every user) with the image's
    cached feature vector from ``extractor_id``, in a stable order, fetched
    ``batch_size`` rows at a time."""
    feature = (
        and_(ImageFeatures.image_id == Rating.image_id, ImageFeatures.extractor_id == extractor_id)
        if extractor_id
        else literal(False)
    )
    stmt = (
        select(Image.id, Image.name, User.name, Rating.rating, ImageFeatures.vector)
        .select_from(Rating)
        .join(User, User.id == Rating.user_id)
        .join(Image, Image.id == Rating.image_id)
        .outerjoin(ImageFeatures, feature)
        .order_by(Rating.user_id, Rating.image_id)
    )
    if user_id is not None:
        stmt = stmt.where(Rating.user_id == user_id)
    result = session.exec(stmt.execution_options(yield_per=batch_size))
    for image_id, image, user, rating, vector in result:
        yield TrainingExample(image_id, image, user, rating, vector)
