"""The build's stale-stub check must fail when a .proto changes."""

import shutil
import subprocess
import sys
from pathlib import Path

from tests.support import REPO_ROOT


def _run_check(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(root / "protos" / "generate.py"), "--check", "--out", str(root / "gen")],
        capture_output=True,
        text=True,
    )


def test_checked_in_tree_is_fresh():
    result = _run_check(REPO_ROOT)
    assert result.returncode == 0, result.stderr


def test_check_fails_when_a_proto_changes(tmp_path):
    shutil.copytree(REPO_ROOT / "protos", tmp_path / "protos")
    shutil.copytree(REPO_ROOT / "gen", tmp_path / "gen")
    assert _run_check(tmp_path).returncode == 0
    proto = tmp_path / "protos" / "tagrate" / "tagger" / "v1" / "tagger.proto"
    proto.write_text(proto.read_text().replace("uint32 limit = 3;", "uint32 limit = 3;\n  bool extra = 4;"))
    result = _run_check(tmp_path)
    assert result.returncode == 1
    assert "stale: tagrate/tagger/v1/tagger_pb2.py" in result.stderr
