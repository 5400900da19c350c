"""Bring your own tagger: /taggermodels."""

from __future__ import annotations

from pydantic import BaseModel, Field


class TaggerModelItem(BaseModel):
    """One registered tagger model."""

    model: str = Field(description="Its content id, `<name>@<12 hex digits>`.")
    format: str = Field(description="`onnx-wd-v3`, `onnx-deepdanbooru`, `torchscript` or `torch-state-dict`.")
    architecture: str
    labels: int = Field(description="How many tags it scores.")
    categories: dict[str, int] = Field(description="Tags per category (`general`, `character`, `rating`, ...).")
    thresholds: dict[str, float] = Field(description="Its threshold per category (`rating` is one, top-1).")
    input_size: int = Field(description="The square input it takes, in pixels.")
    source: str = Field(description="The folder it was registered from.")
    added_at: str


class TaggerModelAdded(BaseModel):
    """POST /taggermodels."""

    added: bool = Field(description="False: that exact model was registered before.")
    model: TaggerModelItem


class TaggerModels(BaseModel):
    """GET /taggermodels."""

    models: list[TaggerModelItem] = Field(description="The registered models, oldest first.")
    active: str = Field(description="The registered model the tagger runs, or `default` (the embedded one).")
    running: str = Field(description="The id of the model the tagger runs now.")


class TaggerModelUsed(BaseModel):
    """POST /taggermodels/use."""

    model: str = Field(description="The id of the model the tagger runs now.")
    format: str
    labels: int
