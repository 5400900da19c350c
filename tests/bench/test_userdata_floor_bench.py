"""``python -m bench userdata --floor`` stays runnable: a tiny SQLite run end
to end (dataset service and gateway as processes, the floor statements
through sqlite3), every shape measured and checked row for row."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.__main__ import main
from bench.userdata_floor.shapes import SHAPES


def test_tiny_floor_run_on_sqlite_prints_every_shape(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    status = main(
        ["userdata", "--floor", "--db", "sqlite", "--scale", "0.002", "--calls", "4", "--cache-dir", str(tmp_path)]
    )
    out = capsys.readouterr().out
    # The run raises when the API and a floor statement disagree on a page.
    assert status == 0, out
    assert "GET /getuserdata vs the SQL floor" in out
    for shape in SHAPES:
        assert f"{shape.name} " in out, shape.name
