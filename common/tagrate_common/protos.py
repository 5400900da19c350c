"""The generated gRPC stubs, imported after checking they match the protos.

Import stubs from here (``from tagrate_common.protos import ratings_pb2``)
rather than from ``tagrate.*`` directly: a stale ``gen/`` then fails at import
with a message saying how to fix it, instead of misbehaving on the wire.
"""

from __future__ import annotations

import hashlib
from importlib.metadata import version
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[2]
_PROTO_ROOT = _REPO_ROOT / "protos"


def _check_fresh() -> None:
    import tagrate  # namespace package generated into gen/

    stamps = [Path(p) / "PROTOS_SHA256" for p in tagrate.__path__]
    stamp = next((s for s in stamps if s.exists()), None)
    if stamp is None:
        raise ImportError("generated gRPC stubs have no stamp; run `make protos`")
    if not _PROTO_ROOT.is_dir():  # installed without sources (containers): trust the build
        return
    h = hashlib.sha256(f"grpcio-tools=={version('grpcio-tools')}\n".encode())
    for path in sorted(_PROTO_ROOT.rglob("*.proto")):
        h.update(str(path.relative_to(_PROTO_ROOT)).encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    if stamp.read_text().strip() != h.hexdigest():
        raise ImportError("generated gRPC stubs are stale (protos/ changed); run `make protos`")


try:
    _check_fresh()
except ModuleNotFoundError as exc:  # gen/ missing entirely
    raise ImportError("generated gRPC stubs are missing; run `make protos`") from exc

from tagrate.common.v1 import common_pb2  # noqa: E402

# The dataset service: one gRPC service per resource (same process, port and database).
from tagrate.dataset.v1 import (  # noqa: E402
    albums_pb2,
    albums_pb2_grpc,
    images_pb2,
    images_pb2_grpc,
    library_pb2,
    library_pb2_grpc,
    owned_tags_pb2,
    owned_tags_pb2_grpc,
    ratings_pb2,
    ratings_pb2_grpc,
    sessions_pb2,
    sessions_pb2_grpc,
    similar_pb2,
    similar_pb2_grpc,
    tags_pb2,
    tags_pb2_grpc,
    tasteloop_pb2,
    tasteloop_pb2_grpc,
    tokens_pb2,
    tokens_pb2_grpc,
    training_data_pb2,
    training_data_pb2_grpc,
    users_pb2,
    users_pb2_grpc,
    work_pb2,
    work_pb2_grpc,
)
from tagrate.rater.v1 import rater_pb2, rater_pb2_grpc  # noqa: E402
from tagrate.tagger.v1 import tagger_pb2, tagger_pb2_grpc  # noqa: E402
from tagrate.trainer.v1 import trainer_pb2, trainer_pb2_grpc  # noqa: E402

__all__ = [
    "albums_pb2",
    "albums_pb2_grpc",
    "common_pb2",
    "images_pb2",
    "images_pb2_grpc",
    "library_pb2",
    "library_pb2_grpc",
    "owned_tags_pb2",
    "owned_tags_pb2_grpc",
    "rater_pb2",
    "rater_pb2_grpc",
    "ratings_pb2",
    "ratings_pb2_grpc",
    "sessions_pb2",
    "sessions_pb2_grpc",
    "similar_pb2",
    "similar_pb2_grpc",
    "tagger_pb2",
    "tagger_pb2_grpc",
    "tags_pb2",
    "tags_pb2_grpc",
    "tasteloop_pb2",
    "tasteloop_pb2_grpc",
    "tokens_pb2",
    "tokens_pb2_grpc",
    "trainer_pb2",
    "trainer_pb2_grpc",
    "training_data_pb2",
    "training_data_pb2_grpc",
    "users_pb2",
    "users_pb2_grpc",
    "work_pb2",
    "work_pb2_grpc",
]
