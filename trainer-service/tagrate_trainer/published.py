"""The trainer's copy of the global head it last published.

The rater serves heads but never hands their weights back, so to show a
user how the global head does on their held-out ratings, and to shrink
personal heads toward the global taste, the trainer keeps the weights of
the global head it published, under the version the rater gave it, with a
linear prior head fitted on the same ratings (the global head itself when
it is linear). The copy is used only while the rater still serves that version;
a global head published by someone else simply has no comparison figures.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from tagrate_common.files import write_atomically
from tagrate_common.vision.rating_heads import RatingHead, deserialize_weights

log = logging.getLogger(__name__)

WEIGHTS_FILE = "global-head.pt"
PRIOR_FILE = "global-prior.pt"
INFO_FILE = "global-head.json"


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
    """One folder holding the last published global head's weights and
    identity. Writes go through a temp file and a rename; the identity
    file is written last, so a crash in between leaves the old identity,
    which then no longer matches the rater's version and is ignored."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def save(self, copy: GlobalHeadCopy) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomically(self.folder / WEIGHTS_FILE, copy.weights)
        if copy.prior is not None:
            write_atomically(self.folder / PRIOR_FILE, copy.prior)
        else:
            (self.folder / PRIOR_FILE).unlink(missing_ok=True)
        info = {"version": copy.version, "extractor_id": copy.extractor_id, "kind": copy.kind}
        write_atomically(self.folder / INFO_FILE, json.dumps(info).encode())

    def load(self, version: str, extractor_id: str) -> GlobalHeadCopy | None:
        """The copy of global head ``version`` for ``extractor_id``, or None."""
        try:
            info = json.loads((self.folder / INFO_FILE).read_text())
            if info.get("version") != version or info.get("extractor_id") != extractor_id:
                return None
            weights = (self.folder / WEIGHTS_FILE).read_bytes()
            prior_file = self.folder / PRIOR_FILE
            prior = prior_file.read_bytes() if prior_file.exists() else None
        except (OSError, ValueError) as exc:
            if not isinstance(exc, FileNotFoundError):
                log.warning("cannot read the copy of the global head: %s", exc)
            return None
        return GlobalHeadCopy(version, extractor_id, str(info.get("kind")), weights, prior)
