"""``python -m bench userdata --concurrency`` stays runnable: a tiny SQLite
run end to end (two dataset services with their gateways on one database,
one answering tag filters from tag_members and bitsets, one as before),
their answers compared request by request, every concurrency measured."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.__main__ import main


def test_tiny_concurrency_run_on_sqlite(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["--db", "sqlite", "--scale", "0.002", "--calls", "6", "--cache-dir", str(tmp_path)]
    status = main(["userdata", "--concurrency", *args])
    out = capsys.readouterr().out
    # The run raises when the two services disagree on a request.
    assert status == 0, out
    assert "answered alike" in out
    assert "tag_members + bitsets beside today's statements" in out
    for concurrency in (1, 8, 32):
        assert f"2-tag mix c={concurrency}:" in out
