"""deploy/compose.yaml and its Traefik routes, parsed and cross-checked:
every service, address, port, volume and health check refers to something
that exists, and Traefik sends every documented path to the gateway."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.manifests import (
    DEPLOY,
    DOCKERFILE,
    MODEL_SERVICES,
    SERVICE_PREFIX,
    assert_routes_every_api_path,
    compose_env,
    compose_names,
    known_env_names,
    load_yaml,
    parse_address,
    process_env,
    read_settings,
)

COMPOSE = DEPLOY / "compose.yaml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def process_of(name: str, service: dict[str, Any]) -> str | None:
    """The tagrate process a compose service runs (its build target)."""
    build = service.get("build")
    return build["target"] if build else None


def tagrate_services(services: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    return {name: (process_of(name, s), s) for name, s in services.items() if process_of(name, s)}


def settings_of(services: dict[str, Any], name: str) -> Any:
    """What the process of compose service ``name`` reads: image ENV plus compose environment."""
    process = process_of(name, services[name])
    assert process, f"{name} runs no tagrate process"
    return read_settings(process, process_env(process, compose_env(services[name])))


def profiles(service: dict[str, Any]) -> set[str]:
    return set(service.get("profiles", []))


def test_every_part_of_the_stack_is_there(services: dict[str, Any]) -> None:
    assert {"traefik", "postgres", "gateway", "dataset", "tagger", "rater", "trainer"} <= set(services)
    processes = {process for process, _ in tagrate_services(services).values()}
    assert processes == {"gateway", *SERVICE_PREFIX}


def test_build_targets_exist_in_the_dockerfile(services: dict[str, Any]) -> None:
    stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", DOCKERFILE.read_text(), flags=re.M | re.I))
    for name, (process, service) in tagrate_services(services).items():
        build = service["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE.resolve(), name
        assert process in stages, f"{name}: no stage {process} in the Dockerfile"


def test_every_env_var_set_is_one_a_settings_class_reads(services: dict[str, Any]) -> None:
    known = known_env_names()
    for name, (_, service) in tagrate_services(services).items():
        unknown = set(compose_env(service)) - known
        assert not unknown, f"{name} sets variables no tagrate process reads: {sorted(unknown)}"


def test_addresses_point_at_compose_services_on_their_ports(services: dict[str, Any]) -> None:
    names = compose_names(services)
    running = tagrate_services(services)
    checked = 0
    for name in running:
        values = settings_of(services, name)
        for field in type(values).model_fields:
            if not field.endswith("_addr"):
                continue
            host, port = parse_address(getattr(values, field))
            assert host in names, f"{name}.{field} names {host!r}, which is no compose service"
            # Every service answering to that name (the cpu and gpu variants) listens there.
            for target in names[host]:
                assert settings_of(services, target).port == port, f"{name}.{field} -> {target}"
            checked += 1
    assert checked >= 9  # gateway 4, dataset 2, rater 1, trainer 2


def test_gpu_variants_answer_to_the_cpu_names(services: dict[str, Any]) -> None:
    names = compose_names(services)
    for process in MODEL_SERVICES:
        cpu, gpu = services[process], services[f"{process}-gpu"]
        assert profiles(cpu) == {"cpu"} and profiles(gpu) == {"gpu"}, process
        assert names[process] == {process, f"{process}-gpu"}
        assert gpu["build"]["target"] == cpu["build"]["target"] == process


def test_gpu_profile_reserves_gpus_for_model_services_only(services: dict[str, Any]) -> None:
    reserved = set()
    for name, service in services.items():
        devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
        if not devices:
            assert "gpu" not in profiles(service), name
            continue
        assert profiles(service) == {"gpu"}, f"{name} reserves a GPU outside the gpu profile"
        assert any("gpu" in d["capabilities"] and d["driver"] == "nvidia" for d in devices)
        assert "cu" in service["build"]["args"]["TORCH_INDEX_URL"].rsplit("/", 1)[-1], f"{name}: not a CUDA build"
        assert service["image"].endswith("-cuda")
        reserved.add(process_of(name, service))
    assert reserved == MODEL_SERVICES


def test_services_outside_profiles_depend_only_on_services_always_there(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert not profiles(services[dependency]), f"{name} depends on {dependency}, which a profile may leave out"
            assert condition["condition"] == "service_healthy"
            assert "healthcheck" in services[dependency]


def test_health_checks_probe_each_service_where_it_listens(services: dict[str, Any]) -> None:
    for name, (process, service) in tagrate_services(services).items():
        test = service["healthcheck"]["test"]
        assert test[:4] == ["CMD", "python", "-m", "tagrate_common.healthcheck"], name
        port = settings_of(services, name).port
        target = test[4]
        if process == "gateway":
            assert target == f"http://127.0.0.1:{port}/healthz"
        else:
            assert target == f"127.0.0.1:{port}", name
    assert services["postgres"]["healthcheck"]["test"][1] == "pg_isready"
    assert "healthcheck" in services["traefik"]["healthcheck"]["test"]


def test_model_services_get_time_to_load_their_model(services: dict[str, Any]) -> None:
    for name in ("tagger", "rater", "tagger-gpu", "rater-gpu"):
        period = services[name]["healthcheck"]["start_period"]
        assert int(period.rstrip("s")) >= 120, name


def test_named_volumes_are_declared_used_and_hold_the_data(compose: dict[str, Any], services: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    assert declared == {"pgdata", "blobs", "heads", "trainer-jobs"}
    used: dict[str, set[str]] = {}
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith((".", "/")):
                assert (COMPOSE.parent / source).exists(), f"{name} mounts missing {source}"
                continue
            assert source in declared, f"{name} uses undeclared volume {source}"
            used.setdefault(source, set()).add(target)
    assert set(used) == declared
    # Each process's persistent paths, as its settings resolve them, lie on its volume.
    dataset = settings_of(services, "dataset")
    (blobs,) = used["blobs"]
    assert dataset.blob_path.is_relative_to(blobs) and dataset.cache_path.is_relative_to(blobs)
    for name in ("rater", "rater-gpu"):
        assert {str(settings_of(services, name).heads_path)} == used["heads"]
    for name in ("trainer", "trainer-gpu"):
        trainer = settings_of(services, name)
        assert {str(trainer.trainer_dir)} == used["trainer-jobs"]
        assert trainer.database_url.startswith(f"sqlite:///{trainer.trainer_dir}/")
    assert used["pgdata"] == {"/var/lib/postgresql/data"}


def test_only_the_dataset_service_talks_to_postgres(services: dict[str, Any]) -> None:
    for name, (process, service) in tagrate_services(services).items():
        url = compose_env(service).get("DATABASE_URL")
        if process == "dataset":
            assert url and "@postgres:5432/" in url
            postgres = services["postgres"]["environment"]
            assert url.startswith(f"postgresql://{postgres['POSTGRES_USER']}:")
            assert url.endswith(f"/{postgres['POSTGRES_DB']}")
        else:
            assert url is None, name


def test_stop_grace_period_covers_notice_and_drain(services: dict[str, Any]) -> None:
    for name, (process, service) in tagrate_services(services).items():
        period = int(service["stop_grace_period"].rstrip("s"))
        if process == "gateway":
            continue
        settings = settings_of(services, name)
        assert settings.shutdown_notice_seconds + settings.shutdown_grace_seconds < period, name


def test_only_traefik_publishes_a_port(services: dict[str, Any]) -> None:
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"traefik"}


# ---- Traefik ---------------------------------------------------------------------


def traefik_file(services: dict[str, Any]) -> dict[str, Any]:
    traefik = services["traefik"]
    (mount,) = traefik["volumes"]
    source, target = mount.split(":")[:2]
    flags = dict(arg.split("=", 1) for arg in traefik["command"] if "=" in arg)
    assert flags["--providers.file.directory"] == target
    (path,) = (COMPOSE.parent / source).glob("*.yaml")
    return load_yaml(path)


def test_traefik_routes_every_documented_path_to_the_gateway(services: dict[str, Any]) -> None:
    http = traefik_file(services)["http"]
    (router,) = http["routers"].values()
    assert_routes_every_api_path(router["rule"])
    entry_points = {arg.split("=")[0].split(".")[1] for arg in services["traefik"]["command"] if "entrypoints." in arg}
    assert set(router["entryPoints"]) <= entry_points
    (server,) = http["services"][router["service"]]["loadBalancer"]["servers"]
    host, port = re.fullmatch(r"http://([a-z-]+):(\d+)", server["url"]).groups()
    gateway = services[host]
    assert process_of(host, gateway) == "gateway"
    assert settings_of(services, host).port == int(port)


def test_traefik_body_limit_matches_the_gateways_upload_limits(services: dict[str, Any]) -> None:
    http = traefik_file(services)["http"]
    (router,) = http["routers"].values()
    limits = [
        http["middlewares"][name]["buffering"]["maxRequestBodyBytes"]
        for name in router["middlewares"]
        if "buffering" in http["middlewares"][name]
    ]
    expected = settings_of(services, "gateway").max_request_bytes
    assert limits == [expected]


def test_env_example_names_every_variable_compose_requires() -> None:
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE.read_text()))
    example = Path(DEPLOY / ".env.example").read_text()
    defined = set(re.findall(r"^(\w+)=", example, flags=re.M))
    assert required and required <= defined
    assert "COMPOSE_PROFILES" in defined
