"""Health and readiness."""

from __future__ import annotations

from pydantic import BaseModel, Field

# ---- operations ----


class Health(BaseModel):
    """/healthz."""

    status: str = Field(description="Always `ok`: the process answers.")


class Readiness(BaseModel):
    """/readyz when every configured backend serves."""

    ready: bool
    services: dict[str, str] = Field(
        description="Each backend's gRPC health status (`SERVING`, `NOT_CONFIGURED`, or why not); "
        "`storage: LOW_DISK` when the dataset service's disk is below TAGRATE_MIN_FREE_BYTES."
    )


class NotReady(Readiness):
    """/readyz (503) when a backend does not serve: the error body plus the detail."""

    error: str
    code: str
