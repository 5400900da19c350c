"""The command line as a package of its own (cli/pyproject.toml): what it
declares, and `pip install ./cli` into a fresh virtual environment giving a
`tagrate` console script that runs against a real server with nothing but
its declared dependencies beside it (no server code, no gRPC, no torch)."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.support import REPO_ROOT

from .conftest import photo_jpegs

CLI = REPO_ROOT / "cli"
PYPROJECT = tomllib.loads((CLI / "pyproject.toml").read_text())
SERVER_PACKAGES = ("tagrate_common", "tagrate_gateway", "tagrate_dataset", "grpc", "torch", "sqlalchemy", "sqlmodel")


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _imported_top_modules() -> set[str]:
    """Every top-level module tagrate_cli's source imports (absolute imports)."""
    names: set[str] = set()
    for path in (CLI / "tagrate_cli").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_the_package_declares_the_console_script_and_every_dependency_it_imports() -> None:
    project = PYPROJECT["project"]
    assert project["scripts"] == {"tagrate": "tagrate_cli.main:main"}
    declared = {_requirement_name(r) for r in project["dependencies"]}
    optional = {_requirement_name(r) for extra in project["optional-dependencies"].values() for r in extra}
    assert declared == {"click", "rich", "httpx"}
    assert optional == {"psycopg"}
    third_party = _imported_top_modules() - set(sys.stdlib_module_names) - {"tagrate_cli"}
    distributions = importlib.metadata.packages_distributions()
    needed = {_requirement_name(dist) for module in third_party for dist in distributions.get(module, [module])}
    assert needed, third_party
    assert needed <= declared | optional, f"imported but not declared: {sorted(needed - declared - optional)}"
    assert not set(SERVER_PACKAGES) & third_party


def _applies(requirement: str) -> bool:
    """Whether a requirement applies here without extras (its marker)."""
    marker = Requirement(requirement).marker
    return marker is None or marker.evaluate({"extra": ""})


def _closure(requirements: list[str]) -> set[str]:
    """The distributions ``requirements`` need here, recursively, as
    installed in the project's venv."""
    seen: set[str] = set()
    todo = [_requirement_name(r) for r in requirements if _applies(r)]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += [_requirement_name(r) for r in importlib.metadata.distribution(name).requires or [] if _applies(r)]
    return seen


def _link_distributions(names: set[str], into: Path) -> None:
    """Links each distribution's top-level modules and metadata folder (as
    installed in the project's venv) into ``into``: its dependencies exactly,
    without pip reaching an index."""
    into.mkdir()
    for name in names:
        dist = importlib.metadata.distribution(name)
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            source = Path(str(dist.locate_file(top)))
            if source.exists() and not (into / top).exists() and not top.endswith(".pth"):
                (into / top).symlink_to(source)


@pytest.mark.slow
def test_pip_install_of_cli_gives_a_tagrate_command_that_runs_alone(server, tmp_path: Path, write_files) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)  # Python's own pip and setuptools (ensurepip)
    python, script = env_dir / "bin" / "python", env_dir / "bin" / "tagrate"
    source = tmp_path / "cli-src"
    subprocess.run(["cp", "-r", str(CLI), str(source)], check=True)  # builds leave nothing in the checkout
    # The wheel pip builds from ./cli (with the project venv's setuptools: no
    # index is reached), installed by the fresh venv's own pip.
    wheels = tmp_path / "wheels"
    offline = ["--no-index", "--no-build-isolation", "--no-deps"]
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", *offline, "--wheel-dir", str(wheels), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = wheels.glob("tagrate_cli-*.whl")
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", *offline, str(wheel)], capture_output=True, text=True, check=False
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert script.is_file()
    metadata = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m, json; d = m.distribution('tagrate-cli');"
            "print(json.dumps({'requires': d.requires, 'scripts': [(e.name, e.value) for e in d.entry_points]}))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    declared = json.loads(metadata.stdout)
    assert declared["scripts"] == [["tagrate", "tagrate_cli.main:main"]]
    assert {_requirement_name(r) for r in declared["requires"] if _applies(r)} == {"click", "rich", "httpx"}

    # Only the declared dependencies beside it: a missing declaration fails here.
    site_packages = next((env_dir / "lib").glob("python3*/site-packages"))
    _link_distributions(_closure(declared["requires"]), tmp_path / "deps")
    (site_packages / "tagrate-deps.pth").write_text(str(tmp_path / "deps") + "\n")
    for package in SERVER_PACKAGES:
        check = subprocess.run([str(python), "-c", f"import {package}"], capture_output=True, check=False)
        assert check.returncode != 0, f"{package} is importable in the CLI's own venv"

    status = subprocess.run(
        [str(script), "--url", server.url, "status", "--json"], capture_output=True, text=True, timeout=60, check=False
    )
    assert status.returncode == 0, status.stdout + status.stderr
    assert json.loads(status.stdout)["ready"] is True
    root = write_files({f"{i}.jpg": data for i, data in enumerate(photo_jpegs(2, seed=6))})
    imported = subprocess.run(
        [str(script), "import", str(root), "--user", "ann", "--rating-from-folder"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"TAGRATE_URL": server.url, "PATH": "/usr/bin:/bin"},
    )
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert "images: 2 added" in imported.stdout
