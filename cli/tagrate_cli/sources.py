"""What an import reads: the images under a folder (recursively), a ratings
file (CSV or JSON Lines: ``path,user,rating[,source]``), or ratings from
folder names. Every row that cannot be used is kept as a :class:`Problem`
with its file and line, so the summary can name it; nothing else is lost."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

# Magic bytes of the formats the gateway stores (API.md: Uploads).
_SIGNATURES = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF8", "gif"), (b"BM", "bmp"))

# The gateway's rules (API.md): user names, and ratings as plain decimals in [0, 1].
USER_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_DECIMAL = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)")

# Columns a ratings file may have. The import reads path/user/rating/source
# and original_name (the file name to store the image under, from `tagrate
# export`); the others are what `tagrate export` writes beside them, ignored here.
READ_COLUMNS = ("path", "user", "rating", "source", "original_name")
EXPORT_ONLY_COLUMNS = ("image", "rated_at", "predicted")
KNOWN_COLUMNS = frozenset(READ_COLUMNS + EXPORT_ONLY_COLUMNS)
EXPECTED_HEADER = "path,user,rating[,source]"


class BadRatingsFile(ValueError):
    """A ratings file that cannot be read as one (its CSV header lacks the
    columns that say which file and whose rating): the import stops before
    uploading anything."""


@dataclass(frozen=True)
class Problem:
    """A row, file or image the import skipped or could not store, and why."""

    where: str
    reason: str


@dataclass
class Rows:
    """Ratings and sources from a ratings file, keyed by the path under DIR."""

    ratings: dict[str, dict[str, str]] = field(default_factory=dict)  # path -> user -> rating
    sources: dict[str, str] = field(default_factory=dict)  # path -> source
    names: dict[str, str] = field(default_factory=dict)  # path -> original name
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def image_extension(head: bytes) -> str | None:
    """The stored extension for an image's first bytes, or None when the
    bytes are not one of the formats the gateway accepts."""
    for signature, ext in _SIGNATURES:
        if head.startswith(signature):
            return ext
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def parse_rating(text: str) -> str | None:
    """``text`` when it is a rating the gateway accepts, else None."""
    text = text.strip()
    if not _DECIMAL.fullmatch(text):
        return None
    value = float(text)
    if not 0 <= value <= 1 or (text.startswith("-") and value != 0):
        return None
    return text


def valid_user(name: str) -> bool:
    return bool(USER_NAME.fullmatch(name)) and name != "all"


def walk(root: Path) -> list[Path]:
    """Every file under ``root``, recursively, in a stable order."""
    return sorted(p for p in root.rglob("*") if p.is_file())


def folder_rating(name: str, integer_scale: bool) -> str | None:
    """The rating a folder name stands for: ``0``..``6`` (sixths) on the
    integer scale, a decimal 0.0-1.0 otherwise; None: not a rating folder."""
    if integer_scale:
        if name.isascii() and name.isdigit() and int(name) <= 6:
            return format(int(name) / 6, ".7g")
        return None
    return parse_rating(name) if "." in name or name in ("0", "1") else None


def ratings_from_folders(root: Path, files: list[Path], user: str) -> dict[str, dict[str, str]]:
    """``user``'s rating of each file from its top folder under ``root``.
    The folders are read as sixths (0..6) unless one of them is a decimal
    (``0.5``): then every folder is a decimal 0.0-1.0. Files outside such a
    folder are not rated."""
    tops = {f.relative_to(root).parts[0] for f in files if len(f.relative_to(root).parts) > 1}
    integer_scale = not any("." in name and parse_rating(name) is not None for name in tops)
    ratings: dict[str, dict[str, str]] = {}
    for path in files:
        parts = path.relative_to(root).parts
        rating = folder_rating(parts[0], integer_scale) if len(parts) > 1 else None
        if rating is not None:
            ratings[path.relative_to(root).as_posix()] = {user: rating}
    return ratings


def _decoded_lines(path: Path, rows: Rows) -> list[tuple[int, str]]:
    """The file's lines as text; a line that is not UTF-8 is a problem."""
    lines: list[tuple[int, str]] = []
    for number, raw in enumerate(path.read_bytes().splitlines(), 1):
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            rows.problems.append(Problem(f"{path.name}:{number}", f"not UTF-8 ({exc.reason} at byte {exc.start})"))
            continue
        if text.strip():
            lines.append((number, text))
    return lines


def read_ratings_file(path: Path, root: Path, default_user: str | None) -> Rows:
    """Rows of a CSV (with a header) or JSON Lines file (``.jsonl``/``.json``
    or a first line starting with ``{``). A row whose user and rating are
    both empty names an image to add unrated (with its source, if any). A
    CSV header that is not one a ratings file has raises
    :class:`BadRatingsFile`."""
    rows = Rows()
    lines = _decoded_lines(path, rows)
    if not lines:
        return rows
    as_json = path.suffix.lower() in (".jsonl", ".json", ".ndjson") or lines[0][1].lstrip().startswith("{")
    has_user = bool(default_user)
    records = _json_records(path, lines, rows) if as_json else _csv_records(path, lines, rows, has_user)
    for where, record in records:
        _add_record(where, record, root, default_user, rows)
    return rows


def _json_records(path: Path, lines: list[tuple[int, str]], rows: Rows) -> list[tuple[str, dict[str, str]]]:
    records = []
    for number, text in lines:
        where = f"{path.name}:{number}"
        try:
            value = json.loads(text)
        except ValueError as exc:
            rows.problems.append(Problem(where, f"not JSON: {exc}"))
            continue
        if not isinstance(value, dict):
            rows.problems.append(Problem(where, "not a JSON object"))
            continue
        unknown = sorted(set(value) - KNOWN_COLUMNS)
        if unknown:
            rows.problems.append(Problem(where, f"unknown column {', '.join(map(repr, unknown))}"))
            continue
        records.append((where, {k: "" if v is None else str(v) for k, v in value.items() if k in READ_COLUMNS}))
    return records


def check_header(path: Path, header: list[str], has_default_user: bool) -> list[str]:
    """Raises :class:`BadRatingsFile` unless ``header`` is one a ratings CSV
    may have: a ``path`` column, each column once, and a rating with a user
    (a column, or ``--user``) or neither (images added unrated). Returns the
    columns it does not know (ignored: a note says so)."""
    unknown = [name for name in header if name not in KNOWN_COLUMNS]
    if "path" not in header:
        problem = "no 'path' column"
    elif len(set(header)) != len(header):
        problem = "a column named twice"
    elif "user" in header and "rating" not in header:
        problem = "a 'user' column but no 'rating' column"
    elif "rating" in header and "user" not in header and not has_default_user:
        problem = "a 'rating' column but no 'user' column (add one, or pass --user)"
    else:
        return unknown
    if unknown:
        problem += f" and unknown column {', '.join(map(repr, unknown))}"
    got = ",".join(header) or "an empty line"
    raise BadRatingsFile(
        f"{path.name}: the header has {problem}; expected the columns {EXPECTED_HEADER}, got {got!r}. "
        "Nothing was imported."
    )


def _csv_records(
    path: Path, lines: list[tuple[int, str]], rows: Rows, has_default_user: bool
) -> list[tuple[str, dict[str, str]]]:
    (_, header_text), body = lines[0], lines[1:]
    header = [name.strip().lower() for name in next(csv.reader([header_text]))]
    unknown = check_header(path, header, has_default_user)
    if unknown:
        rows.notes.append(f"{path.name}: column {', '.join(map(repr, unknown))} is not known and was ignored")
    records = []
    for number, text in body:
        where = f"{path.name}:{number}"
        try:
            values = next(csv.reader([text]))
        except csv.Error as exc:
            rows.problems.append(Problem(where, f"not CSV: {exc}"))
            continue
        if len(values) > len(header):
            rows.problems.append(Problem(where, f"{len(values)} values but {len(header)} columns: unknown column"))
            continue
        record = dict(zip(header, [v.strip() for v in values], strict=False))
        records.append((where, {k: v for k, v in record.items() if k in READ_COLUMNS}))
    return records


def _add_record(where: str, record: dict[str, str], root: Path, default_user: str | None, rows: Rows) -> None:
    relative = record.get("path", "").strip().replace("\\", "/")
    if not relative:
        rows.problems.append(Problem(where, "no path"))
        return
    file = root / relative
    if not file.is_file():
        rows.problems.append(Problem(where, f"{relative}: no such file under {root}"))
        return
    if not file.resolve().is_relative_to(root.resolve()):
        rows.problems.append(Problem(where, f"{relative}: outside {root}"))
        return
    key = file.resolve().relative_to(root.resolve()).as_posix()
    user = record.get("user", "").strip() or (default_user or "")
    rating_text = record.get("rating", "").strip()
    source = record.get("source", "").strip()
    if rating_text or record.get("user", "").strip():
        rating = parse_rating(rating_text)
        if rating is None:
            rows.problems.append(Problem(where, f"{relative}: rating {rating_text!r} is not a number from 0 to 1"))
            return
        if not valid_user(user):
            rows.problems.append(Problem(where, f"{relative}: user {user!r} is not a valid user name"))
            return
        rows.ratings.setdefault(key, {})[user] = rating
    if source:
        rows.sources[key] = source
    original_name = record.get("original_name", "").strip()
    if original_name:
        rows.names[key] = original_name
