"""A real dataset service and a real rater, in this process on free ports,
with clients for what the trainer tests need to set up and check."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from tagrate_common.dataset_stubs import DatasetStubs
from tagrate_common.grpc_server import GrpcServer
from tagrate_common.protos import common_pb2, images_pb2, rater_pb2, rater_pb2_grpc, ratings_pb2, users_pb2, work_pb2
from tagrate_common.vision.models import ImageModel
from tagrate_dataset.config import DatasetSettings
from tagrate_dataset.server import create_server as create_dataset_server
from tagrate_rater.config import RaterSettings
from tagrate_rater.server import create_server as create_rater_server

from .scenes import rated_scenes

DEADLINE = 60.0
EMBED_BATCH = 16


def stored_name(png: bytes) -> str:
    return f"{hashlib.sha256(png).hexdigest()}.png"


@dataclass
class Services:
    dataset_server: GrpcServer
    rater_server: GrpcServer
    dataset_addr: str
    rater_addr: str
    channels: list[grpc.Channel] = field(default_factory=list)
    # Scenes every test may rate: (png, t, the taste's rating); features cached.
    scenes: list[tuple[bytes, float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        dataset_channel = grpc.insecure_channel(self.dataset_addr)
        rater_channel = grpc.insecure_channel(self.rater_addr, options=[("grpc.max_send_message_length", 64 << 20)])
        self.channels = [dataset_channel, rater_channel]
        self.dataset = DatasetStubs(dataset_channel)
        self.rater = rater_pb2_grpc.RaterServiceStub(rater_channel)

    def stop(self) -> None:
        for channel in self.channels:
            channel.close()
        self.rater_server.stop(0)
        self.dataset_server.stop(0)

    # ---- the dataset service ----

    def add_ratings(self, user: str, items: Sequence[tuple[bytes, float]]) -> None:
        """Stores each (png, rating) as ``user``'s rating."""
        for png, rating in items:
            self.dataset.ratings.AddRating(
                ratings_pb2.AddRatingRequest(
                    image=common_pb2.ImageFile(data=png, filename="scene.png"), user=user, rating=rating
                ),
                timeout=DEADLINE,
            )

    def rate_scenes(self, user: str, count: int, offset: int = 0, invert: bool = False) -> None:
        """``user`` rates ``count`` pool scenes (from ``offset``) with the
        taste, or its opposite."""
        chosen = self.scenes[offset : offset + count]
        assert len(chosen) == count, "the scene pool is too small"
        self.add_ratings(user, [(png, 1.0 - r if invert else r) for png, _, r in chosen])

    def user(self, name: str) -> users_pb2.UserInfo:
        return self.dataset.users.GetUser(users_pb2.GetUserRequest(user=name), timeout=DEADLINE)

    def dataset_state(self, name: str) -> work_pb2.UserDatasetState:
        reply = self.dataset.work.VerifyDatasets(work_pb2.VerifyDatasetsRequest(), timeout=DEADLINE)
        return next(state for state in reply.users if state.user == name)

    # ---- the rater ----

    def cache_features(self, pngs: Sequence[bytes]) -> None:
        """What the dataset service's feature extraction does for new
        images: the rater embeds them, the dataset service caches the vectors."""
        for begin in range(0, len(pngs), EMBED_BATCH):
            batch = pngs[begin : begin + EMBED_BATCH]
            reply = self.rater.Embed(
                rater_pb2.EmbedRequest(images=[common_pb2.ImageFile(data=p, filename="scene.png") for p in batch]),
                timeout=DEADLINE,
            )
            for png, vector in zip(batch, reply.vectors, strict=True):
                self.dataset.images.PutImageFeatures(
                    images_pb2.PutImageFeaturesRequest(
                        image=stored_name(png), extractor_id=reply.extractor_id, vector=vector
                    ),
                    timeout=DEADLINE,
                )

    def head(self, user: str) -> rater_pb2.HeadMetadata | None:
        """The live head the rater holds for ``user`` (``all``: global)."""
        reply = self.rater.ListHeads(rater_pb2.ListHeadsRequest(), timeout=DEADLINE)
        return next((meta for meta in reply.heads if meta.user == user), None)

    def rate(self, user: str, pngs: Sequence[bytes]) -> rater_pb2.UserRatings:
        images = [common_pb2.ImageFile(data=p, filename="scene.png") for p in pngs]
        reply = self.rater.Rate(rater_pb2.RateRequest(images=images, user=user), timeout=DEADLINE)
        (ratings,) = reply.users
        return ratings


def start_services(data_dir: Path, model: ImageModel, scenes: int = 60) -> Services:
    """The dataset service, then the rater (it asks the dataset service
    which users exist), then the scene pool stored with cached features."""
    dataset = create_dataset_server(
        DatasetSettings(
            host="127.0.0.1",
            port=0,
            metrics_port=0,
            database_url=f"sqlite:///{data_dir / 'dataset.db'}",
            data_dir=data_dir,
            shutdown_grace_seconds=0.5,
        )
    )
    dataset_addr = f"127.0.0.1:{dataset.start()}"
    try:
        rater = create_rater_server(
            RaterSettings(
                host="127.0.0.1",
                port=0,
                metrics_port=0,
                device="cpu",
                heads_dir=data_dir / "heads",
                dataset_addr=dataset_addr,
                shutdown_grace_seconds=0.5,
            ),
            model=model,
        )
        rater_addr = f"127.0.0.1:{rater.start()}"
    except BaseException:
        dataset.stop(0)
        raise
    services = Services(dataset, rater, dataset_addr, rater_addr)
    try:
        services.scenes = rated_scenes(scenes, seed=7)
        # The pool's images are stored by a rating of a user nobody trains.
        services.add_ratings("pool", [(png, rating) for png, _, rating in services.scenes])
        services.cache_features([png for png, _, _ in services.scenes])
    except BaseException:
        services.stop()
        raise
    return services
