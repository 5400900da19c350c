"""The model-directory format: a model is a folder with its weights, its
labels and a small ``manifest.json`` (:class:`Manifest`); its id is derived
from their content.

The model id is ``<name>@<12 hex digits>``, the digits being a sha256 over the
normalised manifest, the weights and the labels: stored tag scores name the
exact model that produced them, and any change to any of the three gives a
new id (:func:`content_id`).

Labels come from a text file (one per line) or a WD ``selected_tags.csv``
(:func:`read_labels`). Loading a folder is :mod:`.loaders`' job.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .preprocess import Preprocessing, ResizeMode

MANIFEST_FILE = "manifest.json"

Format = Literal["torch-state-dict", "onnx-wd-v3", "onnx-deepdanbooru", "torchscript"]

# Danbooru tag categories as used in selected_tags.csv.
TAG_CATEGORIES = {0: "general", 1: "artist", 3: "copyright", 4: "character", 5: "meta", 9: "rating"}
RATING_PREFIX = "rating:"


class ModelDirError(ValueError):
    """A model directory is incomplete or inconsistent; the message says how."""


class Manifest(BaseModel):
    """``manifest.json``: everything needed to run a model correctly."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.+-]+$")
    format: Format
    architecture: str = Field(min_length=1)
    weights: str = Field(min_length=1, description="File name inside the model directory.")
    labels: str = Field(min_length=1, description="`.txt` (one label per line) or `.csv` (selected_tags layout).")
    input_size: int = Field(gt=0, le=4096)
    resize: ResizeMode
    resize_size: int | None = Field(None, gt=0, le=8192)
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    channel_order: Literal["RGB", "BGR"] = "RGB"
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    # What turns the model's raw outputs into probabilities.
    activation: Literal["softmax", "sigmoid", "none"] = "sigmoid"
    # Per label category; "default" covers categories not named.
    thresholds: dict[str, float] = Field(default_factory=lambda: {"default": 0.5})
    # Categories where only the single best label can apply (a rating).
    exclusive_categories: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> Manifest:
        for category, value in self.thresholds.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"threshold for {category!r} must be within [0, 1], got {value}")
        if any(s == 0 for s in self.std):
            raise ValueError("std must not contain 0")
        for file_name in (self.weights, self.labels):
            if Path(file_name).name != file_name or file_name in (".", ".."):
                raise ValueError(f"{file_name!r} must be a plain file name inside the model directory")
        return self

    def preprocessing(self) -> Preprocessing:
        return Preprocessing(
            input_size=self.input_size,
            resize=self.resize,
            resize_size=self.resize_size,
            mean=self.mean,
            std=self.std,
            channel_order=self.channel_order,
            layout=self.layout,
        )

    def canonical_json(self) -> bytes:
        """The manifest as hashed into the model id (key order and
        whitespace of the file on disk do not matter)."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode()

    @property
    def default_threshold(self) -> float:
        """The threshold that applies to ordinary (general) labels."""
        return self.thresholds.get("general", self.thresholds.get("default", 0.5))


@dataclass(frozen=True)
class Labels:
    """The model's outputs in order: the tag each reports and its category."""

    names: tuple[str, ...]
    categories: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.names)


def read_labels(path: Path) -> Labels:
    """Labels from a ``.csv`` in the WD ``selected_tags.csv`` layout
    (tag_id,name,category,count; rating tags become ``rating:<name>``) or
    from a text file with one label per line (category "general")."""
    if not path.is_file():
        raise ModelDirError(f"labels file {path} is missing")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        if not rows or not {"name", "category"} <= set(rows[0]):
            raise ModelDirError(f"{path} needs the columns tag_id,name,category,count")
        names, categories = [], []
        for line, row in enumerate(rows, start=2):
            try:
                code = int(row["category"])
            except (TypeError, ValueError):
                raise ModelDirError(f"{path} line {line}: category {row['category']!r} is not a number") from None
            category = TAG_CATEGORIES.get(code, f"category_{code}")
            name = (row["name"] or "").strip()
            if not name:
                raise ModelDirError(f"{path} line {line}: empty tag name")
            names.append(RATING_PREFIX + name if category == "rating" else name)
            categories.append(category)
    else:
        names = [line.strip() for line in text.splitlines()]
        while names and not names[-1]:
            names.pop()
        if not names or not all(names):
            raise ModelDirError(f"{path} must hold one non-empty label per line")
        categories = ["general"] * len(names)
    duplicates = {n for n in names if names.count(n) > 1} if len(set(names)) != len(names) else set()
    if duplicates:
        raise ModelDirError(f"{path} repeats labels: {', '.join(sorted(duplicates)[:5])}")
    return Labels(tuple(names), tuple(categories))


def content_id(manifest: Manifest, files: list[Path]) -> str:
    """``<name>@<first 12 hex of sha256 over manifest + files>``."""
    digest = hashlib.sha256()
    digest.update(b"manifest\0" + manifest.canonical_json() + b"\0")
    for path in files:
        digest.update(path.name.encode() + b"\0" + str(path.stat().st_size).encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return f"{manifest.name}@{digest.hexdigest()[:12]}"


def read_manifest(model_dir: Path) -> Manifest | None:
    """The directory's manifest, or None when it has none."""
    path = model_dir / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        return Manifest.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '-'}: {e['msg']}" for e in exc.errors())
        raise ModelDirError(f"{path} is invalid: {problems}") from None
