"""The tagger's settings: every environment variable it reads (``TAGGER_*``
plus the shared ``TAGRATE_*`` ones)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from tagrate_common.config import DEFAULT_METRICS_PORTS, DEFAULT_PORTS, ServiceSettings


class TaggerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TAGGER_")

    port: int = Field(DEFAULT_PORTS["tagger"], ge=0, le=65535, description="gRPC port (0 picks a free one).")
    metrics_port: int = Field(
        DEFAULT_METRICS_PORTS["tagger"], ge=0, le=65535, description="Prometheus HTTP port; 0 disables it."
    )
    model_dir: Path | None = Field(
        None,
        description="A model directory (manifest.json + weights + labels, or a WD tagger v3 folder with "
        "model.onnx + selected_tags.csv). Unset: the embedded EfficientNet-Lite0 ImageNet tagger.",
    )
    device: str = Field("auto", description="`auto` (CUDA when available), `cpu`, `cuda` or `cuda:N`.")
    torch_threads: int = Field(
        0, ge=0, description="CPU threads for one forward pass (torch / onnxruntime intra-op); 0: all cores."
    )
    batching: bool = Field(True, description="Dynamic batching of concurrent requests; off runs images one by one.")
    max_batch_size: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Most images in one forward pass. Unset: 8 on a CPU (larger batches only add latency "
        "there), 32 on a GPU.",
    )
    max_queue_delay_ms: float = Field(
        5.0, ge=0, le=10_000, description="How long the oldest queued image may wait for a batch to fill."
    )
    max_queue_size: int = Field(
        512, ge=1, description="Images waiting for the model; beyond this calls get RESOURCE_EXHAUSTED."
    )
    threshold: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Overrides the model's default threshold for every label (unset: the model's own).",
    )
