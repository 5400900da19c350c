"""Which model the tagger runs: the one in ``TAGGER_MODEL_DIR``; else the
registered model ``tagrate models use`` chose (``<data_dir>/models``, see
:mod:`tagrate_common.vision.registry`); else the embedded EfficientNet-Lite0
ImageNet tagger."""

from __future__ import annotations

import logging
from pathlib import Path

from tagrate_common.vision.loaders import load_service_model
from tagrate_common.vision.manifest import ModelDirError
from tagrate_common.vision.models import ImageModel
from tagrate_common.vision.registry import ACTIVE_FILE, DEFAULT_MODEL, active_model, model_folder, registry_dir

from .config import TaggerSettings

log = logging.getLogger(__name__)


def configured_model_dir(settings: TaggerSettings) -> Path | None:
    """The folder of the model to run at start (None: the embedded one)."""
    if settings.model_dir is not None:
        return settings.model_dir
    model_id = active_model(settings.data_dir)
    if model_id == DEFAULT_MODEL:
        return None
    try:
        return model_folder(settings.data_dir, model_id)
    except ModelDirError as exc:
        active = registry_dir(settings.data_dir) / ACTIVE_FILE
        raise ModelDirError(f"{exc}; {active} names it (delete that file to run the embedded model)") from None


def load_tagger_model(
    settings: TaggerSettings, model_dir: Path | None = None, *, configured: bool = True
) -> ImageModel:
    """Loads (but does not warm up) a model: ``model_dir``, or (with
    ``configured``) the one :func:`configured_model_dir` names, or the
    embedded default. Raises ``ModelDirError`` with a sentence saying what
    is wrong with the folder."""
    if model_dir is None and configured:
        model_dir = configured_model_dir(settings)
    model = load_service_model(settings, model_dir, settings.backend)
    log.info("loaded model %s on %s", model.describe(), model.device)
    return model
