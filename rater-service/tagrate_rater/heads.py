"""Rating heads: small models on feature vectors, one per user plus a global
one, kept in a directory of versioned files and served as one stacked set.

**Weights format** (PublishHead's ``weights``; :func:`serialize_weights`
writes it): the bytes of ``torch.save`` of a dict of float tensors. ``D`` is
the extractor's vector size, ``H`` a hidden size (1-1024)::

    kind "linear": mean (D,), std (D,), weight (D,), bias ()
        rating = sigmoid(weight . z + bias)
    kind "mlp":    mean (D,), std (D,), w1 (H, D), b1 (H,), w2 (H,), b2 ()
        rating = sigmoid(w2 . relu(w1 z + b1) + b2)

    where z = (x - mean) / std, the normalised feature vector.

``mean`` and ``std`` may be left out (no normalisation). The sigmoid keeps
every prediction inside the rating range [0, 1]; a trainer fits the heads
with it. On load the normalisation is folded into the first layer, so
serving costs one matrix product per layer.

**Stacking**: the live heads are combined in a :class:`StackedHeads`:
every linear head is a column of one (D, K) matrix, and the MLP heads of one
hidden size share one (D, M*H) first-layer matrix, so rating an image for
every user is one matrix multiply per head shape, not one call per user.

**Store**: :class:`HeadStore` keeps each subject's heads (a user's, or the
global head's under the reserved name ``all``) in a folder named by a hash
of the name, so a user name never becomes a path. Every publish writes a new
version file atomically (temp file, fsync, rename, fsync of the folder) and
then swaps the live :class:`HeadSet` -- an immutable object -- by reference:
a request that took the set before the swap uses the old heads throughout,
one that took it after uses the new ones, never a mix. At start the newest
readable version of each subject made for the current extractor is loaded.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tagrate_common import validation
from tagrate_common.errors import Conflict, InvalidArgument
from tagrate_common.files import TEMP_PREFIX, fsync_dir, write_atomically

log = logging.getLogger(__name__)

GLOBAL = validation.ALL_USERS  # the global head's subject name
HEAD_KINDS = ("linear", "mlp")
PERSONAL, GLOBAL_MODEL = "personal", "global"

MAX_HIDDEN = 1024
MAX_METRICS = 32
MAX_METRIC_NAME = 64
MAX_ID_CHARS = 200  # the dataset service's width for ids and versions

_REQUIRED = {"linear": ("weight", "bias"), "mlp": ("w1", "b1", "w2", "b2")}
_OPTIONAL = ("mean", "std")

HEAD_FILE_SUFFIX = ".head"
FILE_FORMAT = 1


class HeadFileError(ValueError):
    """A head file on disk cannot be used; the message says why."""


# ---- the weights format ------------------------------------------------------


def serialize_weights(tensors: Mapping[str, torch.Tensor | np.ndarray | float]) -> bytes:
    """PublishHead's ``weights``: ``torch.save`` bytes of ``tensors`` as
    float32 CPU tensors (see the module docstring for the names per kind)."""
    converted = {
        name: torch.as_tensor(np.asarray(value, dtype=np.float32) if not isinstance(value, torch.Tensor) else value)
        .detach()
        .to("cpu", torch.float32)
        .contiguous()
        for name, value in tensors.items()
    }
    buffer = io.BytesIO()
    torch.save(converted, buffer)
    return buffer.getvalue()


def _load_tensors(source: Any, what: str) -> Any:
    """``torch.load`` with ``weights_only=True``: plain containers and tensors
    only, never arbitrary pickled objects."""
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a bad file
        raise InvalidArgument(
            f"{what} is not a torch.save file of tensors: {str(exc)[:200]}", "invalid_weights"
        ) from None


def deserialize_weights(data: bytes) -> dict[str, np.ndarray]:
    """The tensors in PublishHead ``weights`` bytes, as float64 arrays.
    InvalidArgument for anything but a dict of named float tensors."""
    if not data:
        raise InvalidArgument("'weights' is empty; send the head's tensors saved with torch.save", "invalid_weights")
    loaded = _load_tensors(io.BytesIO(data), "'weights'")
    return _float_arrays(loaded, "'weights'")


def _float_arrays(loaded: Any, what: str) -> dict[str, np.ndarray]:
    if not isinstance(loaded, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()
    ):
        raise InvalidArgument(f"{what} must hold a dict of named tensors", "invalid_weights")
    arrays = {}
    for name, tensor in loaded.items():
        if not tensor.is_floating_point():
            raise InvalidArgument(f"{what}: tensor '{name}' must hold floating-point numbers", "invalid_weights")
        arrays[name] = tensor.detach().to(torch.float64).numpy()
    return arrays


# ---- one head -------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RatingHead:
    """One validated head with its normalisation folded in.

    ``tensors`` are the weights as published (float32, canonical shapes),
    which is what the store writes; the folded arrays are what serves."""

    kind: str
    dimensions: int
    tensors: dict[str, np.ndarray]
    # linear: weight (D,), bias; mlp: w1 (H, D), b1 (H,), w2 (H,), b2
    folded: dict[str, np.ndarray]

    @property
    def hidden(self) -> int:
        """The hidden size of an MLP head; 0 for a linear one."""
        return len(self.folded["b1"]) if self.kind == "mlp" else 0

    @classmethod
    def from_tensors(cls, kind: str, arrays: Mapping[str, np.ndarray], dimensions: int) -> RatingHead:
        """Validates names, shapes and values against ``kind`` and the
        extractor's vector size; InvalidArgument says what is wrong."""
        if kind not in HEAD_KINDS:
            raise InvalidArgument(f"'kind' must be one of {', '.join(HEAD_KINDS)}, got {kind[:40]!r}", "invalid_kind")
        required = _REQUIRED[kind]
        unknown = sorted(set(arrays) - set(required) - set(_OPTIONAL))
        missing = [name for name in required if name not in arrays]
        if unknown or missing:
            raise InvalidArgument(
                f"a {kind} head has the tensors {', '.join(required + _OPTIONAL)} (mean and std optional); "
                + (f"missing {', '.join(missing)}" if missing else "")
                + ("; " if missing and unknown else "")
                + (f"unexpected {', '.join(unknown[:5])}" if unknown else ""),
                "invalid_weights",
            )
        for name, array in arrays.items():
            if not np.isfinite(array).all():
                raise InvalidArgument(f"tensor '{name}' holds NaN or infinite values", "invalid_weights")

        def vector(name: str, length: int) -> np.ndarray:
            array = np.asarray(arrays[name], dtype=np.float64)
            if array.size != length or array.ndim > 2 or (array.ndim == 2 and 1 not in array.shape):
                raise InvalidArgument(
                    f"tensor '{name}' must have shape ({length},), got {tuple(array.shape)}"
                    + (f"; this rater's feature vectors have {dimensions} dimensions" if length == dimensions else ""),
                    "invalid_weights",
                )
            return array.reshape(length)

        def scalar(name: str) -> float:
            array = np.asarray(arrays[name], dtype=np.float64)
            if array.size != 1:
                raise InvalidArgument(
                    f"tensor '{name}' must be a single number, got shape {array.shape}", "invalid_weights"
                )
            return float(array.reshape(()))

        mean = vector("mean", dimensions) if "mean" in arrays else np.zeros(dimensions)
        std = vector("std", dimensions) if "std" in arrays else np.ones(dimensions)
        if (std <= 0).any():
            raise InvalidArgument("tensor 'std' must be positive everywhere", "invalid_weights")
        canonical: dict[str, np.ndarray] = {}
        if "mean" in arrays:
            canonical.update(mean=mean, std=std)
        if kind == "linear":
            weight, bias = vector("weight", dimensions), scalar("bias")
            canonical.update(weight=weight, bias=np.array(bias))
            # w . (x - m) / s + b  ==  (w / s) . x + (b - w . (m / s))
            folded = {"weight": weight / std, "bias": np.array(bias - weight @ (mean / std))}
        else:
            w1 = np.asarray(arrays["w1"], dtype=np.float64)
            if w1.ndim != 2 or w1.shape[1] != dimensions or not 1 <= w1.shape[0] <= MAX_HIDDEN:
                raise InvalidArgument(
                    f"tensor 'w1' must have shape (H, {dimensions}) with 1 <= H <= {MAX_HIDDEN}, got "
                    f"{tuple(w1.shape)}; this rater's feature vectors have {dimensions} dimensions",
                    "invalid_weights",
                )
            hidden = w1.shape[0]
            b1, w2, b2 = vector("b1", hidden), vector("w2", hidden), scalar("b2")
            canonical.update(w1=w1, b1=b1, w2=w2, b2=np.array(b2))
            folded = {"w1": w1 / std, "b1": b1 - (w1 / std) @ mean, "w2": w2, "b2": np.array(b2)}
        return cls(
            kind,
            dimensions,
            {name: a.astype(np.float32) for name, a in canonical.items()},
            {name: a.astype(np.float32) for name, a in folded.items()},
        )

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Ratings in [0, 1], float32 (N,), for feature vectors (N, D)."""
        return StackedHeads([self]).predict(features)[:, 0]


# ---- many heads at once ------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _MlpGroup:
    columns: torch.Tensor  # output columns of the heads in this group
    hidden: int
    w1: torch.Tensor  # (D, M*H): every head's first layer side by side
    b1: torch.Tensor  # (M*H,)
    w2: torch.Tensor  # (M, H)
    b2: torch.Tensor  # (M,)


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


class StackedHeads:
    """Many heads evaluated together: column ``i`` of :meth:`predict` is
    ``heads[i]``'s rating. Linear heads cost one (N, D) x (D, K) product in
    total; MLP heads one product per hidden size.

    The products run in torch, on the CPU thread pool the backbone already
    uses. numpy's OpenBLAS would bring a second pool whose threads keep
    spinning for a while after each product and take the cores from the
    next forward pass (measured: the backbone ran ~2x slower after every
    rating for 1,000 users on a 2-core machine)."""

    def __init__(self, heads: Sequence[RatingHead]) -> None:
        self.count = len(heads)
        linear = [i for i, head in enumerate(heads) if head.kind == "linear"]
        self._linear_columns = torch.tensor(linear, dtype=torch.long)
        self._all_linear = bool(linear) and len(linear) == self.count
        if linear:
            self._linear_w = _tensor(np.stack([heads[i].folded["weight"] for i in linear], axis=1))
            self._linear_b = _tensor(np.array([heads[i].folded["bias"] for i in linear]))
        by_hidden: dict[int, list[int]] = {}
        for i, head in enumerate(heads):
            if head.kind == "mlp":
                by_hidden.setdefault(head.hidden, []).append(i)
        self._groups = [
            _MlpGroup(
                columns=torch.tensor(members, dtype=torch.long),
                hidden=hidden,
                w1=_tensor(np.concatenate([heads[i].folded["w1"] for i in members], axis=0).T),
                b1=_tensor(np.concatenate([heads[i].folded["b1"] for i in members])),
                w2=_tensor(np.stack([heads[i].folded["w2"] for i in members])),
                b2=_tensor(np.array([heads[i].folded["b2"] for i in members])),
            )
            for hidden, members in sorted(by_hidden.items())
        ]

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Ratings, float32 (N, count), for feature vectors (N, D)."""
        with torch.inference_mode():
            x = _tensor(features)
            if self._all_linear:  # the common case: no scatter into columns
                return torch.sigmoid(x @ self._linear_w + self._linear_b).numpy()
            logits = torch.empty((len(x), self.count), dtype=torch.float32)
            if len(self._linear_columns):
                logits[:, self._linear_columns] = x @ self._linear_w + self._linear_b
            for group in self._groups:
                hidden = torch.relu(x @ group.w1 + group.b1).reshape(len(x), len(group.columns), group.hidden)
                logits[:, group.columns] = torch.einsum("nmh,mh->nm", hidden, group.w2) + group.b2
            return torch.sigmoid(logits).numpy()


# ---- metadata, loaded heads, the live set ---------------------------------------------


@dataclass(frozen=True)
class HeadInfo:
    """What a head file records about its head."""

    user: str  # GLOBAL for the global head
    extractor_id: str
    snapshot_id: str
    metrics: dict[str, float]
    created_at: datetime
    version: str
    kind: str

    @property
    def model(self) -> str:
        """``personal`` or ``global``, as /rate reports it."""
        return GLOBAL_MODEL if self.user == GLOBAL else PERSONAL

    def to_json(self) -> str:
        return json.dumps(
            {
                "user": self.user,
                "extractor_id": self.extractor_id,
                "snapshot_id": self.snapshot_id,
                "metrics": self.metrics,
                "created_at": self.created_at.isoformat(),
                "version": self.version,
                "kind": self.kind,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> HeadInfo:
        raw = json.loads(text)
        return cls(
            user=str(raw["user"]),
            extractor_id=str(raw["extractor_id"]),
            snapshot_id=str(raw["snapshot_id"]),
            metrics={str(k): float(v) for k, v in raw["metrics"].items()},
            created_at=datetime.fromisoformat(raw["created_at"]),
            version=str(raw["version"]),
            kind=str(raw["kind"]),
        )


@dataclass(frozen=True, eq=False)
class LoadedHead:
    info: HeadInfo
    head: RatingHead


class HeadSet:
    """An immutable set of live heads, at most one per subject, stacked for
    rating every user at once. Publishing builds a new set."""

    def __init__(self, heads: Iterable[LoadedHead] = ()) -> None:
        self._heads: dict[str, LoadedHead] = {loaded.info.user: loaded for loaded in heads}
        self._columns = {subject: i for i, subject in enumerate(self._heads)}
        self._stack = StackedHeads([loaded.head for loaded in self._heads.values()])

    def __len__(self) -> int:
        return len(self._heads)

    def get(self, subject: str) -> LoadedHead | None:
        return self._heads.get(subject)

    def serving(self, user: str) -> LoadedHead | None:
        """The head that rates ``user``: their own, else the global one."""
        return self._heads.get(user) or self._heads.get(GLOBAL)

    def infos(self) -> list[HeadInfo]:
        """Every live head's metadata, sorted by subject."""
        return [self._heads[subject].info for subject in sorted(self._heads)]

    def predict_all(self, features: np.ndarray) -> np.ndarray:
        """Every head's ratings at once, float32 (N, len(self)); see :meth:`column`."""
        return self._stack.predict(features)

    def column(self, subject: str) -> int:
        """The column of :meth:`predict_all` that holds ``subject``'s head."""
        return self._columns[subject]

    def with_head(self, loaded: LoadedHead) -> HeadSet:
        """A new set with ``loaded`` replacing its subject's head."""
        heads = dict(self._heads)
        heads[loaded.info.user] = loaded
        return HeadSet(heads.values())


# ---- the store --------------------------------------------------------------------


def subject_key(subject: str) -> str:
    """The folder name of a subject's heads: a hash, so no user name (valid
    or not, any case) ever becomes part of a path."""
    return hashlib.sha256(subject.encode()).hexdigest()[:32]


def _sequence(path: Path) -> int | None:
    """The sequence number a head file's name starts with."""
    prefix = path.name.split("-", 1)[0]
    return int(prefix) if prefix.isdigit() else None


def _check_text(value: str, param: str, required: bool) -> str:
    if not value and required:
        raise validation.missing(param)
    if len(value) > MAX_ID_CHARS or not value.isprintable():
        raise InvalidArgument(f"'{param}' must be at most {MAX_ID_CHARS} printable characters", "invalid_parameter")
    return value


def _check_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    if len(metrics) > MAX_METRICS:
        raise InvalidArgument(f"'metadata.metrics' may hold at most {MAX_METRICS} figures", "invalid_metrics")
    for name, value in metrics.items():
        if not 1 <= len(name) <= MAX_METRIC_NAME or not name.isprintable():
            raise InvalidArgument(
                f"metric names must be 1-{MAX_METRIC_NAME} printable characters, got {name[:40]!r}", "invalid_metrics"
            )
        if not math.isfinite(value):
            raise InvalidArgument(f"metric '{name}' must be a finite number, got {value!r}", "invalid_metrics")
    return {name: float(metrics[name]) for name in sorted(metrics)}


@dataclass
class HeadStore:
    """The heads folder and the live :class:`HeadSet` built from it.

    Construct with :meth:`open`. ``live`` is read without a lock: it is
    replaced, never changed, so one read gives a consistent set."""

    root: Path
    extractor_id: str
    dimensions: int
    keep_versions: int = 5
    live: HeadSet = field(default_factory=HeadSet)
    _sequences: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, root: Path, extractor_id: str, dimensions: int, keep_versions: int = 5) -> HeadStore:
        """Creates the folder if needed and loads, for each subject, the
        newest readable head made for ``extractor_id``."""
        root.mkdir(parents=True, exist_ok=True)
        store = cls(root, extractor_id, dimensions, keep_versions)
        store._load()
        return store

    def _load(self) -> None:
        loaded: list[LoadedHead] = []
        skipped_extractors: dict[str, int] = {}
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for temp in folder.glob(f"{TEMP_PREFIX}*"):
                temp.unlink(missing_ok=True)  # a publish interrupted before its rename
            files = sorted(
                (p for p in folder.glob(f"*{HEAD_FILE_SUFFIX}") if _sequence(p) is not None),
                key=lambda p: _sequence(p) or 0,
                reverse=True,
            )
            if files:
                self._sequences[folder.name] = _sequence(files[0]) or 0
            for path in files:
                try:
                    head = read_head_file(path, self.dimensions, self.extractor_id)
                except HeadFileError as exc:
                    log.warning("skipping head file %s: %s", path, exc)
                    continue
                if head is None:
                    skipped_extractors[folder.name] = skipped_extractors.get(folder.name, 0) + 1
                    continue
                if subject_key(head.info.user) != folder.name:
                    log.warning("skipping head file %s: it belongs to another folder", path)
                    continue
                loaded.append(head)
                break
        if skipped_extractors:
            log.warning(
                "%d head files were made for another feature extractor than %s and are not served; "
                "retrain those users' heads",
                sum(skipped_extractors.values()),
                self.extractor_id,
            )
        self.live = HeadSet(loaded)
        log.info("loaded %d rating heads from %s", len(loaded), self.root)

    def publish(
        self,
        *,
        user: str,
        kind: str,
        weights: bytes,
        extractor_id: str,
        snapshot_id: str = "",
        metrics: Mapping[str, float] | None = None,
        created_at: datetime | None = None,
    ) -> HeadInfo:
        """Validates a newly trained head, writes it as the subject's next
        version and makes it live. ``user`` ``all`` is the global head.
        Conflict for a head made for another extractor; InvalidArgument for
        anything malformed. Returns the head's metadata with its version."""
        subject = validation.user_name(user, "metadata.user", allow_all=True)
        _check_text(extractor_id, "metadata.extractor_id", required=True)
        if extractor_id != self.extractor_id:
            raise Conflict(
                f"the head was trained on features of extractor '{extractor_id}', but this rater runs "
                f"'{self.extractor_id}'; retrain it on this extractor's features",
                "extractor_mismatch",
            )
        head = RatingHead.from_tensors(kind, deserialize_weights(weights), self.dimensions)
        snapshot_id = _check_text(snapshot_id, "metadata.snapshot_id", required=False)
        checked_metrics = _check_metrics(metrics or {})
        digest = hashlib.sha256(weights).hexdigest()[:8]
        folder = self.root / subject_key(subject)
        with self._lock:
            sequence = self._sequences.get(folder.name, 0) + 1
            info = HeadInfo(
                user=subject,
                extractor_id=extractor_id,
                snapshot_id=snapshot_id,
                metrics=checked_metrics,
                created_at=created_at or datetime.now(UTC),
                version=f"v{sequence}-{digest}",
                kind=kind,
            )
            if not folder.is_dir():
                folder.mkdir()
                fsync_dir(self.root)
            write_atomically(folder / f"{sequence:08d}-{digest}{HEAD_FILE_SUFFIX}", head_file_bytes(info, head))
            self._sequences[folder.name] = sequence
            self.live = self.live.with_head(LoadedHead(info, head))
            self._prune(folder)
        log.info("published %s head %s for %s", kind, info.version, subject)
        return info

    def _prune(self, folder: Path) -> None:
        """Deletes a subject's versions beyond the newest ``keep_versions``."""
        files = sorted(
            (p for p in folder.glob(f"*{HEAD_FILE_SUFFIX}") if _sequence(p) is not None),
            key=lambda p: _sequence(p) or 0,
            reverse=True,
        )
        for old in files[self.keep_versions :]:
            try:
                old.unlink()
            except OSError as exc:  # a stale file costs disk space only
                log.warning("could not delete old head file %s: %s", old, exc)


def head_file_bytes(info: HeadInfo, head: RatingHead) -> bytes:
    """A head file: ``torch.save`` of the format number, the metadata as
    JSON text and the head's tensors (plain types only, so it loads with
    ``weights_only=True``)."""
    buffer = io.BytesIO()
    torch.save(
        {
            "format": FILE_FORMAT,
            "metadata": info.to_json(),
            "tensors": {name: torch.from_numpy(array) for name, array in head.tensors.items()},
        },
        buffer,
    )
    return buffer.getvalue()


def read_head_file(path: Path, dimensions: int, extractor_id: str) -> LoadedHead | None:
    """The head in ``path``, or None when it was made for another extractor.
    HeadFileError when the file is unreadable or inconsistent."""
    try:
        raw = _load_tensors(path, str(path))
        if not isinstance(raw, dict) or raw.get("format") != FILE_FORMAT:
            raise HeadFileError(f"not a format {FILE_FORMAT} head file")
        info = HeadInfo.from_json(raw["metadata"])
        if info.extractor_id != extractor_id:
            return None
        head = RatingHead.from_tensors(info.kind, _float_arrays(raw["tensors"], "the file"), dimensions)
    except HeadFileError:
        raise
    except InvalidArgument as exc:
        raise HeadFileError(exc.message) from None
    except (KeyError, TypeError, ValueError) as exc:
        raise HeadFileError(f"malformed metadata: {exc}") from None
    return LoadedHead(info, head)
