"""Settings shared by every service; each service subclasses these in its own
``config.py``. Everything comes from the environment (or a ``.env`` file);
nothing else in the code base reads ``os.environ``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# The one place the default ports live. The gateway's backend addresses and
# every service's listen port default to these.
DEFAULT_PORTS = {
    "gateway": 8000,
    "tagger": 50051,
    "rater": 50052,
    "dataset": 50053,
    "trainer": 50054,
}
DEFAULT_METRICS_PORTS = {"tagger": 9151, "rater": 9152, "dataset": 9153, "trainer": 9154}

MiB = 1024 * 1024


class CommonSettings(BaseSettings):
    """Settings every process reads, under the ``TAGRATE_`` prefix."""

    model_config = SettingsConfigDict(env_prefix="TAGRATE_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("data"), description="Root of all persistent data (one sub-folder per service).")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR.")
    log_format: str = Field("text", pattern="^(text|json)$", description="`text` for people, `json` for collectors.")
    max_upload_bytes: int = Field(20 * MiB, gt=0, description="Per-file upload limit.")
    max_image_pixels: int = Field(50_000_000, gt=0, description="Decoded-pixel limit (decompression bombs).")
    max_bulk_files: int = Field(64, gt=0, description="Files per bulk request.")

    @property
    def max_message_bytes(self) -> int:
        """gRPC message limit: a full bulk upload plus room for framing."""
        return self.max_upload_bytes * self.max_bulk_files + MiB


class ServiceSettings(CommonSettings):
    """A gRPC service: where it listens and how it shuts down."""

    host: str = Field("127.0.0.1", description="Address the gRPC server binds.")
    port: int = Field(0, ge=0, le=65535, description="gRPC port (0 picks a free one).")
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus HTTP port; 0 disables it.")
    workers: int = Field(16, gt=0, description="gRPC worker threads (concurrent calls).")
    shutdown_grace_seconds: float = Field(10.0, ge=0, description="How long SIGTERM waits for in-flight calls.")
    call_timeout_seconds: float = Field(30.0, gt=0, description="Deadline for this service's outgoing calls.")
