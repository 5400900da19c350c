"""``tagrate export OUT``: everything a user put into the server, in files
that ``tagrate import`` reads back.

OUT/ratings.jsonl and OUT/ratings.csv hold one row per rating and one per
image nobody exported rated (empty user and rating), with the columns
``path,user,rating,source,image,rated_at,predicted,original_name``; ``path``
is ``images/<file>`` (the file --images downloads: the image's original
name, made unique, or its stored name when it has none). OUT/images.jsonl
holds each image's tags with scores, tagger model, source and original name;
OUT/predictions.jsonl the predictions for images a user has not rated."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

from .client import Api, ApiError
from .progress import progress_bar

COLUMNS = ("path", "user", "rating", "source", "image", "rated_at", "predicted", "original_name")

# The name the library is listed under when no user exists yet.
LIBRARY_READER = "export"
# A file name's longest UTF-8 encoding (most file systems allow 255 bytes),
# leaving room for a " (NN)" that makes it unique.
MAX_FILE_NAME_BYTES = 200
# Characters no file name may hold on some system (Windows' reserved ones
# too, so an export copied there keeps its names).
_UNSAFE = re.compile(r'[/\\<>:"|?*]')


def decimal_text(value: float | None) -> str:
    """A rating as the plain decimal the gateway accepts (no exponent)."""
    if value is None:
        return ""
    text = repr(float(value))
    return format(Decimal(text), "f") if "e" in text or "E" in text else text


def _users(api: Api, user: str | None) -> list[str]:
    if user:
        return [user]
    return sorted(u["user"] for u in api.get_json("/verifydatasets").get("users", []))


def _write_atomic(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def _sha_of(name: str) -> str:
    return name.rsplit(".", 1)[0]  # a stored name is <sha256>.<ext>


def _holds(path: Path, sha: str) -> bool:
    """Whether ``path`` is a file with the bytes whose sha256 is ``sha``."""
    return path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == sha


def safe_file_name(original: str | None, stored: str) -> str:
    """A file name for an image: its original name without folders, control
    characters or characters some file systems refuse, at most
    MAX_FILE_NAME_BYTES (the extension kept), with the stored extension
    added when it has none; the stored name when nothing is left."""
    text = "".join(ch for ch in original or "" if unicodedata.category(ch)[0] != "C")
    name = _UNSAFE.sub("_", text).strip().strip(".").strip()
    if not name:
        return stored
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem or not 0 < len(extension) <= 16 or " " in extension:
        stem, extension = name, stored.rsplit(".", 1)[-1]
    while len(f"{stem}.{extension}".encode()) > MAX_FILE_NAME_BYTES:
        stem = stem[:-1]
    return f"{stem.rstrip()}.{extension}"


def file_names(images: list[str], originals: dict[str, str | None], folder: Path) -> dict[str, str]:
    """The file under ``folder`` each stored image is written to: its safe
    original name, ``name (2).ext``, ``name (3).ext``... when that is taken
    by another image of this export (letter case ignored: some file systems
    do) or by a file already there with other bytes, which is never
    overwritten. The same answer on a second run: an interrupted export
    resumes into the same files."""
    taken: set[str] = set()
    out: dict[str, str] = {}
    for image in sorted(images):
        wanted = safe_file_name(originals.get(image), image)
        stem, _, extension = wanted.rpartition(".")
        candidate, n = wanted, 1
        while candidate.casefold() in taken or (
            (folder / candidate).exists() and not _holds(folder / candidate, _sha_of(image))
        ):
            n += 1
            candidate = f"{stem} ({n}).{extension}"
        taken.add(candidate.casefold())
        out[image] = candidate
    return out


def _download(api: Api, target: Path, name: str) -> None:
    """The stored image ``name`` into ``target``, skipped when the file is
    there with those bytes, so an interrupted export resumes."""
    if _holds(target, _sha_of(name)):
        return
    data = api.request("GET", "/getimage", params={"image": name}).content
    partial = target.with_name(target.name + ".partial")
    partial.write_bytes(data)
    partial.replace(target)


def export(
    api: Api, out: Path, user: str | None, with_images: bool, formats: tuple[str, ...], concurrency: int
) -> dict[str, int]:
    """Writes the export into ``out``; counts of what it holds."""
    users = _users(api, user)
    listings: dict[str, list[dict[str, Any]]] = {}
    for name in users:
        items = api.user_images(name, "all")
        if items is None:
            raise ApiError(f"404: no user named {name!r}")
        listings[name] = items
    # Every stored image (any user's rated=all lists them all), or with
    # --user only the images that user rated.
    if user:
        images = sorted({i["image"] for i in listings[user] if i.get("rating") is not None})
    elif users:
        images = sorted({i["image"] for items in listings.values() for i in items})
    else:
        # Nobody has rated anything yet: a user unknown to the server sees
        # every stored image with rated=all (any name does; nothing is made).
        images = sorted({i["image"] for i in api.user_images(LIBRARY_READER, "all") or []})
    out.mkdir(parents=True, exist_ok=True)
    details: dict[str, dict[str, Any]] = {}
    with progress_bar() as bar, ThreadPoolExecutor(concurrency, thread_name_prefix="export") as pool:
        task = bar.add_task("tags", total=len(images))

        def tags_of(name: str) -> None:
            details[name] = api.get_json("/getimagetags", image=name, scores="true")
            bar.advance(task)

        list(pool.map(tags_of, images))
        originals = {name: details[name].get("original_name") for name in images}
        files: dict[str, str] = {}
        if with_images:
            folder = out / "images"
            folder.mkdir(exist_ok=True)
            files = file_names(images, originals, folder)
            task = bar.add_task("images", total=len(images))

            def fetch(name: str) -> None:
                _download(api, folder / files[name], name)
                bar.advance(task)

            list(pool.map(fetch, images))

    def path_of(name: str) -> str:
        return f"images/{files[name]}" if with_images else name

    rows: list[dict[str, Any]] = []
    predictions: list[dict[str, Any]] = []
    rated: dict[str, dict[str, float]] = {name: {} for name in images}
    for name in users:
        for item in listings[name]:
            if item.get("rating") is None:
                if item.get("predicted") is not None and item["image"] in rated:
                    predictions.append({"image": item["image"], "user": name, "predicted": item["predicted"]})
                continue
            rated.setdefault(item["image"], {})[name] = item["rating"]
            rows.append(
                {
                    "path": path_of(item["image"]),
                    "user": name,
                    "rating": decimal_text(item["rating"]),
                    "source": details.get(item["image"], {}).get("source") or "",
                    "image": item["image"],
                    "rated_at": item.get("rated_at") or "",
                    "predicted": item.get("predicted"),
                    "original_name": originals.get(item["image"]) or "",
                }
            )
    for name in images:
        if not rated[name]:
            source = details[name].get("source") or ""
            rows.append(
                {"path": path_of(name), "user": "", "rating": "", "source": source, "image": name}
                | {"rated_at": "", "predicted": None, "original_name": originals[name] or ""}
            )
    rows.sort(key=lambda r: (r["image"], r["user"]))
    if "jsonl" in formats:
        _write_atomic(out / "ratings.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    if "csv" in formats:
        partial = out / "ratings.csv.partial"
        with partial.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, COLUMNS)
            writer.writeheader()
            for row in rows:
                writer.writerow({**row, "predicted": "" if row["predicted"] is None else row["predicted"]})
        partial.replace(out / "ratings.csv")
    image_lines = [
        {
            "image": name,
            "path": path_of(name),
            "source": details[name].get("source"),
            "original_name": originals[name],
            "tagged": details[name].get("tagged"),
            "model": details[name].get("model"),
            "tags": details[name].get("tags", []),
            "ratings": rated[name],
        }
        for name in images
    ]
    _write_atomic(out / "images.jsonl", "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in image_lines))
    _write_atomic(out / "predictions.jsonl", "".join(json.dumps(p) + "\n" for p in predictions))
    return {
        "users": len(users),
        "ratings": sum(len(r) for r in rated.values()),
        "images": len(images),
        "files": len(images) if with_images else 0,
    }
