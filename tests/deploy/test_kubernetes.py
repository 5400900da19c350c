"""The Kubernetes manifests, rendered with ``kubectl kustomize`` and checked
object by object: what each container needs, and that every name, port,
label and path one object uses points at another that exists."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pytest

from tests.deploy.manifests import (
    K8S,
    MODEL_SERVICES,
    OVERLAYS,
    SERVICE_PREFIX,
    Rendered,
    container_env,
    cpu_quantity,
    known_env_names,
    kustomize,
    parse_address,
    process_of,
    read_settings,
    service_port_of,
)

RESOURCE_KINDS = ("cpu", "memory")


def named_port(workload: dict, port: int | str) -> int:
    """A container port number, by number or by name."""
    if isinstance(port, int):
        return port
    for container in workload["spec"]["template"]["spec"]["containers"]:
        for p in container.get("ports", []):
            if p.get("name") == port:
                return p["containerPort"]
    raise AssertionError(f"no container port named {port!r} in {workload['metadata']['name']}")


# ---- containers ----------------------------------------------------------------


def test_every_container_has_requests_limits_and_probes(overlay: Rendered) -> None:
    for workload, container in overlay.containers():
        where = f"{workload['metadata']['name']}/{container['name']}"
        resources = container.get("resources", {})
        for side in ("requests", "limits"):
            for kind in RESOURCE_KINDS:
                assert kind in resources.get(side, {}), f"{where} has no {side}.{kind}"
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert probe in container, f"{where} has no {probe}"


def test_services_use_native_grpc_probes_on_their_grpc_port(overlay: Rendered) -> None:
    seen = set()
    for _, container in overlay.containers():
        process = process_of(container)
        if process is None or process == "gateway":
            continue
        seen.add(process)
        port = service_port_of(overlay, process)
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert container[probe].get("grpc", {}).get("port") == port, f"{process} {probe} is not a gRPC probe"
    assert seen == set(SERVICE_PREFIX)


def test_gateway_uses_http_probes_and_its_port(overlay: Rendered) -> None:
    workload = overlay.get("Deployment", "gateway")
    container = workload["spec"]["template"]["spec"]["containers"][0]
    port = read_settings("gateway", container_env(overlay, container)).port
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        http = container[probe].get("httpGet")
        assert http and http["path"] == "/healthz", probe
        assert named_port(workload, http["port"]) == port


def test_model_services_get_minutes_to_load_and_warm_up(overlay: Rendered) -> None:
    for process in ("tagger", "rater"):
        container = overlay.get("Deployment", process)["spec"]["template"]["spec"]["containers"][0]
        startup = container["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 180, process


def test_container_ports_match_what_the_process_listens_on(overlay: Rendered) -> None:
    for _, container in overlay.containers():
        process = process_of(container)
        if process is None:
            continue
        settings = read_settings(process, container_env(overlay, container))
        ports = {p["containerPort"] for p in container["ports"]}
        assert settings.port in ports, process
        if process != "gateway":
            assert settings.host == "0.0.0.0", f"{process} must listen on every interface in a pod"
            assert settings.metrics_port in ports, process
        else:
            assert settings.host == "0.0.0.0"


def test_pods_run_as_non_root(overlay: Rendered) -> None:
    for workload in overlay.workloads():
        pod = workload["spec"]["template"]["spec"]
        assert pod.get("securityContext", {}).get("runAsNonRoot") is True, workload["metadata"]["name"]
        for container in pod["containers"]:
            assert container.get("securityContext", {}).get("allowPrivilegeEscalation") is False


def test_shutdown_notice_and_drain_fit_the_termination_grace_period(overlay: Rendered) -> None:
    for workload, container in overlay.containers():
        process = process_of(container)
        if process is None or process == "gateway":
            continue
        settings = read_settings(process, container_env(overlay, container))
        period = workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert settings.shutdown_notice_seconds > 0, f"{process}: readiness needs a moment to see NOT_SERVING"
        assert settings.shutdown_notice_seconds + settings.shutdown_grace_seconds < period, process
    gateway = overlay.get("Deployment", "gateway")["spec"]["template"]["spec"]
    pre_stop = gateway["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep" and float(pre_stop[1]) < gateway["terminationGracePeriodSeconds"]


# ---- labels, selectors, names ------------------------------------------------------


def test_workload_selectors_match_their_pod_labels(overlay: Rendered) -> None:
    for workload in overlay.workloads():
        selector = workload["spec"]["selector"]["matchLabels"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), workload["metadata"]["name"]
    # No two workloads' pods answer to the same selector.
    selectors = [tuple(sorted(w["spec"]["selector"]["matchLabels"].items())) for w in overlay.workloads()]
    assert len(selectors) == len(set(selectors))


def test_every_service_selects_a_workload_and_its_named_ports(overlay: Rendered) -> None:
    for service in overlay.of_kind("Service"):
        selected = overlay.pods_selected(service["spec"]["selector"])
        assert len(selected) == 1, f"Service {service['metadata']['name']} selects {len(selected)} workloads"
        for port in service["spec"]["ports"]:
            named_port(selected[0], port.get("targetPort", port["port"]))


def test_grpc_services_are_headless(overlay: Rendered) -> None:
    for name in SERVICE_PREFIX:
        assert overlay.get("Service", name)["spec"].get("clusterIP") == "None", name


def test_every_configmap_address_points_at_an_existing_service_port(overlay: Rendered) -> None:
    settings = overlay.settings()
    addresses = {k: v for k, v in settings.items() if k.endswith("_ADDR")}
    assert addresses, "the ConfigMap names no service addresses"
    for key, value in addresses.items():
        assert value.startswith("dns:///"), f"{key}: use dns:/// so clients round-robin over every pod"
        host, port = parse_address(value)
        assert host in overlay.names("Service"), f"{key} names Service {host!r}, which does not exist"
        service = overlay.get("Service", host)
        assert port in {p["port"] for p in service["spec"]["ports"]}, f"{key}: Service {host} has no port {port}"
        # ... and the pods behind it listen there.
        assert port == service_port_of(overlay, host), key


def test_every_peer_address_a_process_reads_is_configured(overlay: Rendered) -> None:
    """An address field left at its 127.0.0.1 default would silently point a
    pod at itself."""
    settings = overlay.settings()
    for process in ["gateway", *SERVICE_PREFIX]:
        values = read_settings(process, settings)
        for field in type(values).model_fields:
            if field.endswith("_addr"):
                value = getattr(values, field)
                assert not value.startswith("127.0.0.1"), f"{process}.{field} is not set in the ConfigMap"


def test_every_env_var_set_is_one_a_settings_class_reads(overlay: Rendered) -> None:
    known = known_env_names()
    unknown = {k for k in overlay.settings() if k not in known}
    assert not unknown, f"the ConfigMap sets variables no tagrate process reads: {sorted(unknown)}"
    for _, container in overlay.containers():
        if process_of(container) is None:
            continue
        env = container.get("env", [])
        # Variables that only feed $(NAME) references of another one (the
        # PostgreSQL credentials composing DATABASE_URL) are fine.
        referenced = {m for item in env for m in re.findall(r"\$\((\w+)\)", item.get("value", ""))}
        for item in env:
            assert item["name"] in known | referenced, f"{container['name']} sets {item['name']}, read by nothing"


def test_secret_references_exist(overlay: Rendered) -> None:
    secrets = {s["metadata"]["name"]: s for s in overlay.of_kind("Secret")}
    for _, container in overlay.containers():
        for item in container.get("env", []):
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] in secrets and ref["key"] in secrets[ref["name"]]["data"], ref
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                assert source["secretRef"]["name"] in secrets


def test_only_the_dataset_service_gets_the_database_url(overlay: Rendered) -> None:
    for _, container in overlay.containers():
        env = {item["name"]: item.get("value", "") for item in container.get("env", [])}
        if process_of(container) == "dataset":
            assert env["DATABASE_URL"].startswith("postgresql://") and "@postgres:5432/" in env["DATABASE_URL"]
        else:
            assert "DATABASE_URL" not in env


# ---- storage -----------------------------------------------------------------------


def test_every_pvc_is_mounted(overlay: Rendered) -> None:
    mounted_claims = set()
    for workload in overlay.workloads():
        pod = workload["spec"]["template"]["spec"]
        mounts = {m["name"] for c in pod["containers"] for m in c.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        templates = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        for name in mounts:
            assert name in volumes or name in templates, f"{workload['metadata']['name']} mounts unknown {name}"
        for name, volume in volumes.items():
            assert name in mounts, f"{workload['metadata']['name']} declares volume {name} but mounts it nowhere"
            if "persistentVolumeClaim" in volume:
                mounted_claims.add(volume["persistentVolumeClaim"]["claimName"])
        assert templates <= mounts
    claims = overlay.names("PersistentVolumeClaim")
    assert claims == mounted_claims, f"unmounted: {claims - mounted_claims}, missing: {mounted_claims - claims}"


def mount_path(overlay: Rendered, workload: str, claim: str) -> tuple[str, dict]:
    pod = overlay.get("Deployment", workload)["spec"]["template"]["spec"]
    volume = next(v["name"] for v in pod["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == claim)
    container = pod["containers"][0]
    return next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == volume), container


def test_data_lands_on_its_volume(overlay: Rendered) -> None:
    """Each process's persistent paths, as its settings resolve them, lie on
    the volume meant for them (not on the container's throwaway disk)."""
    if "blobs" in overlay.names("PersistentVolumeClaim"):  # else in a bucket: test_s3_storage_needs_no_shared_volume
        path, container = mount_path(overlay, "dataset", "blobs")
        dataset = read_settings("dataset", container_env(overlay, container))
        assert dataset.blob_path.is_relative_to(path) and dataset.cache_path.is_relative_to(path)
        path, container = mount_path(overlay, "rater", "heads")
        assert read_settings("rater", container_env(overlay, container)).heads_path == Path(path)
    if "trainer-jobs" in overlay.names("PersistentVolumeClaim"):  # else in PostgreSQL: test_trainer_replicas...
        path, container = mount_path(overlay, "trainer", "trainer-jobs")
        trainer = read_settings("trainer", container_env(overlay, container))
        assert trainer.trainer_dir == Path(path)
        assert trainer.database_url == f"sqlite:///{Path(path) / 'jobs.db'}"


def test_heads_are_shared_read_write_by_every_rater_replica(overlay: Rendered) -> None:
    dataset = overlay.get("Deployment", "dataset")["spec"]["template"]["spec"]["containers"][0]
    rater = overlay.get("Deployment", "rater")["spec"]["template"]["spec"]["containers"][0]
    if read_settings("dataset", container_env(overlay, dataset)).blob_backend == "fs":
        assert overlay.get("PersistentVolumeClaim", "blobs")["spec"]["accessModes"] == ["ReadWriteMany"]
    if read_settings("rater", container_env(overlay, rater)).heads_backend == "fs":
        assert overlay.get("PersistentVolumeClaim", "heads")["spec"]["accessModes"] == ["ReadWriteMany"]


def test_s3_storage_needs_no_shared_volume(rendered: dict[str, Rendered]) -> None:
    """The cpu-s3 overlay keeps images and heads in one bucket, under one
    prefix, with credentials from a Secret: the blobs and heads claims are
    gone and no claim asks for ReadWriteMany."""
    overlay = rendered["cpu-s3"]
    assert not {"blobs", "heads"} & overlay.names("PersistentVolumeClaim")
    for claim in overlay.of_kind("PersistentVolumeClaim"):
        assert "ReadWriteMany" not in claim["spec"]["accessModes"], claim["metadata"]["name"]
    secrets = {s["metadata"]["name"]: s for s in overlay.of_kind("Secret")}
    processes = (("dataset", "blob_backend"), ("rater", "heads_backend"), ("trainer", "heads_backend"))
    for process, backend in processes:
        pod = overlay.get("Deployment", process)["spec"]["template"]["spec"]
        container = pod["containers"][0]
        settings = read_settings(process, container_env(overlay, container))
        assert getattr(settings, backend) == "s3" and settings.s3_bucket and settings.s3_prefix == "tagrate/"
        assert not any("persistentVolumeClaim" in volume for volume in pod["volumes"]), process
        refs = [source["secretRef"]["name"] for source in container["envFrom"] if "secretRef" in source]
        assert refs == ["s3-credentials"]
        assert set(secrets["s3-credentials"]["data"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
        assert any("configMapRef" in source for source in container["envFrom"]), "the settings are still read"


def test_trainer_replicas_only_where_its_jobs_are_in_postgresql(overlay: Rendered) -> None:
    """With its job records in SQLite on a ReadWriteOnce volume the trainer
    is one replica replaced with Recreate; where they are in PostgreSQL (the
    cpu-s3 overlay: leased jobs shared by replicas, the global-head copy in
    the bucket) it runs two, rolling, on the dataset's database and no claim."""
    trainer = overlay.get("Deployment", "trainer")
    container = trainer["spec"]["template"]["spec"]["containers"][0]
    settings = read_settings("trainer", container_env(overlay, container))
    assert "trainer" not in {h["spec"]["scaleTargetRef"]["name"] for h in overlay.of_kind("HorizontalPodAutoscaler")}
    if settings.database_url.startswith("sqlite"):
        assert "trainer-jobs" in overlay.names("PersistentVolumeClaim")
        assert trainer["spec"]["replicas"] == 1 and trainer["spec"]["strategy"]["type"] == "Recreate"
        return
    dataset = overlay.get("Deployment", "dataset")["spec"]["template"]["spec"]["containers"][0]
    assert settings.database_url == read_settings("dataset", container_env(overlay, dataset)).database_url
    assert settings.heads_backend == "s3"
    assert trainer["spec"]["replicas"] >= 2 and trainer["spec"]["strategy"]["type"] == "RollingUpdate"
    assert "trainer-jobs" not in overlay.names("PersistentVolumeClaim")


def test_postgres_is_a_statefulset_with_its_own_claim(overlay: Rendered) -> None:
    postgres = overlay.get("StatefulSet", "postgres")
    assert postgres["spec"]["serviceName"] in overlay.names("Service")
    assert [t["metadata"]["name"] for t in postgres["spec"]["volumeClaimTemplates"]] == ["data"]
    container = postgres["spec"]["template"]["spec"]["containers"][0]
    assert any(s.get("secretRef", {}).get("name", "").startswith("postgres-credentials") for s in container["envFrom"])


# ---- scaling and disruption --------------------------------------------------------


def test_autoscalers_for_gateway_tagger_and_rater(overlay: Rendered) -> None:
    hpas = {h["metadata"]["name"]: h for h in overlay.of_kind("HorizontalPodAutoscaler")}
    assert set(hpas) == {"gateway", "tagger", "rater"}
    for hpa in hpas.values():
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["name"] in overlay.names("Deployment")
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_disruption_budgets_select_a_workload_and_allow_drains(overlay: Rendered) -> None:
    budgets = overlay.of_kind("PodDisruptionBudget")
    assert {b["metadata"]["name"] for b in budgets} >= {"gateway", "dataset", "tagger", "rater"}
    for budget in budgets:
        assert len(overlay.pods_selected(budget["spec"]["selector"]["matchLabels"])) == 1
        assert budget["spec"].get("maxUnavailable", 0) >= 1, "a budget that never allows an eviction blocks drains"


# ---- overlays ----------------------------------------------------------------------


def gpus(container: dict) -> int:
    resources = container.get("resources", {})
    return int(resources.get("limits", {}).get("nvidia.com/gpu", 0))


def test_gpu_overlay_gives_gpus_to_model_services_only(rendered: dict[str, Rendered]) -> None:
    with_gpu = {process_of(c) for _, c in rendered["gpu"].containers() if gpus(c)}
    assert {"tagger", "rater"} <= with_gpu <= MODEL_SERVICES
    for workload, container in rendered["gpu"].containers():
        if gpus(container):
            assert container["image"].endswith("-cuda"), "a GPU pod needs the CUDA image"
            assert container["resources"]["requests"]["nvidia.com/gpu"] == gpus(container)
            tolerations = workload["spec"]["template"]["spec"].get("tolerations", [])
            assert any(t["key"] == "nvidia.com/gpu" for t in tolerations)
            process = process_of(container)
            device = read_settings(process, container_env(rendered["gpu"], container)).device
            assert device.startswith("cuda"), f"{process} would not use its GPU"
        else:
            assert not container["image"].endswith("-cuda")


def test_cpu_overlay_requests_no_gpus(rendered: dict[str, Rendered]) -> None:
    for _, container in rendered["cpu"].containers():
        assert not gpus(container) and not container["image"].endswith("-cuda")
        process = process_of(container)
        if process in MODEL_SERVICES:
            settings = read_settings(process, container_env(rendered["cpu"], container))
            assert settings.device in ("cpu", "auto")


def test_tagger_and_rater_run_as_many_torch_threads_as_their_cpu_limit(overlay: Rendered) -> None:
    """torch's default is every core of the node; the CPU limit would throttle that."""
    checked = set()
    for _, container in overlay.containers():
        process = process_of(container)
        if process in ("tagger", "rater"):
            settings = read_settings(process, container_env(overlay, container))
            limit = cpu_quantity(container["resources"]["limits"]["cpu"])
            assert settings.torch_threads == math.ceil(limit) >= 1
            checked.add(process)
    assert checked == {"tagger", "rater"}


def test_basic_auth_component_checks_credentials_before_buffering(tmp_path) -> None:
    """The optional component renders on top of an overlay and puts basic
    auth in front of the body-limit buffer."""
    overlay = os.path.relpath(K8S / "overlays" / "cpu", tmp_path)
    component = os.path.relpath(K8S / "components" / "basic-auth", tmp_path)
    (tmp_path / "kustomization.yaml").write_text(f"resources: [{overlay}]\ncomponents: [{component}]\n")
    rendered = Rendered(kustomize(tmp_path))
    (route,) = rendered.get("IngressRoute", "tagrate")["spec"]["routes"]
    assert [m["name"] for m in route["middlewares"]] == [
        "tagrate-basic-auth",
        "tagrate-rate-limit",
        "tagrate-body-limit",
    ]
    auth = rendered.get("Middleware", "tagrate-basic-auth")["spec"]["basicAuth"]
    assert auth["secret"] and auth["removeHeader"] is True


@pytest.mark.parametrize("overlay_name", OVERLAYS)
def test_everything_lands_in_one_namespace(rendered: dict[str, Rendered], overlay_name: str) -> None:
    objects = rendered[overlay_name].objects
    namespaces = {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"}
    assert namespaces == {"tagrate"}
