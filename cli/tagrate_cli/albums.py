"""Albums in the command line's exports and imports: ``tagrate export``
writes OUT/albums.jsonl, ``tagrate import`` makes those albums again, and
``tagrate import-original`` brings the original's montage posts across.

Each album made by an import carries a ``source`` naming where it came
from (``export:<id>``, ``original:montagepost:<id>``): the server answers an
owner's album already made under that source instead of making a second
one, so an import run again changes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .client import Api, ApiError
from .importer import Summary
from .sources import Problem

ALBUMS_FILE = "albums.jsonl"
# Names per request: well inside the gateway's 64 KiB form field (~70 bytes a name).
NAMES_PER_REQUEST = 500


def export_albums(api: Api, user: str | None) -> list[dict[str, Any]]:
    """Every album the caller may see (``user``: only theirs), oldest first,
    with its images in album order."""
    params = {"user": user} if user else {}
    albums = api.get_json("/albums", **params)["albums"]
    lines = []
    for album in reversed(albums):
        images = api.get_json(f"/albums/{album['id']}")["images"]
        lines.append(
            {
                "id": album["id"],
                "user": album["user"],
                "name": album["name"],
                "created_at": album["created_at"],
                "images": [image["image"] for image in images],
            }
        )
    return lines


def write_albums(out: Path, lines: list[dict[str, Any]]) -> None:
    partial = out / f"{ALBUMS_FILE}.partial"
    partial.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    partial.replace(out / ALBUMS_FILE)


def make_album(
    api: Api, user: str, name: str, created_at: str, source: str, images: list[str]
) -> tuple[dict[str, Any], bool]:
    """Creates the album (its images in chunks); an album the user already
    has under ``source`` is left as it is. (album, made now)."""
    fields = {"user": user, "name": name, "created_at": created_at, "source": source}
    first = images[:NAMES_PER_REQUEST]
    response = api.request("POST", "/albums", ok=(200, 201), data={**fields, "images": ",".join(first)})
    album = response.json()
    if response.status_code == 201:
        for start in range(NAMES_PER_REQUEST, len(images), NAMES_PER_REQUEST):
            chunk = ",".join(images[start : start + NAMES_PER_REQUEST])
            api.request("POST", f"/albums/{album['id']}/images", data={"images": chunk})
    return album, response.status_code == 201


def _read_lines(path: Path, summary: Summary) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
            if not isinstance(line, dict) or not isinstance(line.get("images", []), list):
                raise ValueError("not an album object")
        except ValueError as exc:
            summary.skipped_rows.append(Problem(f"{path.name} line {number}", f"not an album: {exc}"))
            continue
        yield number, line


def restore_albums(api: Api, path: Path, summary: Summary) -> int:
    """Makes the albums of an export's albums.jsonl (after its images);
    how many were made now."""
    made = 0
    for number, line in _read_lines(path, summary):
        where = f"{path.name} line {number}"
        try:
            _, new = make_album(
                api,
                str(line.get("user", "")),
                str(line.get("name", "")),
                str(line.get("created_at", "")),
                f"export:{line.get('id', number)}",
                [str(name) for name in line.get("images", [])],
            )
        except ApiError as exc:
            summary.failed.append(Problem(where, str(exc)))
            continue
        made += new
    if made:
        summary.notes.append(f"{made} albums made from {path.name}")
    return made


def import_original_posts(
    api: Api, posts: Iterable[tuple[int, str, str, list[str], list[int]]], summary: Summary
) -> int:
    """Makes an album of each original montage post ``(id, user,
    created_at, stored names, image ids not imported)``; how many were made now."""
    made = 0
    for post_id, user, created_at, names, missing in posts:
        where = f"montagepost id {post_id}"
        if missing:
            summary.skipped_rows.append(
                Problem(where, f"images not imported, left out: {', '.join(map(str, missing[:10]))}")
            )
        try:
            _, new = make_album(api, user, "", created_at, f"original:montagepost:{post_id}", names)
        except ApiError as exc:
            summary.failed.append(Problem(where, str(exc)))
            continue
        made += new
    if made:
        summary.notes.append(f"{made} montage posts made into albums")
    return made
