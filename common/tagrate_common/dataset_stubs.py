"""The dataset service's stubs, one per resource, over one channel.

The dataset service serves each resource as a gRPC service of its own
(``tagrate.dataset.v1.ImageService``, ``RatingService``, ...; see
protos/tagrate/dataset/v1/), all on one port. A client opens one channel to
it and calls each resource through that resource's stub::

    dataset = Backend("dataset", addr, DatasetStubs, timeout, max_bytes)
    dataset.stub.ratings.AddRating(request)
    await gateway_dataset.stub.library.GetUserData(request)   # AsyncBackend

:class:`DatasetStubs` is the ``stub_cls`` a ``Backend`` or ``AsyncBackend``
builds over its channel, so every resource's calls share the channel and its
interceptors (deadline, request id, metrics labelled by method name, errors
naming the dataset service). A client that needs one resource only may pass
that resource's own stub class instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import grpc.aio

from .protos import (
    albums_pb2_grpc,
    images_pb2_grpc,
    library_pb2_grpc,
    owned_tags_pb2_grpc,
    ratings_pb2_grpc,
    sessions_pb2_grpc,
    similar_pb2_grpc,
    tags_pb2_grpc,
    tasteloop_pb2_grpc,
    tokens_pb2_grpc,
    training_data_pb2_grpc,
    users_pb2_grpc,
    work_pb2_grpc,
)


class DatasetStubs:
    """One stub per resource service of the dataset service, sharing
    ``channel``. The annotations are the view over a blocking channel; over
    a grpc.aio one, see :class:`DatasetAsyncStubs`."""

    images: images_pb2_grpc.ImageServiceStub
    ratings: ratings_pb2_grpc.RatingServiceStub
    library: library_pb2_grpc.LibraryServiceStub
    tags: tags_pb2_grpc.TagServiceStub
    work: work_pb2_grpc.WorkServiceStub
    users: users_pb2_grpc.UserServiceStub
    training: training_data_pb2_grpc.TrainingDataServiceStub
    tokens: tokens_pb2_grpc.TokenServiceStub
    albums: albums_pb2_grpc.AlbumServiceStub
    owned_tags: owned_tags_pb2_grpc.OwnedTagServiceStub
    tasteloop: tasteloop_pb2_grpc.TasteLoopServiceStub
    sessions: sessions_pb2_grpc.SessionServiceStub
    similar: similar_pb2_grpc.SimilarServiceStub

    def __init__(self, channel: grpc.Channel | grpc.aio.Channel) -> None:
        self.images = images_pb2_grpc.ImageServiceStub(channel)
        self.ratings = ratings_pb2_grpc.RatingServiceStub(channel)
        self.library = library_pb2_grpc.LibraryServiceStub(channel)
        self.tags = tags_pb2_grpc.TagServiceStub(channel)
        self.work = work_pb2_grpc.WorkServiceStub(channel)
        self.users = users_pb2_grpc.UserServiceStub(channel)
        self.training = training_data_pb2_grpc.TrainingDataServiceStub(channel)
        self.tokens = tokens_pb2_grpc.TokenServiceStub(channel)
        self.albums = albums_pb2_grpc.AlbumServiceStub(channel)
        self.owned_tags = owned_tags_pb2_grpc.OwnedTagServiceStub(channel)
        self.tasteloop = tasteloop_pb2_grpc.TasteLoopServiceStub(channel)
        self.sessions = sessions_pb2_grpc.SessionServiceStub(channel)
        self.similar = similar_pb2_grpc.SimilarServiceStub(channel)


if TYPE_CHECKING:
    # What DatasetStubs is over a grpc.aio channel: each stub's methods return
    # awaitables. The *AsyncStub classes exist only in the generated .pyi
    # files (mypy-protobuf), so this view exists only for type checkers.
    class DatasetAsyncStubs:
        images: images_pb2_grpc.ImageServiceAsyncStub
        ratings: ratings_pb2_grpc.RatingServiceAsyncStub
        library: library_pb2_grpc.LibraryServiceAsyncStub
        tags: tags_pb2_grpc.TagServiceAsyncStub
        work: work_pb2_grpc.WorkServiceAsyncStub
        users: users_pb2_grpc.UserServiceAsyncStub
        training: training_data_pb2_grpc.TrainingDataServiceAsyncStub
        tokens: tokens_pb2_grpc.TokenServiceAsyncStub
        albums: albums_pb2_grpc.AlbumServiceAsyncStub
        owned_tags: owned_tags_pb2_grpc.OwnedTagServiceAsyncStub
        tasteloop: tasteloop_pb2_grpc.TasteLoopServiceAsyncStub
        sessions: sessions_pb2_grpc.SessionServiceAsyncStub
        similar: similar_pb2_grpc.SimilarServiceAsyncStub
