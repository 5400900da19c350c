"""The tagger's settings: every environment variable it reads (``TAGGER_*``
plus the shared ``TAGRATE_*`` ones)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from tagrate_common.config import DEFAULT_METRICS_PORTS, DEFAULT_PORTS, ModelServiceSettings


class TaggerSettings(ModelServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TAGGER_")

    port: int = Field(DEFAULT_PORTS["tagger"], ge=0, le=65535, description="gRPC port (0 picks a free one).")
    metrics_port: int = Field(
        DEFAULT_METRICS_PORTS["tagger"], ge=0, le=65535, description="Prometheus HTTP port; 0 disables it."
    )
    model_dir: Path | None = Field(
        None,
        description="A model directory (manifest.json + weights + labels, or a WD tagger v3 folder with "
        "model.onnx + selected_tags.csv, or DeepDanbooru with tags.txt). Unset: the model `tagrate models use` "
        "chose (registered under <data_dir>/models), else the embedded EfficientNet-Lite0 ImageNet tagger.",
    )
    threshold: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Overrides the model's default threshold for every label (unset: the model's own).",
    )
    category_thresholds: dict[str, float] = Field(
        default_factory=dict,
        description='Per-category thresholds over the model\'s own, as JSON, e.g. {"general": 0.3, "character": 0.9} '
        "(a WD v3 / DeepDanbooru model; `rating` stays one tag, the most likely). TAGGER_THRESHOLD overrides it.",
    )

    @field_validator("category_thresholds")
    @classmethod
    def _in_unit_range(cls, value: dict[str, float]) -> dict[str, float]:
        for category, threshold in value.items():
            if not 0.0 <= threshold <= 1.0:
                raise ValueError(f"the threshold for {category!r} must be within [0, 1], got {threshold}")
        return value
