"""``TAGRATE_RUN_REPLICAS``, without starting anything: every backend
service as N children on their own ports, every caller given all their
addresses (one round-robin channel), PostgreSQL required and shared by the
trainers, and a single-process run unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from tagrate_common.grpc_client import channel_target
from tagrate_common.supervisor import StartupError, Supervisor, SupervisorSettings

SERVICES = {"tagger": 1, "rater": 2, "dataset": 3, "trainer": 4}
PG = "postgresql+psycopg://postgres@127.0.0.1:5432/replicas"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for service in (*SERVICES, "gateway"):
        for name in ("PORT", "METRICS_PORT", "DATABASE_URL"):
            monkeypatch.delenv(f"{service.upper()}_{name}", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("TAGRATE_RUN_HOST", raising=False)


def test_two_replicas_of_every_service_on_their_own_ports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", PG)
    plan = Supervisor(SupervisorSettings(base_port=30_000, data_dir=tmp_path, replicas=2)).plan()
    by_name = {child.name: child for child in plan}
    assert set(by_name) == {f"{s}{k}" for s in SERVICES for k in (1, 2)} | {"gateway"}
    for service, offset in SERVICES.items():
        ports = [30_000 + offset, 30_000 + offset + 10]
        assert [by_name[f"{service}{k}"].port for k in (1, 2)] == ports
        both = ",".join(f"127.0.0.1:{port}" for port in ports)
        assert by_name["gateway"].env[f"GATEWAY_{service.upper()}_ADDR"] == both
        for other in SERVICES:
            if other != service:
                assert by_name[f"{other}2"].env[f"{other.upper()}_{service.upper()}_ADDR"] == both
    assert by_name["trainer2"].env["TRAINER_DATABASE_URL"] == PG
    all_ports = [port for child in plan for port, _ in child.listens]
    assert len(all_ports) == len(set(all_ports))
    assert channel_target("127.0.0.1:30001,localhost:30011") == "ipv4:///127.0.0.1:30001,127.0.0.1:30011"


def test_replicas_refuse_a_sqlite_dataset_database(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="DATABASE_URL=postgresql"):
        Supervisor(SupervisorSettings(base_port=30_000, data_dir=tmp_path, replicas=2)).plan()


def test_replicas_refuse_a_sqlite_jobs_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", PG)
    monkeypatch.setenv("TRAINER_DATABASE_URL", f"sqlite:///{tmp_path / 'jobs.db'}")
    with pytest.raises(StartupError, match="TRAINER_DATABASE_URL"):
        Supervisor(SupervisorSettings(base_port=30_000, data_dir=tmp_path, replicas=2)).plan()


def test_one_replica_is_the_plain_group(tmp_path: Path) -> None:
    plan = Supervisor(SupervisorSettings(base_port=30_000, data_dir=tmp_path)).plan()
    assert [child.name for child in plan] == [*SERVICES, "gateway"]
    assert plan[-1].env["GATEWAY_TAGGER_ADDR"] == "127.0.0.1:30001"
    assert "TRAINER_DATABASE_URL" not in plan[3].env
