"""The collection benchmark stays runnable: a tiny SQLite run end to end
(dataset service and gateway as processes) prints its table without errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.collection import main


@pytest.mark.slow
def test_tiny_run_on_sqlite_prints_every_row_without_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    status = main(["--db", "sqlite", "--scale", "0.01", "--calls", "5", "--cache-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 0, out  # non-zero when any request failed
    for request in ("/getimageneighbours", "/gettags?prefix=", "/getstats", "/getthumbnail (cold)", "(warm)"):
        assert request in out, request
    assert "<= 2x" in out
    # The cached file stays as generated: the run wrote to a copy.
    assert len(list(tmp_path.glob("userdata-*.db"))) == 1
