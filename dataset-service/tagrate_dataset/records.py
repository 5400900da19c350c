"""The rows every resource refers to: users and stored images (found,
required to exist, created with their queued work) and the current tagger
model. Plain functions that take a Session and raise
:mod:`tagrate_common.errors` exceptions; transactions (commit, retry after a
lost race) are the caller's, see :class:`db.Database`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, select

from tagrate_common.errors import NotFound
from tagrate_common.images import ImageInfo

from .models import Image, ImageHash, TaggerModel, User, WorkItem, WorkKind
from .similar.bands import hash_row


@dataclass(frozen=True)
class StoredImage:
    """A stored image as background work and the training stream pass it on."""

    image_id: int
    name: str


def find_user(session: Session, name: str) -> User | None:
    return session.exec(select(User).where(User.name == name)).first()


def no_user(name: str) -> NotFound:
    """The error for a user called ``name`` that does not exist."""
    return NotFound(f"there is no user '{name}'; a user is created by their first rating", "user_not_found")


def no_image(name: str) -> NotFound:
    """The error for a stored image called ``name`` that does not exist."""
    return NotFound(f"there is no stored image '{name}'", "image_not_found")


def require_user(session: Session, name: str) -> User:
    """The user called ``name``; NotFound when there is none."""
    user = find_user(session, name)
    if user is None:
        raise no_user(name)
    return user


def find_image(session: Session, name: str) -> Image | None:
    return session.exec(select(Image).where(Image.name == name)).first()


def require_image(session: Session, name: str) -> Image:
    """The stored image called ``name``; NotFound when there is none."""
    image = find_image(session, name)
    if image is None:
        raise no_image(name)
    return image


def new_image(session: Session, info: ImageInfo, filename: str, now: datetime, source: str = "") -> Image:
    image = Image(
        sha256=info.sha256,
        name=info.name,
        format=info.format,
        size_bytes=info.size_bytes,
        width=info.width,
        height=info.height,
        original_filename=_name_to_keep(filename, info.sha256),
        created_at=now,
        source=source,
    )
    session.add(image)
    session.flush()
    assert image.id is not None
    # In the image's own transaction: a stored image always has its
    # tagging and feature extraction queued (see workqueue.py), and its
    # perceptual hash stored (or, when the caller did not compute it, queued).
    kinds = list(WorkKind)
    if info.dhash is not None and info.thumb is not None:
        session.add(ImageHash(**hash_row(image.id, info.dhash, info.thumb)))
        kinds.remove(WorkKind.HASH)
    session.add_all([WorkItem(image_id=image.id, kind=kind, enqueued_at=now) for kind in kinds])
    return image


def keep_first_name(image: Image, filename: str) -> None:
    """An image keeps the first file name it was stored under: a later
    upload of the same bytes under another name changes nothing, but one
    stored with no name (a bulk import, a nameless upload, a file named by
    its content hash) takes the first name it is given."""
    if not image.original_filename:
        image.original_filename = _name_to_keep(filename, image.sha256)


def _name_to_keep(filename: str, sha256: str) -> str:
    """The original name to store for a file name: "" for a name that is
    the image's own content hash (``<sha256>.<ext>``, as an export of the
    stored names writes them), which says nothing about the image."""
    return "" if filename.rsplit(".", 1)[0].lower() == sha256 else filename[:255]


def existing_image_ids(session: Session, image_ids: Iterable[int]) -> set[int]:
    """Those of ``image_ids`` whose image is still stored (not deleted)."""
    wanted = sorted(set(image_ids))
    found: set[int] = set()
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        found.update(session.exec(select(Image.id).where(Image.id.in_(chunk))).all())  # type: ignore[union-attr,arg-type]
    return found


def existing_image_shas(session: Session, shas: Iterable[str]) -> set[str]:
    """Those of ``shas`` that name a stored image."""
    wanted = sorted(set(shas))
    found: set[str] = set()
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        found.update(session.exec(select(Image.sha256).where(Image.sha256.in_(chunk))).all())  # type: ignore[attr-defined]
    return found


def current_tagger_model(session: Session) -> TaggerModel | None:
    """The most recently registered tagger model, or None before any."""
    stmt = select(TaggerModel).order_by(TaggerModel.registered_at.desc(), TaggerModel.id.desc()).limit(1)
    return session.exec(stmt).first()
