"""What ``make run`` hands its children, by security mode, without starting
anything (issue 23, findings 1 and 11): a loopback development run keeps
reflection and the metrics ports; with access control on the children get
a per-run secret as a 0600 file (named, not contained, in their
environment), no reflection and no metrics ports."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tagrate_common.supervisor import Supervisor, SupervisorSettings

SERVICES = ("tagger", "rater", "dataset", "trainer")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GATEWAY_AUTH", "TAGRATE_INTERNAL_TOKEN", "TAGRATE_INTERNAL_TOKEN_FILE", "TAGRATE_RUN_HOST"):
        monkeypatch.delenv(name, raising=False)
    for service in SERVICES:
        monkeypatch.delenv(f"{service.upper()}_METRICS_PORT", raising=False)
        monkeypatch.delenv(f"{service.upper()}_REFLECTION", raising=False)


def test_a_loopback_development_run_keeps_reflection_and_metrics(tmp_path: Path) -> None:
    supervisor = Supervisor(SupervisorSettings(base_port=30000, data_dir=tmp_path))
    assert supervisor.security_mode() == (False, True)
    by_name = {child.name: child for child in supervisor.plan()}
    for service in SERVICES:
        env = by_name[service].env
        assert env[f"{service.upper()}_REFLECTION"] == "true"
        assert env[f"{service.upper()}_METRICS_PORT"] != "0"
        assert "TAGRATE_INTERNAL_TOKEN_FILE" not in env
    assert supervisor.internal_token_file is None


def test_with_access_control_on_every_child_gets_the_secret_file_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_AUTH", "on")
    supervisor = Supervisor(SupervisorSettings(base_port=30000, data_dir=tmp_path))
    assert supervisor.security_mode() == (True, False)
    children = supervisor.plan()
    token_file = supervisor.internal_token_file
    assert token_file is not None and stat.S_IMODE(token_file.stat().st_mode) == 0o600
    secret = token_file.read_text()
    for child in children:
        assert child.env["TAGRATE_INTERNAL_TOKEN_FILE"] == str(token_file)
        assert not any(secret in value for value in child.env.values())
        if child.name in SERVICES:
            assert child.env[f"{child.name.upper()}_REFLECTION"] == "false"
            assert child.env[f"{child.name.upper()}_METRICS_PORT"] == "0"
            assert len(child.listens) == 1  # the gRPC port only
    # A second plan (a restart of the group) makes a new secret.
    again = Supervisor(SupervisorSettings(base_port=30000, data_dir=tmp_path))
    again.plan()
    assert again.internal_token_file is not None and again.internal_token_file.read_text() != secret


def test_a_configured_internal_token_is_used_as_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_AUTH", "on")
    monkeypatch.setenv("TAGRATE_INTERNAL_TOKEN", "configured-secret-0123456789")
    supervisor = Supervisor(SupervisorSettings(base_port=30000, data_dir=tmp_path))
    children = supervisor.plan()
    assert supervisor.internal_token_file is None
    assert all("TAGRATE_INTERNAL_TOKEN_FILE" not in child.env for child in children)
