"""Which model the tagger runs: the one in ``TAGGER_MODEL_DIR``, or the
embedded EfficientNet-Lite0 ImageNet tagger when that is unset."""

from __future__ import annotations

import logging

from tagrate_common.vision.modeldir import ImageModel, load_default_model, load_model_dir, set_torch_threads

from .config import TaggerSettings

log = logging.getLogger(__name__)


def load_tagger_model(settings: TaggerSettings) -> ImageModel:
    """Loads (but does not warm up) the configured model. Raises
    ``ModelDirError`` with a sentence saying what is wrong with the folder."""
    set_torch_threads(settings.torch_threads)
    if settings.model_dir is None:
        model = load_default_model(settings.device)
    else:
        model = load_model_dir(settings.model_dir, settings.device, settings.torch_threads)
    log.info("loaded model %s on %s", model.describe(), model.device)
    return model
