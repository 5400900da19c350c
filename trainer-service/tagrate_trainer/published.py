"""The trainer's copy of the global head it last published.

The rater serves heads but never hands their weights back, so to show a
user how the global head does on their held-out ratings the trainer keeps
the weights of the global head it published, under the version the rater
gave it. The copy is used only while the rater still serves that version;
a global head published by someone else simply has no comparison figures.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tagrate_common.files import write_atomically
from tagrate_common.vision.rating_heads import RatingHead, deserialize_weights

log = logging.getLogger(__name__)

WEIGHTS_FILE = "global-head.pt"
INFO_FILE = "global-head.json"


@dataclass(frozen=True)
class GlobalHeadCopy:
    version: str
    extractor_id: str
    kind: str
    weights: bytes

    def predictor(self, dimensions: int) -> Callable[[np.ndarray], np.ndarray]:
        """A function from raw feature vectors to this head's ratings, as
        the rater computes them."""
        return RatingHead.from_tensors(self.kind, deserialize_weights(self.weights), dimensions).predict


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
        info = {"version": copy.version, "extractor_id": copy.extractor_id, "kind": copy.kind}
        write_atomically(self.folder / INFO_FILE, json.dumps(info).encode())

    def load(self, version: str, extractor_id: str) -> GlobalHeadCopy | None:
        """The copy of global head ``version`` for ``extractor_id``, or None."""
        try:
            info = json.loads((self.folder / INFO_FILE).read_text())
            if info.get("version") != version or info.get("extractor_id") != extractor_id:
                return None
            weights = (self.folder / WEIGHTS_FILE).read_bytes()
        except (OSError, ValueError) as exc:
            if not isinstance(exc, FileNotFoundError):
                log.warning("cannot read the copy of the global head: %s", exc)
            return None
        return GlobalHeadCopy(version, extractor_id, str(info.get("kind")), weights)
