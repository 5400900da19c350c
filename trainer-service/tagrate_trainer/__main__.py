"""``python -m tagrate_trainer``: runs the trainer service until SIGTERM."""

from tagrate_common.logging import setup_logging

from .config import TrainerSettings
from .server import create_server


def main() -> None:
    settings = TrainerSettings()
    setup_logging("trainer", settings.log_level, settings.log_format)
    create_server(settings).serve_forever()


if __name__ == "__main__":
    main()
