"""``python -m tagrate_gateway``: serve the REST API on the configured host and port."""

from __future__ import annotations

import uvicorn

from tagrate_common.logging import setup_logging

from .app import create_app
from .config import GatewaySettings
from .edge import uvicorn_config


def main() -> None:
    settings = GatewaySettings()
    setup_logging("gateway", settings.log_level, settings.log_format)
    uvicorn.Server(uvicorn_config(create_app(settings), settings)).run()


if __name__ == "__main__":
    main()
