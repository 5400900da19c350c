"""Operational endpoints: /healthz, /readyz, /metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from tagrate_common.files import STORAGE_HEALTH

from ..auth import AdminOnly, Public
from ..deps import BackendsDep, SettingsDep
from ..schemas.ops import Health, NotReady, Readiness

router = APIRouter(tags=["operations"])

NOT_CONFIGURED = "NOT_CONFIGURED"
LOW_DISK = "LOW_DISK"


@router.get("/healthz", dependencies=[Public], summary="The gateway process is alive", response_model=Health)
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    dependencies=[Public],
    summary="Every configured backend answers its gRPC health check",
    response_model=Readiness,
    responses={503: {"model": NotReady, "description": "A backend is not serving; `services` says which."}},
)
async def readyz(backends: BackendsDep, settings: SettingsDep) -> JSONResponse:
    # Checked concurrently: one unreachable backend must not delay the others'.
    names = list(backends)
    statuses = await asyncio.gather(*(backends[n].health(settings.health_timeout_seconds) for n in names))
    services = dict(zip(names, statuses, strict=True))
    failing = [n for n, s in services.items() if s not in ("SERVING", NOT_CONFIGURED)]
    problems = [f"the {n} service is {services[n]}" for n in failing]
    if services.get("dataset") == "SERVING":
        # The dataset service's disk: below TAGRATE_MIN_FREE_BYTES uploads are
        # refused (507), so the install is not ready for them.
        storage = await backends["dataset"].health(settings.health_timeout_seconds, STORAGE_HEALTH)
        if storage == "NOT_SERVING":
            services["storage"] = LOW_DISK
            problems.append("the dataset service's disk is nearly full (below TAGRATE_MIN_FREE_BYTES)")
    if not problems:
        return JSONResponse({"ready": True, "services": services})
    body = NotReady(
        error="not ready: " + ", ".join(problems),
        code="not_ready",
        ready=False,
        services=services,
    )
    return JSONResponse(body.model_dump(), status_code=503)


@router.get(
    "/metrics",
    dependencies=[AdminOnly],
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"description": "The Prometheus text format.", "content": {"text/plain": {"schema": {"type": "string"}}}}
    },
)
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
