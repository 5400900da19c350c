"""``python -m tagrate_gateway``: serve the REST API on the configured host and port."""

from __future__ import annotations

import uvicorn

from tagrate_common.logging import setup_logging

from .app import create_app
from .config import GatewaySettings


def main() -> None:
    settings = GatewaySettings()
    setup_logging("gateway", settings.log_level, settings.log_format)
    # log_config=None keeps uvicorn from replacing the logging set up above.
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None)


if __name__ == "__main__":
    main()
