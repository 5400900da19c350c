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
    original = proto.read_text()
    # A new field with the largest legal number, so no field the message grows later can collide with it.
    changed = original.replace("message TagRequest {", "message TagRequest {\n  bool stale_check_probe = 536870911;", 1)
    assert changed != original
    proto.write_text(changed)
    result = _run_check(tmp_path)
    assert result.returncode == 1
    assert "stale: tagrate/tagger/v1/tagger_pb2.py" in result.stderr
