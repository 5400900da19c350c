"""Fixtures for the trainer tests: a real dataset service (SQLite) and a
real rater (the embedded EfficientNet-Lite0, loaded once per session), both
in this process on free ports, with scenes whose feature vectors the rater
computed; trainers started per test, in process or as a subprocess."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from tagrate_common.protos import trainer_pb2, trainer_pb2_grpc
from tagrate_common.vision.loaders import load_default_model
from tagrate_common.vision.torch_models import EfficientNetLiteModel
from tagrate_trainer.config import TrainerSettings
from tagrate_trainer.server import create_server
from tests.support import ServiceProcess, free_port

from .services import DEADLINE, Services, start_services

# Settings that make a job run until it is stopped: the MLP never stops
# early and has a practically endless epoch budget.
ENDLESS = {"max_epochs": 1_000_000, "patience": 1_000_000}


@pytest.fixture(scope="session")
def default_model() -> EfficientNetLiteModel:
    return load_default_model("cpu")


@pytest.fixture(scope="session")
def services(tmp_path_factory, default_model) -> Iterator[Services]:
    """One dataset service and one rater for the whole session; every test
    uses its own user names."""
    running = start_services(tmp_path_factory.mktemp("services"), default_model)
    yield running
    running.stop()


def trainer_settings(services: Services, data_dir: Path, **overrides: object) -> TrainerSettings:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": 0,
        "metrics_port": 0,
        "data_dir": data_dir,
        "dataset_addr": services.dataset_addr,
        "rater_addr": services.rater_addr,
        "shutdown_grace_seconds": 1.0,
        "max_epochs": 60,
        "patience": 8,
        # The tests train by request unless they test the automatic retraining.
        "retrain_after_ratings": 0,
    }
    values.update(overrides)
    return TrainerSettings(**values)


class Trainer:
    """A client for a running trainer."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.channel = grpc.insecure_channel(target)
        self.stub = trainer_pb2_grpc.TrainerServiceStub(self.channel)

    def train(self, user: str, force: bool = False) -> trainer_pb2.TrainerStatus:
        return self.stub.TrainUser(trainer_pb2.TrainUserRequest(user=user, force=force), timeout=DEADLINE).status

    def status(self) -> trainer_pb2.TrainerStatus:
        return self.stub.GetStatus(trainer_pb2.GetStatusRequest(), timeout=DEADLINE)

    def stop(self) -> trainer_pb2.TrainerStatus:
        return self.stub.StopTraining(trainer_pb2.StopTrainingRequest(), timeout=DEADLINE).status

    def wait(
        self, until: Callable[[trainer_pb2.TrainerStatus], bool], timeout: float = 60.0
    ) -> list[trainer_pb2.TrainerStatus]:
        """Polls the status until ``until`` holds; returns every status seen."""
        seen = [self.status()]
        deadline = time.monotonic() + timeout
        while not until(seen[-1]):
            if time.monotonic() > deadline:
                raise AssertionError(f"the trainer never reached the wanted state; last status:\n{seen[-1]}")
            time.sleep(0.02)
            seen.append(self.status())
        return seen

    def wait_finished(self, timeout: float = 60.0) -> list[trainer_pb2.TrainerStatus]:
        return self.wait(lambda status: not status.is_training, timeout)

    def wait_epochs(self, epochs: int = 1, timeout: float = 60.0) -> trainer_pb2.TrainerStatus:
        """Waits until the running job's MLP has done ``epochs`` epochs."""
        return self.wait(lambda s: s.state == "running" and s.epoch >= epochs and s.HasField("loss"), timeout)[-1]

    def close(self) -> None:
        self.channel.close()


@pytest.fixture
def start_trainer(services, tmp_path) -> Iterator[Callable[..., Trainer]]:
    """Starts in-process trainers (data in this test's folder unless told
    otherwise) and stops them when the test ends."""
    started: list[tuple[Trainer, object]] = []

    def start(data_dir: Path | None = None, **overrides: object) -> Trainer:
        server = create_server(trainer_settings(services, data_dir or tmp_path / "trainer-data", **overrides))
        trainer = Trainer(f"127.0.0.1:{server.start()}")
        started.append((trainer, server))
        return trainer

    yield start
    for trainer, server in started:
        trainer.close()
        server.stop(1.0)  # type: ignore[attr-defined]


@pytest.fixture
def trainer(start_trainer) -> Trainer:
    return start_trainer()


@pytest.fixture
def trainer_process(services, tmp_path) -> Iterator[Callable[..., tuple[ServiceProcess, Trainer]]]:
    """Starts ``python -m tagrate_trainer`` subprocesses on one data folder."""
    started: list[tuple[ServiceProcess, Trainer]] = []

    def start(**overrides: object) -> tuple[ServiceProcess, Trainer]:
        port = free_port()
        env = {
            "TAGRATE_DATA_DIR": str(tmp_path / "process-data"),
            "TRAINER_HOST": "127.0.0.1",
            "TRAINER_PORT": str(port),
            "TRAINER_METRICS_PORT": "0",
            "TRAINER_DATASET_ADDR": services.dataset_addr,
            "TRAINER_RATER_ADDR": services.rater_addr,
            "TRAINER_MAX_EPOCHS": "60",
            "TRAINER_PATIENCE": "8",
            "TRAINER_RETRAIN_AFTER_RATINGS": "0",
        }
        env.update({f"TRAINER_{name.upper()}": str(value) for name, value in overrides.items()})
        process = ServiceProcess("tagrate_trainer", env, tmp_path / "trainer.log", f"127.0.0.1:{port}").start()
        pair = (process, Trainer(process.target))
        started.append(pair)
        return pair

    yield start
    for process, trainer in started:
        trainer.close()
        if process.proc is not None and process.proc.poll() is None:
            process.kill()
