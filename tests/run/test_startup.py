"""``make run`` still refuses to come up half-started: a child that fails
while the group starts, or a setting no child would accept, stops everything
with exit code 1 and one line that says why."""

from __future__ import annotations

from pathlib import Path

from .supervised import RunStack, free_port_block


def test_a_child_failing_at_its_first_start_stops_the_group(tmp_path: Path) -> None:
    stack = RunStack(
        tmp_path / "data", tmp_path / "run.log", free_port_block(), {"TAGGER_MODEL_DIR": str(tmp_path / "missing")}
    ).start()
    try:
        assert stack.proc.wait(120) == 1, stack.log()
    finally:
        stack.kill_everything()
    failed = [line for line in stack.run_lines() if line.startswith("startup failed:")]
    assert len(failed) == 1, stack.log()
    assert failed[0].startswith("startup failed: tagger exited (exit code 1) while starting: ")
    assert "cannot load the tagger model" in failed[0]
    assert not any(line.startswith("restarting") for line in stack.run_lines())


def test_an_invalid_child_setting_stops_the_group_before_anything_starts(tmp_path: Path) -> None:
    stack = RunStack(tmp_path / "data", tmp_path / "run.log", free_port_block(), {"DATASET_PORT": "70000"}).start()
    try:
        assert stack.proc.wait(60) == 1, stack.log()
    finally:
        stack.kill_everything()
    assert (
        "startup failed: invalid tagrate_dataset settings: DATASET_PORT = '70000': "
        "Input should be less than or equal to 65535"
    ) in stack.run_lines()
    assert not [line for line in stack.run_lines() if line.endswith("is ready") or " is ready on " in line]
