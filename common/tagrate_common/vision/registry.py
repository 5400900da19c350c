"""Registered tagger models: ``<data_dir>/models/<model id>/``, one folder
per model a person brought (a WD v3 or DeepDanbooru ONNX folder, or any
folder with a manifest), and ``<data_dir>/models/active.json`` naming the
one the tagger runs (absent or ``"default"``: the embedded
EfficientNet-Lite0), so a restart keeps the choice.

Adding checks the folder by loading it and running one image through it
(wrong input shape, tag count or missing files are refused with the
reason), then copies its weights and tag list next to a ``manifest.json``
that pins what was derived (name, input size, per-category thresholds): the
copy has the same content id as the folder it came from, and later changes
to the original do not touch it.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from .loaders import load_model_dir
from .manifest import MANIFEST_FILE, ModelDirError
from .models import ImageModel
from .onnx_taggers import DD_CHARACTER_FILE

ACTIVE_FILE = "active.json"
REGISTRATION_FILE = "registration.json"
DEFAULT_MODEL = "default"


@dataclass(frozen=True)
class RegisteredModel:
    """What ``registration.json`` records about a registered model."""

    model_id: str
    format: str
    architecture: str
    labels: int
    categories: dict[str, int]  # labels per category
    thresholds: dict[str, float]
    input_size: int
    source: str  # the folder it was added from
    added_at: str  # ISO 8601, UTC


def registry_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "models"


def _registration(model: ImageModel, source: Path) -> RegisteredModel:
    manifest = model.manifest
    return RegisteredModel(
        model_id=model.model_id,
        format=manifest.format,
        architecture=manifest.architecture,
        labels=model.label_count,
        categories=dict(sorted(Counter(model.labels.categories).items())),
        thresholds=dict(sorted(manifest.thresholds.items())),
        input_size=manifest.input_size,
        source=str(source),
        added_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


def check_model(model_dir: Path) -> ImageModel:
    """Loads ``model_dir`` on the CPU and runs a blank image through it:
    ModelDirError saying what is wrong (missing files, an input that is not
    what the format takes, scores that do not match the tag list)."""
    model = load_model_dir(Path(model_dir), "cpu", threads=1)
    try:
        model.warm_up((1,))
    except ModelDirError:
        model.close()
        raise
    except Exception as exc:  # a graph that does not run on a blank image at all
        model.close()
        raise ModelDirError(f"{model_dir}: the model failed on a blank image: {exc}") from None
    return model


def add_model(source: Path, data_dir: Path) -> tuple[RegisteredModel, bool]:
    """Checks and registers the model folder ``source``: its registration,
    and whether it is new (False: that exact model was registered before)."""
    source = Path(source).resolve()
    model = check_model(source)
    root = registry_dir(data_dir)
    target = root / model.model_id
    if (target / REGISTRATION_FILE).is_file():
        model.close()
        return read_registration(target), False
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".adding-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        manifest = model.manifest
        for name in (manifest.weights, manifest.labels, DD_CHARACTER_FILE):
            if (source / name).is_file():
                shutil.copyfile(source / name, staging / name)
        (staging / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")
        copy = check_model(staging)
        registration = _registration(copy, source)
        copy.close()
        if copy.model_id != model.model_id:  # cannot happen: the copy pins what was derived
            raise ModelDirError(f"the copy of {source} has id {copy.model_id}, not {model.model_id}")
        (staging / REGISTRATION_FILE).write_text(json.dumps(asdict(registration), indent=2) + "\n")
        os.replace(staging, target)
    finally:
        model.close()
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return registration, True


def read_registration(folder: Path) -> RegisteredModel:
    return RegisteredModel(**json.loads((folder / REGISTRATION_FILE).read_text()))


def registered_models(data_dir: Path) -> list[RegisteredModel]:
    """Every registered model, oldest first."""
    root = registry_dir(data_dir)
    if not root.is_dir():
        return []
    found = [read_registration(p) for p in root.iterdir() if (p / REGISTRATION_FILE).is_file()]
    return sorted(found, key=lambda r: (r.added_at, r.model_id))


def model_folder(data_dir: Path, model_id: str) -> Path:
    """A registered model's folder; ModelDirError naming the id when it is
    not registered."""
    folder = registry_dir(data_dir) / model_id
    if "/" in model_id or model_id.startswith(".") or not (folder / REGISTRATION_FILE).is_file():
        raise ModelDirError(f"no registered model has the id {model_id!r} (see `tagrate models list`)")
    return folder


def active_model(data_dir: Path) -> str:
    """The id of the model the tagger runs, or ``"default"``."""
    path = registry_dir(data_dir) / ACTIVE_FILE
    if not path.is_file():
        return DEFAULT_MODEL
    return str(json.loads(path.read_text()).get("model") or DEFAULT_MODEL)


def active_model_dir(data_dir: Path) -> Path | None:
    """The active registered model's folder; None for the embedded default."""
    model_id = active_model(data_dir)
    return None if model_id == DEFAULT_MODEL else model_folder(data_dir, model_id)


def set_active_model(data_dir: Path, model_id: str) -> None:
    """Records ``model_id`` (or ``"default"``) as the tagger's model, durably."""
    if model_id != DEFAULT_MODEL:
        model_folder(data_dir, model_id)
    root = registry_dir(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".{ACTIVE_FILE}.{uuid.uuid4().hex}"
    with open(staging, "w") as f:
        json.dump({"model": model_id}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(staging, root / ACTIVE_FILE)
