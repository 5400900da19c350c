"""``python -m tagrate_tagger``: load the model, warm it up, serve until SIGTERM."""

from __future__ import annotations

import logging
import sys

from tagrate_common.logging import setup_logging
from tagrate_common.vision.manifest import ModelDirError

from .config import TaggerSettings
from .server import create_server


def main() -> int:
    settings = TaggerSettings()
    setup_logging("tagger", settings.log_level, settings.log_format)
    try:
        server = create_server(settings)
    except ModelDirError as exc:
        logging.getLogger("tagrate_tagger").error("cannot load the tagger model: %s", exc)
        return 1
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
