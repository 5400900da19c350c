"""``make run``'s own settings (``TAGRATE_RUN_*``): where the group listens,
how long a child may take to start and stop, how children are restarted."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from .config import CommonSettings


class SupervisorSettings(CommonSettings):
    """Where the group listens and how it restarts children; each child still
    reads its own settings (its ``*_PORT`` included)."""

    model_config = SettingsConfigDict(env_prefix="TAGRATE_RUN_")

    host: str = Field("127.0.0.1", description="Address every service and the gateway bind.")
    base_port: int | None = Field(
        None,
        ge=1,
        le=65535 - 8,
        description="Moves every port of the group at once: gateway B, tagger B+1, rater B+2, dataset B+3, "
        "trainer B+4, their metrics B+5..B+8. A service's own `*_PORT` / `*_METRICS_PORT` still win. "
        "Unset: each service's default port.",
    )
    replicas: int = Field(
        1,
        ge=1,
        le=8,
        description="Processes of every backend service (tagger, rater, dataset, trainer); replica k listens on "
        "its service's ports + 10*k, and the gateway and the services call them round-robin. More than one needs "
        "the dataset database on PostgreSQL (`DATABASE_URL`); the trainers share their jobs in it.",
    )
    start_timeout_seconds: float = Field(300.0, gt=0, description="How long one child may take to become ready.")
    stop_timeout_seconds: float = Field(20.0, gt=0, description="How long one child may take to stop after SIGTERM.")
    restart_backoff_seconds: float = Field(
        0.5, gt=0, description="Wait before restarting a child that died; doubles with every further death."
    )
    restart_backoff_max_seconds: float = Field(30.0, gt=0, description="Longest wait between restarts.")
    restart_reset_seconds: float = Field(
        60.0, gt=0, description="A child that stayed up this long is restarted after the shortest wait again."
    )
    crash_loop_exits: int = Field(
        5,
        ge=2,
        description="This many deaths within `TAGRATE_RUN_CRASH_LOOP_WINDOW_SECONDS` are reported as a crash loop.",
    )
    crash_loop_window_seconds: float = Field(
        60.0, gt=0, description="The window `TAGRATE_RUN_CRASH_LOOP_EXITS` counts in."
    )
