"""What a new user meets first: the server the command line talks to by
default (TAGRATE_URL, else the port `make run` uses), a server that is not
running (one error before any work), and a ratings CSV whose header is
wrong (stops before any upload, naming the expected columns)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.support import REPO_ROOT, free_port

from .conftest import photo_jpegs

EXIT_UNREACHABLE = 3


def tagrate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``tagrate ARGS`` with no --url, in an environment without TAGRATE_URL
    and TAGRATE_RUN_BASE_PORT unless ``env`` sets them."""
    base = {k: v for k, v in os.environ.items() if k not in ("TAGRATE_URL", "TAGRATE_RUN_BASE_PORT")}
    return subprocess.run(
        [sys.executable, "-m", "tagrate_cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        check=False,
        env={**base, **(env or {})},
    )


def test_the_default_url_is_tagrate_url_else_the_base_port_make_run_uses(server) -> None:
    port = urlsplit(server.url).port
    assert port is not None
    # TAGRATE_RUN_BASE_PORT=B puts make run's gateway on B itself.
    result = tagrate("status", "--json", env={"TAGRATE_RUN_BASE_PORT": str(port)})
    assert f'"url": "http://127.0.0.1:{port}"' in result.stdout, result.stdout + result.stderr
    # TAGRATE_URL wins over the base port; --url over both.
    down = free_port()
    result = tagrate("status", "--json", env={"TAGRATE_URL": server.url, "TAGRATE_RUN_BASE_PORT": str(down)})
    assert f'"url": "{server.url}"' in result.stdout
    result = tagrate("--url", f"http://127.0.0.1:{down}", "status", "--json", env={"TAGRATE_URL": server.url})
    assert f'"url": "http://127.0.0.1:{down}"' in result.stdout and result.returncode == 1
    # Neither set: the default gateway port (only shown, nothing is asked of it).
    assert "http://127.0.0.1:8000" in tagrate("--help").stdout


def test_an_unreachable_server_is_one_error_before_any_work(tmp_path: Path, write_files) -> None:
    root = write_files({f"{i}.jpg": data for i, data in enumerate(photo_jpegs(9, seed=3))})
    ratings = tmp_path / "r.csv"
    ratings.write_text("path,user,rating\n" + "".join(f"{i}.jpg,ann,0.5\n" for i in range(9)))
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for args in (
        ("import", str(root), "--ratings", str(ratings)),
        ("import", str(root)),
        ("export", str(tmp_path / "out")),
    ):
        result = tagrate(*args, env={"TAGRATE_URL": url})
        assert result.returncode == EXIT_UNREACHABLE, result.stdout + result.stderr
        assert result.stderr.count("cannot reach the tagrate server at " + url) == 1, result.stderr
        assert "make run" in result.stderr and "TAGRATE_URL" in result.stderr
        assert "failed" not in result.stdout and ".jpg" not in result.stdout + result.stderr  # no file was tried
    assert not (tmp_path / "out").exists()


def test_a_ratings_csv_with_a_wrong_header_stops_before_any_upload(server, tmp_path: Path, write_files) -> None:
    root = write_files({f"{i}.jpg": data for i, data in enumerate(photo_jpegs(3, seed=4))})
    cases = {
        "file,user,score\n0.jpg,ann,0.5\n": "no 'path' column and unknown column 'file', 'score'",
        "0.jpg,ann,0.5\n1.jpg,ann,1\n": "no 'path' column and unknown column '0.jpg', 'ann', '0.5'",  # no header
        "path,user,score\n0.jpg,ann,0.5\n": "a 'user' column but no 'rating' column and unknown column 'score'",
        "user,rating\nann,0.5\n": "no 'path' column",
        "path,user\n0.jpg,ann\n": "a 'user' column but no 'rating' column",
        "path,rating\n0.jpg,0.5\n": "no 'user' column (add one, or pass --user)",
        "path,user,rating,user\n0.jpg,ann,0.5,bob\n": "a column named twice",
    }
    for text, problem in cases.items():
        ratings = tmp_path / "ratings.csv"
        ratings.write_text(text)
        result = tagrate("import", str(root), "--ratings", str(ratings), env={"TAGRATE_URL": server.url})
        assert result.returncode == 2, result.stdout + result.stderr
        assert problem in result.stderr, result.stderr
        assert "expected the columns path,user,rating[,source]" in result.stderr
        assert "--ratings" in result.stderr and "Nothing was imported" in result.stderr
        datasets = httpx.get(f"{server.url}/verifydatasets", timeout=30).json()
        assert datasets["users"] == [], datasets  # nothing stored, no user made
        assert server.stored_files() == []  # no image file either
    # A rating column without a user column is fine with --user; so is a header in another case.
    ratings.write_text("PATH,Rating\n0.jpg,0.5\n")
    result = tagrate("import", str(root), "--ratings", str(ratings), "--user", "ann", env={"TAGRATE_URL": server.url})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "images: 3 added" in result.stdout and "ratings: 1 added" in result.stdout
    assert len(server.stored_files()) == 3  # the check above can fail
