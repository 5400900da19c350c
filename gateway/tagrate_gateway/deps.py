"""Typed route dependencies: the settings and one client per backend,
all created once by :func:`tagrate_gateway.app.create_app`.

The providers are ``async def`` although they never await: FastAPI runs a
plain ``def`` dependency in its thread pool, a thread hop (and GIL hand-off)
per dependency per request for what is an attribute lookup."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from tagrate_common.grpc_client import AsyncBackend

from .config import GatewaySettings


async def get_settings(request: Request) -> GatewaySettings:
    return request.app.state.settings


async def get_backends(request: Request) -> dict[str, AsyncBackend]:
    return request.app.state.backends


async def get_dataset(request: Request) -> AsyncBackend:
    return request.app.state.backends["dataset"]


async def get_tagger(request: Request) -> AsyncBackend:
    return request.app.state.backends["tagger"]


async def get_rater(request: Request) -> AsyncBackend:
    return request.app.state.backends["rater"]


async def get_trainer(request: Request) -> AsyncBackend:
    return request.app.state.backends["trainer"]


SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
BackendsDep = Annotated[dict[str, AsyncBackend], Depends(get_backends)]
DatasetDep = Annotated[AsyncBackend, Depends(get_dataset)]
TaggerDep = Annotated[AsyncBackend, Depends(get_tagger)]
RaterDep = Annotated[AsyncBackend, Depends(get_rater)]
TrainerDep = Annotated[AsyncBackend, Depends(get_trainer)]
