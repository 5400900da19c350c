"""The supervisor's restart policy and port plan, without starting anything:
backoff growth and reset, crash-loop detection, where TAGRATE_RUN_BASE_PORT
puts every port, and the start-up check that names a taken port's setting."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tagrate_common.supervisor import RestartPolicy, Restarts, StartupError, Supervisor, SupervisorSettings

from .supervised import free_port_block

POLICY = RestartPolicy(initial=0.5, maximum=30.0, reset_after=60.0, loop_exits=5, loop_window=60.0)


def test_backoff_doubles_up_to_the_maximum() -> None:
    restarts = Restarts(RestartPolicy(initial=0.5, maximum=4.0, reset_after=60.0, loop_exits=100, loop_window=60.0))
    waits, now = [], 0.0
    for _ in range(6):
        restarts.started(now)
        now += 1.0  # dies a second after each start
        waits.append(restarts.exited(now))
        now += waits[-1]
    assert waits == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert restarts.count == 6


def test_a_child_that_stayed_up_starts_over_at_the_shortest_wait() -> None:
    restarts = Restarts(POLICY)
    restarts.started(0.0)
    assert restarts.exited(1.0) == 0.5
    restarts.started(1.5)
    assert restarts.exited(2.0) == 1.0
    restarts.started(3.0)
    assert restarts.exited(3.0 + 59.0) == 2.0  # not quite long enough
    restarts.started(70.0)
    assert restarts.exited(70.0 + 60.0) == 0.5  # up for reset_after: a fresh incident


def test_five_deaths_within_a_minute_are_a_crash_loop_retried_at_the_maximum() -> None:
    restarts = Restarts(POLICY)
    now, waits = 0.0, []
    for _ in range(5):
        restarts.started(now)
        now += 2.0
        assert not restarts.crash_looping
        waits.append(restarts.exited(now))
        now += waits[-1]
    assert restarts.crash_looping
    assert waits == [0.5, 1.0, 2.0, 4.0, 30.0]  # the fifth death jumps to the longest wait
    restarts.started(now)
    assert restarts.exited(now + 1.0) == 30.0


def test_deaths_spread_over_more_than_the_window_are_no_crash_loop() -> None:
    restarts = Restarts(POLICY)
    now = 0.0
    for _ in range(8):
        restarts.started(now)
        now += 20.0  # up 20 s each time: under reset_after, but only 3 deaths fit in 60 s
        restarts.exited(now)
    assert not restarts.crash_looping


def test_the_crash_loop_report_is_rearmed_after_a_good_run() -> None:
    restarts = Restarts(POLICY)
    now = 0.0
    for _ in range(5):
        restarts.started(now)
        now += 1.0
        restarts.exited(now)
    restarts.loop_reported = True
    restarts.started(now)
    now += 61.0
    restarts.exited(now)
    assert not restarts.crash_looping and not restarts.loop_reported


def _listens(children) -> dict[str, list[tuple[int, str]]]:
    return {child.name: child.listens for child in children}


def test_base_port_moves_every_port_of_the_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GATEWAY", "TAGGER", "RATER", "DATASET", "TRAINER"):
        monkeypatch.delenv(f"{name}_PORT", raising=False)
        monkeypatch.delenv(f"{name}_METRICS_PORT", raising=False)
    children = Supervisor(SupervisorSettings(base_port=30000, data_dir=tmp_path)).plan()
    assert _listens(children) == {
        "tagger": [(30001, "TAGGER_PORT"), (30005, "TAGGER_METRICS_PORT")],
        "rater": [(30002, "RATER_PORT"), (30006, "RATER_METRICS_PORT")],
        "dataset": [(30003, "DATASET_PORT"), (30007, "DATASET_METRICS_PORT")],
        "trainer": [(30004, "TRAINER_PORT"), (30008, "TRAINER_METRICS_PORT")],
        "gateway": [(30000, "GATEWAY_PORT")],
    }
    by_name = {child.name: child for child in children}
    assert by_name["gateway"].env["GATEWAY_DATASET_ADDR"] == "127.0.0.1:30003"
    assert by_name["dataset"].env["DATASET_TAGGER_ADDR"] == "127.0.0.1:30001"
    assert by_name["rater"].env["RATER_METRICS_PORT"] == "30006"


def test_a_services_own_port_setting_wins_over_the_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATASET_PORT", "31234")
    monkeypatch.setenv("TAGGER_METRICS_PORT", "0")  # metrics off
    monkeypatch.setenv("TAGRATE_RUN_BASE_PORT", "30000")
    by_name = {child.name: child for child in Supervisor(SupervisorSettings(data_dir=tmp_path)).plan()}
    assert by_name["dataset"].listens == [(31234, "DATASET_PORT"), (30007, "DATASET_METRICS_PORT")]
    assert by_name["tagger"].listens == [(30001, "TAGGER_PORT")]
    assert by_name["gateway"].env["GATEWAY_DATASET_ADDR"] == "127.0.0.1:31234"


def test_without_a_base_each_service_keeps_its_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TAGRATE_RUN_BASE_PORT", raising=False)
    monkeypatch.delenv("RATER_PORT", raising=False)
    by_name = {child.name: child for child in Supervisor(SupervisorSettings(data_dir=tmp_path)).plan()}
    assert by_name["rater"].port == 50052


def test_a_taken_port_is_named_with_its_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    monkeypatch.setenv("TRAINER_PORT", str(port))
    supervisor = Supervisor(SupervisorSettings(base_port=free_port_block(), data_dir=tmp_path))
    with taken, pytest.raises(StartupError) as caught:
        supervisor.check_ports(supervisor.plan())
    assert str(caught.value) == (
        f"cannot listen on 127.0.0.1:{port}: the port is in use (set TRAINER_PORT or TAGRATE_RUN_BASE_PORT)"
    )


def test_two_settings_on_one_port_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = free_port_block()
    monkeypatch.setenv("RATER_PORT", str(base + 1))  # the tagger's
    supervisor = Supervisor(SupervisorSettings(base_port=base, data_dir=tmp_path))
    with pytest.raises(StartupError, match=f"port {base + 1} is set for both TAGGER_PORT and RATER_PORT"):
        supervisor.check_ports(supervisor.plan())
