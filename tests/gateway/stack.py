"""A real dataset service (in-process gRPC server on a free port) with a
real gateway in front of it, for end-to-end tests."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tagrate_common.dataset_stubs import DatasetStubs
from tagrate_common.grpc_client import Backend
from tagrate_common.grpc_server import GrpcServer
from tagrate_common.protos import tags_pb2
from tagrate_dataset.server import create_server
from tests.imagefactory import make_image
from tests.support import dataset_settings

from .conftest import GatewayServer, gateway_settings

# Database files change on reads (WAL checkpoints); only the blobs and caches
# are compared when checking that a refused request stored nothing.
_DATABASE_SUFFIXES = (".db", ".db-wal", ".db-shm", ".db-journal")


@dataclass
class Stack:
    dataset: GrpcServer
    dataset_addr: str
    gateway: GatewayServer
    data_dir: Path
    # Filled by seed(): kind ("jpeg", ...) -> uploaded bytes / stored name.
    images: dict[str, bytes] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.gateway.url

    def stop(self) -> None:
        self.gateway.stop()
        self.dataset.stop(0)

    def stored_files(self) -> list[tuple[str, int]]:
        """Every non-database file under the data directory, with its size."""
        return sorted(
            (str(path.relative_to(self.data_dir)), path.stat().st_size)
            for path in self.data_dir.rglob("*")
            if path.is_file() and not path.name.endswith(_DATABASE_SUFFIXES)
        )

    def state(self, http: httpx.Client, users: tuple[str, ...]) -> tuple:
        """Everything a refused request must leave unchanged."""
        datasets = http.get("/verifydatasets")
        assert datasets.status_code == 200, datasets.text
        userdata = []
        for user in users:
            response = http.get("/getuserdata", params={"user": user, "rated": "all", "sort": "name-asc"})
            assert response.status_code == 200, response.text
            userdata.append(response.json())
        return datasets.json(), userdata, self.stored_files()


def start_stack(
    database_url: str, data_dir: Path, dataset: dict[str, object] | None = None, **gateway_overrides: object
) -> Stack:
    """A dataset service (settings ``dataset`` added) with a gateway in front."""
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = dataset_settings(data_dir, database_url, **(dataset or {}))
    dataset = create_server(settings)
    addr = f"127.0.0.1:{dataset.start()}"
    try:
        gateway = GatewayServer(gateway_settings(addr, data_dir, **gateway_overrides)).start()
    except BaseException:
        dataset.stop(0)
        raise
    return Stack(dataset, addr, gateway, data_dir)


def stored_name(data: bytes, ext: str) -> str:
    return f"{hashlib.sha256(data).hexdigest()}.{ext}"


def add_rating(http: httpx.Client, data: bytes, user: str, rating: str, filename: str = "upload.jpg") -> httpx.Response:
    return http.post("/addrating", data={"user": user, "rating": rating}, files={"image": (filename, data)})


def tag_image(stack: Stack, image: str, tags: dict[str, float], model: str = "test-tagger") -> None:
    """What the tagger does after a new image arrives, over the dataset's own RPC."""
    client = Backend("dataset", stack.dataset_addr, DatasetStubs, 10, 64 << 20)
    try:
        client.stub.tags.PutImageTags(
            tags_pb2.PutImageTagsRequest(
                image=image,
                model_id=model,
                threshold=0.5,
                tags=[tags_pb2.ImageTagScore(name=n, score=s) for n, s in tags.items()],
            ),
        )
    finally:
        client.close()


def seed(stack: Stack) -> Stack:
    """Two users and three images: alice rated a JPEG (0.7) then a PNG (0.1),
    bob a WebP (0.5); the JPEG is tagged cat/sofa/indoor."""
    stack.images = {
        "jpeg": make_image("JPEG", (80, 40), seed=11),
        "png": make_image("PNG", seed=12),
        "webp": make_image("WEBP", seed=13),
    }
    stack.names = {kind: stored_name(data, "jpg" if kind == "jpeg" else kind) for kind, data in stack.images.items()}
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        for user, kind, rating in [("alice", "jpeg", "0.7"), ("alice", "png", "0.1"), ("bob", "webp", "0.5")]:
            response = add_rating(http, stack.images[kind], user, rating)
            assert response.status_code == 200, response.text
    tag_image(stack, stack.names["jpeg"], {"cat": 0.93, "indoor": 0.61, "sofa": 0.75})
    return stack
