"""``python -m tagrate_dataset``: runs the dataset service until SIGTERM."""

from tagrate_common.logging import setup_logging

from .config import DatasetSettings
from .server import create_server


def main() -> None:
    settings = DatasetSettings()
    setup_logging("dataset", settings.log_level, settings.log_format)
    create_server(settings).serve_forever()


if __name__ == "__main__":
    main()
