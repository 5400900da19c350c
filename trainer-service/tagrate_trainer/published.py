"""The trainer's copy of the global head it last published.

The rater serves heads but never hands their weights back, so to show a
user how the global head does on their held-out ratings, and to shrink
personal heads toward the global taste, the trainer keeps the weights of
the global head it published, under the version the rater gave it, with a
linear prior head fitted on the same ratings (the global head itself when
it is linear). The copy is used only while the rater still serves that version;
a global head published by someone else simply has no comparison figures.
Trainer replicas sharing a bucket (``TRAINER_HEADS_BACKEND=s3``) share the
copy, so a personal head is shrunk toward the same global taste whichever
replica trains it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from tagrate_common.objectstore import FsObjects, ObjectStore
from tagrate_common.vision.rating_heads import RatingHead, deserialize_weights

log = logging.getLogger(__name__)

COPY_KEY = "global-head.copy"
# The layout before the copy became one object (three files, the identity last).
LEGACY_WEIGHTS, LEGACY_PRIOR, LEGACY_INFO = "global-head.pt", "global-prior.pt", "global-head.json"


@dataclass(frozen=True)
class GlobalHeadCopy:
    version: str
    extractor_id: str
    kind: str
    weights: bytes
    # A linear head fitted on the same ratings, the prior of personal heads
    # (:func:`tagrate_trainer.selection.candidates.global_prior`); None if there is none.
    prior: bytes | None = None

    def head(self, dimensions: int) -> RatingHead:
        """This head as the rater serves it (``predict``: raw feature
        vectors to ratings)."""
        return RatingHead.from_tensors(self.kind, deserialize_weights(self.weights), dimensions)

    def prior_head(self, dimensions: int) -> RatingHead | None:
        """The linear prior head, or None."""
        if self.prior is None:
            return None
        return RatingHead.from_tensors("linear", deserialize_weights(self.prior), dimensions)


class GlobalHeadCopies:
    """The last published global head's weights and identity, as one object
    in an object store (:mod:`tagrate_common.objectstore`: the trainer's
    folder, or a bucket every trainer replica shares, ``TRAINER_HEADS_BACKEND``):
    a JSON line naming the version, extractor, kind and the byte lengths,
    then the weights and the prior. One object is written all at once, so a
    reader (another replica too) sees the old copy or the new one whole,
    never one copy's identity with another's weights."""

    def __init__(self, objects: ObjectStore | Path) -> None:
        self.objects = objects if isinstance(objects, ObjectStore) else FsObjects(objects)

    def save(self, copy: GlobalHeadCopy) -> None:
        prior = copy.prior or b""
        info = {
            "version": copy.version,
            "extractor_id": copy.extractor_id,
            "kind": copy.kind,
            "weights": len(copy.weights),
            "prior": len(prior) if copy.prior is not None else None,
        }
        self.objects.put(COPY_KEY, json.dumps(info).encode() + b"\n" + copy.weights + prior)

    def load(self, version: str, extractor_id: str) -> GlobalHeadCopy | None:
        """The copy of global head ``version`` for ``extractor_id``, or None."""
        try:
            data = self.objects.get(COPY_KEY)
        except FileNotFoundError:
            return self._load_legacy(version, extractor_id)
        except OSError as exc:
            log.warning("cannot read the copy of the global head: %s", exc)
            return None
        try:
            line, _, rest = data.partition(b"\n")
            info = json.loads(line)
            weights = rest[: int(info["weights"])]
            prior = rest[len(weights) :] if info.get("prior") is not None else None
            if len(weights) != info["weights"] or (prior is not None and len(prior) != info["prior"]):
                raise ValueError("truncated")
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("cannot read the copy of the global head: %s", exc)
            return None
        if info.get("version") != version or info.get("extractor_id") != extractor_id:
            return None
        return GlobalHeadCopy(version, extractor_id, str(info.get("kind")), weights, prior)

    def _load_legacy(self, version: str, extractor_id: str) -> GlobalHeadCopy | None:
        """A copy an older trainer saved as three files in its folder."""
        try:
            info = json.loads(self.objects.get(LEGACY_INFO))
            if info.get("version") != version or info.get("extractor_id") != extractor_id:
                return None
            weights = self.objects.get(LEGACY_WEIGHTS)
            prior = self.objects.get(LEGACY_PRIOR) if self.objects.exists(LEGACY_PRIOR) else None
        except (OSError, ValueError) as exc:
            if not isinstance(exc, FileNotFoundError):
                log.warning("cannot read the copy of the global head: %s", exc)
            return None
        return GlobalHeadCopy(version, extractor_id, str(info.get("kind")), weights, prior)
