"""The tagger's settings: every environment variable it reads (``TAGGER_*``
plus the shared ``TAGRATE_*`` ones)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from tagrate_common.config import DEFAULT_METRICS_PORTS, DEFAULT_PORTS, ModelServiceSettings


class TaggerSettings(ModelServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TAGGER_")

    port: int = Field(DEFAULT_PORTS["tagger"], ge=0, le=65535, description="gRPC port (0 picks a free one).")
    metrics_port: int = Field(
        DEFAULT_METRICS_PORTS["tagger"], ge=0, le=65535, description="Prometheus HTTP port; 0 disables it."
    )
    backend: Literal["auto", "torch", "onnx-fp32", "onnx-int8"] = Field(
        "auto",
        description="What runs an EfficientNet-Lite0 model (the embedded default or a torch-state-dict folder): "
        "`torch`, or onnxruntime in `onnx-fp32` (same outputs, faster on a CPU) or `onnx-int8` (faster still, "
        "close but not equal outputs: a model id of its own). `auto`: onnx-fp32 on a CPU, torch on a GPU. The "
        "ONNX files are exported on first start into <data_dir>/models.",
    )
    model_dir: Path | None = Field(
        None,
        description="A model directory (manifest.json + weights + labels, or a WD tagger v3 folder with "
        "model.onnx + selected_tags.csv). Unset: the embedded EfficientNet-Lite0 ImageNet tagger.",
    )
    threshold: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Overrides the model's default threshold for every label (unset: the model's own).",
    )
