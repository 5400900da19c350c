"""``tagrate import DIR``: the images under a folder, rated from a ratings
file or from folder names."""

from __future__ import annotations

from pathlib import Path

from .importer import Item, Summary
from .sources import ratings_from_folders, read_ratings_file, walk


def folder_items(
    root: Path, ratings_file: Path | None, user: str | None, rating_from_folder: bool, summary: Summary
) -> list[Item]:
    """One item per file under ``root`` (files that are not images are told
    apart when read), with the ratings and sources that apply to it; rows
    that cannot be used go into ``summary.skipped_rows``. Raises
    :class:`BadRatingsFile` for a ratings file with a wrong header, before
    any file is read."""
    root = root.resolve()
    skip = {ratings_file.resolve()} if ratings_file else set()
    files = [f for f in walk(root) if f.resolve() not in skip]
    ratings: dict[str, dict[str, str]] = {}
    sources: dict[str, str] = {}
    names: dict[str, str] = {}
    if rating_from_folder and user:
        ratings = ratings_from_folders(root, files, user)
    if ratings_file:
        rows = read_ratings_file(ratings_file, root, user)
        summary.skipped_rows.extend(rows.problems)
        summary.notes.extend(rows.notes)
        for path, by_user in rows.ratings.items():
            ratings.setdefault(path, {}).update(by_user)
        sources, names = rows.sources, rows.names
    items = []
    for file in files:
        key = file.relative_to(root).as_posix()
        # Stored under its file name, or the original name a tagrate export recorded.
        filename = names.get(key, file.name)
        items.append(Item(key, filename, file.read_bytes, ratings.get(key, {}), sources.get(key, "")))
    return items
