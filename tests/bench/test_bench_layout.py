"""bench/'s layout stays as import-linter's contract describes it: every
benchmark is in the contract's layer of benchmarks (one left out would be
free to import another), and no benchmark module is over ~400 lines."""

from __future__ import annotations

import tomllib

from bench.__main__ import benchmark_names
from tests.support import REPO_ROOT


def test_every_benchmark_is_in_the_independence_contract() -> None:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    (contract,) = [c for c in contracts if c["id"] == "bench-benchmarks-independent"]
    listed = {name.strip() for name in contract["layers"][0].split("|")}
    assert listed == set(benchmark_names())
    assert contract["layers"][1:] == ["harness"]


def test_no_bench_module_is_over_400_lines() -> None:
    sizes = {
        str(path.relative_to(REPO_ROOT)): len(path.read_text().splitlines())
        for path in (REPO_ROOT / "bench").rglob("*.py")
    }
    assert not {path: lines for path, lines in sizes.items() if lines > 400}
