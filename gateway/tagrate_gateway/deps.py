"""Typed route dependencies: the settings and one client per backend,
all created once by :func:`tagrate_gateway.app.create_app`.

The providers are ``async def`` although they never await: FastAPI runs a
plain ``def`` dependency in its thread pool, a thread hop (and GIL hand-off)
per dependency per request for what is an attribute lookup.

Each backend dependency is typed with its service's stub, so
``await rater.stub.Rate(request)`` is checked (mypy, an editor) against the
request and reply types of that RPC. The dataset service serves one gRPC
service per resource: its client carries one typed stub per resource over
one channel (``tagrate_common.dataset_stubs``), so a route calls
``await dataset.stub.library.GetUserData(request)``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request

from tagrate_common.dataset_stubs import DatasetStubs
from tagrate_common.grpc_client import AsyncBackend
from tagrate_common.protos import rater_pb2_grpc, tagger_pb2_grpc, trainer_pb2_grpc

from .config import GatewaySettings

if TYPE_CHECKING:
    from tagrate_common.dataset_stubs import DatasetAsyncStubs

    # Over a grpc.aio channel a stub's methods return awaitables; the
    # generated .pyi files describe that view as *AsyncStub, a class that
    # exists only for type checkers.
    DatasetStub = DatasetAsyncStubs
    TaggerStub = tagger_pb2_grpc.TaggerServiceAsyncStub
    RaterStub = rater_pb2_grpc.RaterServiceAsyncStub
    TrainerStub = trainer_pb2_grpc.TrainerServiceAsyncStub
else:
    DatasetStub = DatasetStubs
    TaggerStub = tagger_pb2_grpc.TaggerServiceStub
    RaterStub = rater_pb2_grpc.RaterServiceStub
    TrainerStub = trainer_pb2_grpc.TrainerServiceStub


async def get_settings(request: Request) -> GatewaySettings:
    return request.app.state.settings


async def get_backends(request: Request) -> dict[str, AsyncBackend[Any]]:
    return request.app.state.backends


async def get_dataset(request: Request) -> AsyncBackend[DatasetStub]:
    return request.app.state.backends["dataset"]


async def get_tagger(request: Request) -> AsyncBackend[TaggerStub]:
    return request.app.state.backends["tagger"]


async def get_rater(request: Request) -> AsyncBackend[RaterStub]:
    return request.app.state.backends["rater"]


async def get_trainer(request: Request) -> AsyncBackend[TrainerStub]:
    return request.app.state.backends["trainer"]


SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
BackendsDep = Annotated[dict[str, AsyncBackend[Any]], Depends(get_backends)]
DatasetDep = Annotated[AsyncBackend[DatasetStub], Depends(get_dataset)]
TaggerDep = Annotated[AsyncBackend[TaggerStub], Depends(get_tagger)]
RaterDep = Annotated[AsyncBackend[RaterStub], Depends(get_rater)]
TrainerDep = Annotated[AsyncBackend[TrainerStub], Depends(get_trainer)]
