"""Reading what deploy/ holds: rendered Kubernetes objects, the compose file,
the Traefik routes, the documented API paths and the settings every service
reads. Shared by the tests in this folder; nothing here needs a cluster or a
container engine."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import math
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from pydantic_settings import BaseSettings

from tagrate_common.settings_doc import SETTINGS_CLASSES, env_name
from tests.support import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
K8S = DEPLOY / "k8s"
# cpu-s3: the cpu overlay with images and heads in an S3 bucket (components/s3-storage).
OVERLAYS = ("cpu", "gpu", "cpu-s3")
API_MD = REPO_ROOT.parent / "shared" / "docs" / "API.md"

# The gRPC services, their env prefixes and (for the model services) whether
# they run a neural network. The gateway is HTTP.
SERVICE_PREFIX = {"dataset": "DATASET", "tagger": "TAGGER", "rater": "RATER", "trainer": "TRAINER"}
MODEL_SERVICES = {"tagger", "rater", "trainer"}
TAGRATE_PROCESSES = {"gateway", *SERVICE_PREFIX}

# Used only when ../shared/docs/API.md is not beside the repository.
FALLBACK_API_PATHS = {
    "/getimage", "/getimagetags", "/getuserdata", "/tag", "/tagbulk", "/rate", "/ratebulk",
    "/verifydatasets", "/updatetags", "/addrating", "/trainerstatus", "/trainuser", "/stoptraining",
    "/healthz", "/readyz", "/metrics", "/docs", "/openapi.json",
}  # fmt: skip

KUBECTL_MISSING = (
    "kubectl is not installed, so the Kubernetes manifests cannot be rendered. `make test` installs it "
    "(apt-get install kubectl, as root); otherwise install kubectl (with its built-in kustomize) yourself."
)


# ---- settings ---------------------------------------------------------------


def settings_classes() -> dict[str, type]:
    """Every settings class present in this checkout, by module."""
    found = {}
    for _, module, name in SETTINGS_CLASSES:
        if importlib.util.find_spec(module.split(".")[0]) is not None:
            found[module] = getattr(importlib.import_module(module), name)
    return found


def known_env_names() -> set[str]:
    """Every environment variable some tagrate settings class reads."""
    return {env_name(cls, field) for cls in settings_classes().values() for field in cls.model_fields}


CONFIG_MODULES = {
    "gateway": "tagrate_gateway.config",
    "dataset": "tagrate_dataset.config",
    "tagger": "tagrate_tagger.config",
    "rater": "tagrate_rater.config",
    "trainer": "tagrate_trainer.config",
}


@contextmanager
def _only_environment(env: dict[str, str]) -> Iterator[None]:
    """os.environ without any tagrate setting of this machine, plus ``env``."""
    saved = dict(os.environ)
    known = known_env_names()
    os.environ.clear()
    os.environ.update({k: v for k, v in saved.items() if k not in known})
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def read_settings(process: str, env: dict[str, str]) -> BaseSettings:
    """``process``'s settings as it would read them from ``env``, parsed and
    validated by its own settings class (so a bad value fails here too)."""
    cls = settings_classes()[CONFIG_MODULES[process]]
    with _only_environment(env):
        return cls(_env_file=None)


def service_port(process: str, env: dict[str, str]) -> int:
    """The port ``process`` listens on under ``env``."""
    return read_settings(process, env).port


def parse_address(value: str) -> tuple[str, int]:
    """(host, port) of a gRPC target such as ``dns:///tagger:50051`` or ``tagger:50051``."""
    match = re.fullmatch(r"(?:dns:///)?([A-Za-z0-9.-]+):(\d+)", value)
    assert match, f"{value!r} is not a host:port gRPC target"
    return match.group(1), int(match.group(2))


# ---- the REST paths ----------------------------------------------------------


def documented_paths() -> set[str]:
    """Every path API.md documents: the endpoint table plus the operational
    endpoints (``GET /healthz`` ...)."""
    if not API_MD.is_file():
        return set(FALLBACK_API_PATHS)
    text = API_MD.read_text()
    table = set(re.findall(r"^\|\s*(/[A-Za-z0-9_.-]+)\s*\|", text, flags=re.M))
    operational = set(re.findall(r"`GET (/[A-Za-z0-9_.-]+)`", text))
    assert table, f"no endpoint table found in {API_MD}"
    return table | operational


def routed_paths(rule: str) -> set[str]:
    """The exact paths a Traefik rule matches. Only ``Path(`...`)`` joined by
    ``||`` is understood, and three prefixes: ``PathPrefix(`/tokens/`)``, as the
    gateway's ``/tokens/{token_id}``, ``PathPrefix(`/albums/`)``, its
    ``/albums/{id}`` paths, and ``PathPrefix(`/ui/`)``, the browser
    UI's files (a list the gateway takes from its package; it answers 404 for
    anything else there); anything else fails, so a cleverer rule gets a
    cleverer check rather than a silent pass."""
    from tagrate_gateway.routes import ui

    terms = [t.strip() for t in rule.split("||")]
    paths = set()
    for term in terms:
        if term == "PathPrefix(`/tokens/`)":
            # DELETE /tokens/{token_id} has an id in its path.
            paths.add("/tokens/{token_id}")
            continue
        if term == "PathPrefix(`/albums/`)":
            # One album by id, its images, one image in it.
            paths.update({"/albums/{id}", "/albums/{id}/images", "/albums/{id}/images/{image}"})
            continue
        if term == "PathPrefix(`/tagaliases/`)":
            paths.add("/tagaliases/{alias}")  # DELETE one alias
            continue
        if term == "PathPrefix(`/tagimplications/`)":
            paths.add("/tagimplications/{tag}/{implies}")  # DELETE one implication
            continue
        if term == f"PathPrefix(`{ui.ASSETS_URL}/`)":
            paths.update(p for p in ui.ui_paths() if p.startswith(f"{ui.ASSETS_URL}/"))
            continue
        match = re.fullmatch(r"Path\(`(/[^`]*)`\)", term)
        assert match, f"unexpected Traefik rule term {term!r}"
        paths.add(match.group(1))
    return paths


def gateway_paths() -> set[str]:
    """Every path the gateway app serves: its API, the OpenAPI schema, the
    docs pages, the browser UI and the files they load."""
    from tagrate_gateway import docs
    from tagrate_gateway.app import create_app
    from tagrate_gateway.config import GatewaySettings
    from tagrate_gateway.routes import ui

    app = create_app(GatewaySettings(_env_file=None))
    pages = {app.openapi_url, app.swagger_ui_oauth2_redirect_url, docs.DOCS_URL, docs.REDOC_URL} - {None}
    return set(app.openapi()["paths"]) | pages | set(docs.asset_paths()) | set(ui.ui_paths())


def assert_routes_every_api_path(rule: str) -> None:
    """A Traefik rule routes every path API.md documents and every path the
    gateway serves, and nothing that neither of them has."""
    routed = routed_paths(rule)
    documented = documented_paths()
    assert documented <= routed, f"not routed: {sorted(documented - routed)}"
    served = gateway_paths()
    assert served <= routed, f"the gateway serves paths Traefik does not route: {sorted(served - routed)}"
    assert routed <= served | documented, f"routed but served by nothing: {sorted(routed - served - documented)}"


# ---- Kubernetes ---------------------------------------------------------------


@functools.cache
def kubectl() -> str:
    """kubectl's path, once it is known to carry a kustomize new enough for
    these manifests (components, ``labels``, inline patches: kustomize 4+,
    which kubectl reports from 1.24 on)."""
    path = shutil.which("kubectl") or ("/usr/bin/kubectl" if Path("/usr/bin/kubectl").exists() else None)
    if path is None:
        raise AssertionError(KUBECTL_MISSING)
    result = subprocess.run([path, "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=60)
    version = json.loads(result.stdout or "{}").get("kustomizeVersion", "") if result.returncode == 0 else ""
    major = re.match(r"v(\d+)\.", version)
    if major is None or int(major.group(1)) < 4:
        raise AssertionError(
            f"{path} embeds kustomize {version or '(unknown, older than kubectl 1.24)'}; the deploy/ manifests "
            "need kubectl 1.24 or newer (kustomize 4+). Install a current kubectl."
        )
    return path


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize`` of a directory, parsed."""
    result = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


class Rendered:
    """The objects of one rendered overlay, with lookups by kind and name."""

    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.objects = objects

    def of_kind(self, *kinds: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] in kinds]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
        return found[0]

    def names(self, kind: str) -> set[str]:
        return {o["metadata"]["name"] for o in self.of_kind(kind)}

    def workloads(self) -> list[dict[str, Any]]:
        return self.of_kind("Deployment", "StatefulSet")

    def containers(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """(workload, container) for every container, init containers included."""
        for workload in self.workloads():
            spec = workload["spec"]["template"]["spec"]
            for container in spec.get("initContainers", []) + spec["containers"]:
                yield workload, container

    def settings(self) -> dict[str, str]:
        """The tagrate settings ConfigMap (its name carries a hash suffix)."""
        maps = [o for o in self.of_kind("ConfigMap") if o["metadata"]["name"].startswith("tagrate-settings")]
        assert len(maps) == 1, "expected exactly one tagrate-settings ConfigMap"
        return {k: str(v) for k, v in maps[0]["data"].items()}

    def pods_selected(self, selector: dict[str, str]) -> list[dict[str, Any]]:
        """Workloads whose pod template carries every label in ``selector``."""
        return [
            w
            for w in self.workloads()
            if selector.items() <= w["spec"]["template"]["metadata"].get("labels", {}).items()
        ]


def process_of(container: dict[str, Any]) -> str | None:
    """Which tagrate process a container runs (by its image), or None."""
    match = re.fullmatch(r"tagrate/([a-z]+)(?::.*)?", container["image"])
    return match.group(1) if match and match.group(1) in TAGRATE_PROCESSES else None


# ---- compose -------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    with open(path) as f:
        return yaml.safe_load(f)


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def compose_names(services: dict[str, Any]) -> dict[str, set[str]]:
    """Every name compose services answer to (service names and network
    aliases), mapped to the services answering to it."""
    names: dict[str, set[str]] = {name: {name} for name in services}
    for name, service in services.items():
        for network in (service.get("networks") or {}).values():
            for alias in (network or {}).get("aliases", []):
                names.setdefault(alias, set()).add(name)
    return names


# ---- the Dockerfile ------------------------------------------------------------


def dockerfile_stages(path: Path) -> dict[str, dict[str, Any]]:
    """Each named stage: its base (``from``), its instructions as
    (keyword, argument) pairs, continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    for line in logical:
        keyword, _, argument = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", argument.strip(), flags=re.I)
            assert match, line
            current = {"from": match.group(1), "instructions": []}
            stages[match.group(2) or f"#{len(stages)}"] = current
        elif current is not None:
            current["instructions"].append((keyword, argument.strip()))
    return stages


def stage_chain(stages: dict[str, dict[str, Any]], target: str) -> list[str]:
    """The stages ``target`` is built on, base first, ending with ``target``."""
    chain = [target]
    while stages[chain[0]]["from"] in stages:
        chain.insert(0, stages[chain[0]]["from"])
    return chain


def image_env(path: Path, target: str) -> dict[str, str]:
    """The ENV a target's image starts its process with (variables that
    expand other variables, like PATH, are left out)."""
    stages = dockerfile_stages(path)
    env: dict[str, str] = {}
    for stage in stage_chain(stages, target):
        for keyword, argument in stages[stage]["instructions"]:
            if keyword == "ENV":
                for item in shlex.split(argument):
                    key, _, value = item.partition("=")
                    if "$" not in value:
                        env[key] = value
    return env


def process_env(process: str, env: dict[str, str]) -> dict[str, str]:
    """What ``process`` reads in its container: its image's ENV (tagrate
    settings only) overridden by ``env`` from compose or the manifests."""
    known = known_env_names()
    return {**{k: v for k, v in image_env(DOCKERFILE, process).items() if k in known}, **env}


def container_env(rendered: Rendered, container: dict) -> dict[str, str]:
    """What the container's process sees: its image's ENV, envFrom
    ConfigMaps, then env."""
    process = process_of(container)
    env: dict[str, str] = process_env(process, {}) if process else {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            env.update({k: str(v) for k, v in rendered.get("ConfigMap", name)["data"].items()})
    for item in container.get("env", []):
        field = item.get("valueFrom", {}).get("resourceFieldRef")
        env[item["name"]] = downward_resource(container, field) if field else str(item.get("value", "<from secret>"))
    return env


def cpu_quantity(value: str | int | float) -> float:
    text = str(value)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def downward_resource(container: dict, field: dict) -> str:
    """What the downward API puts in an env var for a ``resourceFieldRef``
    to the container's own CPU: the quantity in units of the divisor,
    rounded up. Without the limit Kubernetes would give the node's
    capacity, so a missing one fails here."""
    kind, _, resource = field["resource"].partition(".")
    assert resource == "cpu", f"only CPU fields are used, not {field['resource']}"
    quantity = container.get("resources", {}).get(kind, {}).get("cpu")
    assert quantity is not None, f"{container['name']} reads {field['resource']} but sets no {kind}.cpu"
    return str(math.ceil(cpu_quantity(quantity) / cpu_quantity(field.get("divisor", "1"))))


def service_port_of(overlay: Rendered, process: str) -> int:
    container = next(c for _, c in overlay.containers() if process_of(c) == process)
    return read_settings(process, container_env(overlay, container)).port
