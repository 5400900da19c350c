"""The rater's settings: every environment variable it reads (``RATER_*``
plus the shared ``TAGRATE_*`` ones)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from tagrate_common.config import DEFAULT_METRICS_PORTS, DEFAULT_PORTS, ModelServiceSettings
from tagrate_common.objectstore import Backend, ObjectStore, S3Settings


class RaterSettings(ModelServiceSettings, S3Settings):
    """Where the rater listens, which feature extractor it runs, where its
    heads live and where the dataset service (the user directory) is."""

    model_config = SettingsConfigDict(env_prefix="RATER_")

    port: int = Field(DEFAULT_PORTS["rater"], ge=0, le=65535, description="gRPC port (0 picks a free one).")
    metrics_port: int = Field(
        DEFAULT_METRICS_PORTS["rater"], ge=0, le=65535, description="Prometheus HTTP port; 0 disables it."
    )
    model_dir: Path | None = Field(
        None,
        description="The feature extractor's model directory: an EfficientNet-Lite0 state dict (its pooled "
        "features are used) or a TorchScript model whose output is the feature vector. Unset: the embedded "
        "EfficientNet-Lite0's pooled 1280-d features.",
    )
    heads_dir: Path | None = Field(
        None,
        description="The rating heads' store (a volume in deployments); derived when unset: <data_dir>/rater/heads.",
    )
    heads_backend: Backend = Field(
        "fs",
        description="Where the heads are kept: `fs`, the folder heads_dir (a ReadWriteMany volume when several "
        "replicas run); `s3`, the bucket RATER_S3_BUCKET under `<RATER_S3_PREFIX>heads/` (docs/storage.md), "
        "which replicas share without a shared volume.",
    )
    heads_reload_seconds: float = Field(
        2.0,
        ge=0,
        description="How often to look for heads that other replicas published into a shared heads folder (a "
        "small object read per look; only changed users' heads are read again). 0: never; a replica then serves "
        "the heads it found at start and the ones published to it.",
    )
    keep_head_versions: int = Field(
        10,
        ge=1,
        # The contract (API.md, "A taste loop that runs itself") names the model history's length
        # TRAINER_KEEP_VERSIONS: one setting for the whole system, read here where the versions live.
        validation_alias="TRAINER_KEEP_VERSIONS",
        description="Model versions (head files) kept per user (the live one and the ones before it): the "
        "model history /getmodels lists and /usemodel can switch back to; older ones are deleted.",
    )
    dataset_addr: str = Field(
        f"127.0.0.1:{DEFAULT_PORTS['dataset']}",
        description='host:port of the dataset service, which says which users exist; "" means not configured '
        "(rating then answers UNAVAILABLE).",
    )

    @property
    def heads_path(self) -> Path:
        return self.heads_dir or self.data_dir / "rater" / "heads"

    def heads_store(self) -> ObjectStore:
        """The object store the heads live in (``heads_backend``)."""
        return self.object_store(self.heads_backend, self.heads_path, "heads/")
