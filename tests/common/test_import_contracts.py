"""The architecture contracts (pyproject.toml's [tool.importlinter]) hold on
the tree, and each one fails, naming the import, when code breaks it."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.support import REPO_ROOT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

# The dataset service's resources and the modules holding each one's queries
# (the dataset-*-queries contracts).
DATASET_QUERIES = {
    "images": ("crud",),
    "ratings": ("crud",),
    "library": ("listing", "sql", "neighbours"),
    "tags": ("crud", "queries"),
    "work": ("queue", "queries"),
    "users": ("crud",),
    "training": ("crud", "queries"),
    "tokens": ("crud",),
    "albums": ("crud", "queries"),
}
DATASET_RESOURCES = tuple(DATASET_QUERIES)

# Stand-ins for the seven packages, one allowed import each where the
# contracts allow one (torch in tagrate_common.vision and the model services).
ALLOWED = {
    "tagrate_common/__init__.py": "",
    "tagrate_common/vision/__init__.py": "import torch\n",
    "tagrate_common/images.py": "",
    "tagrate_gateway/__init__.py": "import tagrate_common.images\n",
    "tagrate_tagger/__init__.py": "import torch\nimport tagrate_common.vision\n",
    "tagrate_rater/__init__.py": "import torch\n",
    "tagrate_dataset/__init__.py": "import sqlmodel\nimport tagrate_common.images\n",
    "tagrate_trainer/__init__.py": "import torch\n",
    "tagrate_cli/__init__.py": "import httpx\n",
}
# The dataset service by resource: each servicer and the queries it owns, the modules every resource
# shares, and the allowed crossings (the server registers every servicer; the tagging pass stores
# vectors and queues work).
ALLOWED |= {
    f"tagrate_dataset/{name}.py": "" for name in ("checks", "config", "db", "models", "peers", "records", "snapshots")
}
ALLOWED |= {f"tagrate_dataset/{resource}/__init__.py": "" for resource in DATASET_RESOURCES}
ALLOWED |= {
    f"tagrate_dataset/{resource}/{module}.py": f"import tagrate_dataset.{resource}.{DATASET_QUERIES[resource][0]}\n"
    if module == "service"
    else ""
    for resource in DATASET_RESOURCES
    for module in ("service", *DATASET_QUERIES[resource])
}
ALLOWED |= {
    "tagrate_dataset/predictions/__init__.py": "",
    "tagrate_dataset/server.py": "".join(f"import tagrate_dataset.{r}.service\n" for r in DATASET_RESOURCES)
    + "import tagrate_dataset.tags.owned_service\n",
    # Tags people own: a second servicer in tags/ (manual tags, aliases, implications, taught tags).
    "tagrate_dataset/tags/owned_service.py": "import tagrate_dataset.tags.crud\n",
    "tagrate_dataset/tags/tagging.py": "import tagrate_dataset.images.crud\nimport tagrate_dataset.work.queue\n",
    # Albums filter with the listing's own tag conditions; images leave albums through albums.membership.
    "tagrate_dataset/albums/membership.py": "import tagrate_dataset.library.sql\n",
    "tagrate_dataset/images/crud.py": "import tagrate_dataset.albums.membership\n",
    # Resolving a duplicate group keeps one image and removes the others through images' queries.
    "tagrate_dataset/similar/__init__.py": "",
    "tagrate_dataset/similar/resolve.py": "import tagrate_dataset.images.crud\n",
}
# The gRPC plumbing: the caller's side and the servicer's share grpc_wire.
ALLOWED |= {
    "tagrate_common/grpc_wire.py": "",
    "tagrate_common/grpc_client.py": "import tagrate_common.grpc_wire\n",
    "tagrate_common/grpc_server.py": "import tagrate_common.grpc_wire\n",
}
# bench/: each benchmark (the first layer of its contract) imports the harness.
_BENCH_LAYERS = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
BENCHMARKS = next(c for c in _BENCH_LAYERS if c["id"] == "bench-benchmarks-independent")["layers"][0].split("|")
ALLOWED |= {"bench/__init__.py": "", "bench/harness/__init__.py": ""}
ALLOWED |= {f"bench/{name.strip()}.py": "import bench.harness\n" for name in BENCHMARKS}
# One breach of each contract, and the import its report must name.
BREACHES = {
    "tagrate_common/grpc_server.py": (
        "import tagrate_common.grpc_client\n",
        "tagrate_common.grpc_server -> tagrate_common.grpc_client",
    ),
    "bench/collection.py": ("import bench.userdata\n", "bench.collection -> bench.userdata"),
    "tagrate_trainer/training.py": ("from tagrate_rater import heads\n", "tagrate_trainer.training -> tagrate_rater"),
    "tagrate_gateway/routes.py": ("import sqlmodel\n", "tagrate_gateway.routes -> sqlmodel"),
    "tagrate_common/metrics.py": ("import tagrate_dataset\n", "tagrate_common.metrics -> tagrate_dataset"),
    # torch reached indirectly, through the shared library's vision package.
    "tagrate_dataset/images/blobs.py": (
        "import tagrate_common.vision\n",
        "tagrate_dataset.images.blobs -> tagrate_common.vision",
    ),
    "tagrate_common/batcher.py": ("import torch.nn\n", "tagrate_common.batcher -> torch"),
    "tagrate_cli/export.py": ("import tagrate_common.images\n", "tagrate_cli.export -> tagrate_common"),
}
# A servicer reaching into another resource's queries, one per resource; a domain module importing a
# servicer; a shared module importing a resource.
_SERVICER_BREACHES = [
    ("ratings", "images", "crud"),
    ("users", "ratings", "crud"),
    ("tags", "library", "sql"),
    ("library", "tags", "queries"),
    ("training", "work", "queue"),
    ("tokens", "users", "crud"),
    ("work", "training", "queries"),
    ("images", "tokens", "crud"),
]
BREACHES |= {
    f"tagrate_dataset/{importer}/service.py": (
        f"import tagrate_dataset.{owner}.{module}\n",
        f"tagrate_dataset.{importer}.service -> tagrate_dataset.{owner}.{module}",
    )
    for importer, owner, module in _SERVICER_BREACHES
}
BREACHES |= {
    "tagrate_dataset/work/worker.py": (
        "import tagrate_dataset.tags.service\n",
        "tagrate_dataset.work.worker -> tagrate_dataset.tags.service",
    ),
    "tagrate_dataset/records.py": (
        "import tagrate_dataset.predictions\n",
        "tagrate_dataset.records -> tagrate_dataset.predictions",
    ),
    # Another resource writing album rows itself rather than through albums.membership.
    "tagrate_dataset/images/crud.py": (
        "import tagrate_dataset.albums.crud\n",
        "tagrate_dataset.images.crud -> tagrate_dataset.albums.crud",
    ),
}


def lint_imports(packages: Path | None = None) -> subprocess.CompletedProcess:
    """``lint-imports`` with the repository's contracts; ``packages`` (a
    folder) shadows the real packages when given."""
    env = dict(os.environ)
    if packages is not None:
        env["PYTHONPATH"] = str(packages)  # ahead of the venv's .pth source folders
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(REPO_ROOT / "pyproject.toml")],
        capture_output=True,
        text=True,
        env=env,
        cwd=packages or REPO_ROOT,  # bench/ is found from the working folder
        timeout=120,
    )


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_every_contract_holds_on_the_tree() -> None:
    result = lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_allowed_imports_pass(tmp_path) -> None:
    write(tmp_path, ALLOWED)
    result = lint_imports(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_breach_fails_and_names_the_import(tmp_path) -> None:
    write(tmp_path, ALLOWED | {name: text for name, (text, _) in BREACHES.items()})
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert f"Contracts: 0 kept, {len(BREACHES)} broken." in result.stdout, result.stdout
    for _, named in BREACHES.values():
        assert named in result.stdout, f"{named!r} not in:\n{result.stdout}"
