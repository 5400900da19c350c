"""The import engine shared by ``tagrate import`` and ``tagrate
import-original``: images with their ratings and source go to the gateway
from a pool of worker threads, and what the server already holds is skipped.

Resumable and idempotent without any local state: a stored image's name is
the sha256 of its bytes, so the ratings the server holds (one /getuserdata
per user, fetched up front) say which images and ratings are already there.
An interrupted import run again sends only what is missing."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from .client import Api, ApiError
from .progress import progress_bar
from .sources import Problem, image_extension


@dataclass(frozen=True)
class Item:
    """One image to import: where it is (for messages), how to read it,
    the ratings to give it (user -> rating text) and its source."""

    label: str
    filename: str
    load: Callable[[], bytes]
    ratings: dict[str, str] = field(default_factory=dict)
    source: str = ""
    # Set when the caller needs the stored name afterwards (Summary.stored):
    # the original's image id, which its montage posts name.
    key: str = ""


@dataclass
class Known:
    """What the server held when the import started, by sha256: each user's
    ratings, and the stored image names (None: unknown, e.g. no user yet,
    so images are uploaded and the server says whether the bytes were new)."""

    ratings: dict[str, dict[str, float]] = field(default_factory=dict)
    stored: dict[str, str] | None = None  # sha256 -> stored name

    def name_of(self, sha: str) -> str | None:
        if self.stored is not None and sha in self.stored:
            return self.stored[sha]
        return None


@dataclass
class Summary:
    """What an import did, for the closing report."""

    images_added: int = 0
    images_existing: int = 0
    ratings_added: int = 0
    ratings_changed: int = 0
    ratings_existing: int = 0
    not_images: list[str] = field(default_factory=list)
    failed: list[Problem] = field(default_factory=list)
    skipped_rows: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stored: dict[str, str] = field(default_factory=dict)  # Item.key -> stored name
    # (file label, stored name, the stored image the server says it nearly duplicates)
    near_duplicates: list[tuple[str, str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def as_dict(self) -> dict[str, object]:
        return {
            "images_added": self.images_added,
            "images_existing": self.images_existing,
            "ratings_added": self.ratings_added,
            "ratings_changed": self.ratings_changed,
            "ratings_existing": self.ratings_existing,
            "not_images": sorted(self.not_images),
            "failed": [{"where": p.where, "reason": p.reason} for p in self.failed],
            "skipped_rows": [{"where": p.where, "reason": p.reason} for p in self.skipped_rows],
            "notes": self.notes,
            "near_duplicates": [
                {"where": where, "image": image, "near_duplicate_of": other}
                for where, image, other in sorted(self.near_duplicates)
            ],
        }


def _stem(name: str) -> str:
    return name.rsplit(".", 1)[0]


def learn_known(api: Api, users: Iterable[str]) -> Known:
    """The server's state for ``users``: one /getuserdata per user (the
    first one that exists with ``rated=all``, which also lists every stored
    image); when none of them exists yet, any user /verifydatasets names
    gives the stored images."""
    known = Known()
    for user in sorted(set(users)):
        items = api.user_images(user, "all" if known.stored is None else "yes")
        if items is None:
            known.ratings[user] = {}
            continue
        if known.stored is None:
            known.stored = {_stem(i["image"]): i["image"] for i in items}
        known.ratings[user] = {_stem(i["image"]): i["rating"] for i in items if i.get("rating") is not None}
    if known.stored is None:
        try:
            others = [u["user"] for u in api.get_json("/verifydatasets").get("users", [])]
        except ApiError as exc:
            if exc.status == 401:  # no valid token: every upload would fail the same way
                raise
            others = []  # e.g. a user token may not read it: upload and let the server dedupe
        for user in others[:1]:
            items = api.user_images(user, "all") or []
            known.stored = {_stem(i["image"]): i["image"] for i in items}
    return known


def _note_near_duplicate(summary: Summary, label: str, reply: dict) -> None:
    """Records a new image the server says is a near-duplicate of a stored one."""
    other = reply.get("near_duplicate_of")
    if other:
        with summary._lock:
            summary.near_duplicates.append((label, reply["image"], other))


def import_one(api: Api, item: Item, known: Known, summary: Summary) -> None:
    """Stores ``item`` and its ratings, skipping what is already there;
    failures go into ``summary`` with the item's label."""
    try:
        data = item.load()
    except OSError as exc:
        summary.failed.append(Problem(item.label, f"cannot read: {exc.strerror or exc}"))
        return
    ext = image_extension(data[:16])
    if ext is None:
        summary.not_images.append(item.label)
        return
    sha = hashlib.sha256(data).hexdigest()
    todo = [(u, r) for u, r in sorted(item.ratings.items()) if known.ratings.get(u, {}).get(sha) != float(r)]
    summary.add(ratings_existing=len(item.ratings) - len(todo))
    name = known.name_of(sha) or next((f"{sha}.{ext}" for ratings in known.ratings.values() if sha in ratings), None)
    try:
        if name is not None:
            summary.add(images_existing=1)
        elif item.source or not todo:
            reply = api.add_image(data, item.filename, item.source or None)
            name = reply["image"]
            summary.add(images_added=1 if reply["new_image"] else 0, images_existing=0 if reply["new_image"] else 1)
            _note_near_duplicate(summary, item.label, reply)
        else:
            user, rating = todo.pop(0)
            reply = api.add_rating(data, item.filename, user, rating)
            name = reply["image"]
            summary.add(images_added=1 if reply["new_image"] else 0, images_existing=0 if reply["new_image"] else 1)
            summary.add(ratings_added=1)
            _note_near_duplicate(summary, item.label, reply)
        for user, rating in todo:
            reply = api.update_rating(name, user, rating)
            if reply.get("previous_rating") is None:
                summary.add(ratings_added=1)
            else:
                summary.add(ratings_changed=1)
        if item.key:
            summary.stored[item.key] = name
    except ApiError as exc:
        summary.failed.append(Problem(item.label, str(exc)))


def run_import(
    api: Api, items: Iterable[Item], total: int, known: Known, summary: Summary, concurrency: int, what: str
) -> Summary:
    """Imports ``items`` with ``concurrency`` workers, at most twice that
    many read ahead (``items`` may be a stream from a database), with a
    progress bar of images per second and the time left."""
    with progress_bar() as bar, ThreadPoolExecutor(concurrency, thread_name_prefix="import") as pool:
        task = bar.add_task(what, total=total)
        pending: set[Future[None]] = set()
        for item in items:
            if len(pending) >= 2 * concurrency:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                bar.advance(task, len(done))
                for future in done:
                    future.result()
            pending.add(pool.submit(import_one, api, item, known, summary))
        for future in pending:
            future.result()
            bar.advance(task, 1)
    return summary
