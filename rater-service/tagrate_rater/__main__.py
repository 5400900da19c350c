"""``python -m tagrate_rater``: load the feature extractor and every head,
warm up, serve until SIGTERM."""

from __future__ import annotations

import logging
import sys

from tagrate_common.logging import setup_logging
from tagrate_common.vision.manifest import ModelDirError

from .config import RaterSettings
from .server import create_server


def main() -> int:
    settings = RaterSettings()
    setup_logging("rater", settings.log_level, settings.log_format)
    try:
        server = create_server(settings)
    except ModelDirError as exc:
        logging.getLogger("tagrate_rater").error("cannot load the feature extractor: %s", exc)
        return 1
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
