"""Which model the tagger runs: the one in ``TAGGER_MODEL_DIR``, or the
embedded EfficientNet-Lite0 ImageNet tagger when that is unset."""

from __future__ import annotations

import logging

from tagrate_common.vision.loaders import load_service_model
from tagrate_common.vision.models import ImageModel

from .config import TaggerSettings

log = logging.getLogger(__name__)


def load_tagger_model(settings: TaggerSettings) -> ImageModel:
    """Loads (but does not warm up) the configured model. Raises
    ``ModelDirError`` with a sentence saying what is wrong with the folder."""
    model = load_service_model(settings, settings.model_dir, settings.backend)
    log.info("loaded model %s on %s", model.describe(), model.device)
    return model
