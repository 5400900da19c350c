"""Typed route dependencies: the settings and one client per backend,
all created once by :func:`tagrate_gateway.app.create_app`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from tagrate_common.grpc_client import AsyncBackend

from .config import GatewaySettings


def get_settings(request: Request) -> GatewaySettings:
    return request.app.state.settings


def get_backends(request: Request) -> dict[str, AsyncBackend]:
    return request.app.state.backends


def get_dataset(request: Request) -> AsyncBackend:
    return request.app.state.backends["dataset"]


def get_tagger(request: Request) -> AsyncBackend:
    return request.app.state.backends["tagger"]


def get_rater(request: Request) -> AsyncBackend:
    return request.app.state.backends["rater"]


def get_trainer(request: Request) -> AsyncBackend:
    return request.app.state.backends["trainer"]


SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
BackendsDep = Annotated[dict[str, AsyncBackend], Depends(get_backends)]
DatasetDep = Annotated[AsyncBackend, Depends(get_dataset)]
TaggerDep = Annotated[AsyncBackend, Depends(get_tagger)]
RaterDep = Annotated[AsyncBackend, Depends(get_rater)]
TrainerDep = Annotated[AsyncBackend, Depends(get_trainer)]
