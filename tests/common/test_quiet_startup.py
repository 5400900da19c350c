"""A service's start-up log says what it does without third-party noise:
Alembic's "Running upgrade" lines stay, its notes on the dialect go."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support import REPO_ROOT

MIGRATE = """
import sys
from tagrate_common.logging import setup_logging
from tagrate_dataset.db import create_db_engine, migrate
setup_logging("dataset")
migrate(create_db_engine(sys.argv[1], pool_size=1, max_overflow=0))
"""


def test_a_first_migration_logs_its_steps_and_not_alembics_dialect_notes(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", MIGRATE, f"sqlite:///{tmp_path / 'd.db'}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        check=True,
    )
    assert "Running upgrade  -> 0001, Initial schema" in result.stderr, result.stderr
    assert "database schema is up to date" in result.stderr
    assert "Context impl" not in result.stderr and "Will assume" not in result.stderr, result.stderr
