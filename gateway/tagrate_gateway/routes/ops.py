"""Operational endpoints: /healthz, /readyz, /metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from ..deps import BackendsDep, SettingsDep

router = APIRouter(tags=["operations"])

NOT_CONFIGURED = "NOT_CONFIGURED"


@router.get("/healthz", summary="The gateway process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Every configured backend answers its gRPC health check",
    responses={503: {"description": "A backend is not serving; `services` says which."}},
)
async def readyz(backends: BackendsDep, settings: SettingsDep) -> JSONResponse:
    # Checked concurrently: one unreachable backend must not delay the others'.
    names = list(backends)
    statuses = await asyncio.gather(*(backends[n].health(settings.health_timeout_seconds) for n in names))
    services = dict(zip(names, statuses, strict=True))
    failing = [n for n, s in services.items() if s not in ("SERVING", NOT_CONFIGURED)]
    if not failing:
        return JSONResponse({"ready": True, "services": services})
    body: dict[str, Any] = {
        "error": "not ready: " + ", ".join(f"the {n} service is {services[n]}" for n in failing),
        "code": "not_ready",
        "ready": False,
        "services": services,
    }
    return JSONResponse(body, status_code=503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
