"""Bring your own tagger: registering model folders and switching the
running model without a restart (the AddModel / ListModels / UseModel
calls). A switch loads and warms up the new model first, then swaps it in:
calls already running finish on the old one, the next ones use the new one,
and the choice is recorded so a restart keeps it. The dataset service sees
the new model id and re-tags every stored image in the background."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from tagrate_common.errors import Conflict, InvalidArgument, NotFound
from tagrate_common.vision import registry
from tagrate_common.vision.manifest import ModelDirError

from .config import TaggerSettings
from .models import load_tagger_model
from .tagging import Tagger

log = logging.getLogger(__name__)


class ModelSwitch:
    """Holds the running :class:`Tagger` and replaces it on request."""

    def __init__(self, tagger: Tagger, settings: TaggerSettings, owns_model: bool) -> None:
        self.tagger = tagger
        self.settings = settings
        self._owns_model = owns_model
        self._lock = threading.Lock()  # one add or switch at a time

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    def add(self, path: str) -> tuple[registry.RegisteredModel, bool]:
        folder = Path(path)
        if not path or not folder.is_absolute():
            raise InvalidArgument(f"the model folder must be an absolute path, got {path!r}", "invalid_model")
        with self._lock:
            try:
                registered, added = registry.add_model(folder, self.data_dir)
            except ModelDirError as exc:
                raise InvalidArgument(str(exc), "invalid_model") from None
        log.info("registered model %s from %s (new: %s)", registered.model_id, folder, added)
        return registered, added

    def models(self) -> tuple[list[registry.RegisteredModel], str]:
        return registry.registered_models(self.data_dir), registry.active_model(self.data_dir)

    def use(self, model_id: str) -> Tagger:
        """Switches to the registered model ``model_id`` (or ``"default"``)."""
        if self.settings.model_dir is not None:
            raise Conflict(
                f"TAGGER_MODEL_DIR={self.settings.model_dir} pins the tagger's model; unset it to switch models",
                "model_pinned",
            )
        with self._lock:
            folder = None
            if model_id != registry.DEFAULT_MODEL:
                try:
                    folder = registry.model_folder(self.data_dir, model_id)
                except ModelDirError as exc:
                    raise NotFound(str(exc), "unknown_model") from None
            try:
                model = load_tagger_model(self.settings, folder, configured=False)
                fresh = Tagger.from_settings(model, self.settings)  # warmed up and checked here
            except ModelDirError as exc:
                raise InvalidArgument(str(exc), "invalid_model") from None
            registry.set_active_model(self.data_dir, model_id)
            old, owned = self.tagger, self._owns_model
            self.tagger, self._owns_model = fresh, True
        log.info("the tagger now runs %s (was %s)", fresh.model_id, old.model_id)
        self._retire(old, owned)
        return fresh

    @staticmethod
    def _retire(old: Tagger, owned: bool) -> None:
        old.close()  # finishes what was queued on it
        if owned:
            old.model.close()

    def close(self) -> None:
        self._retire(self.tagger, self._owns_model)
