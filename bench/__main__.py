"""``python -m bench NAME [ARGS...]`` runs ``main(argv)`` of ``bench/NAME.py``
(or of the package ``bench/NAME/``, for a benchmark with parts);
``python -m bench`` with no name runs every benchmark module in turn, except
the ones that only run when named (the soak: ten minutes and more)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

# Modules in bench/ that are not benchmarks.
_NOT_BENCHMARKS = {"harness"}
# Benchmarks that run only when named: the soak holds the machine for ten
# minutes by default, which a "run every benchmark" pass should not do; the
# learning curve fetches an npm package and takes about as long.
_ONLY_WHEN_NAMED = {"soak", "learning"}
# Names that are Python keywords, run from a module of another name.
_ALIASES = {"import": "importer"}
# A benchmark run as another one with a flag: ``python -m bench userdata
# --floor`` is ``python -m bench userdata_floor``. Dispatched here, so no
# benchmark imports another (import-linter's bench-benchmarks-independent).
_FLAGS = {
    ("userdata", "--floor"): "userdata_floor",
    ("userdata", "--concurrency"): "userdata_concurrency",
    ("learning", "--taught"): "learning.taught",
    ("learning", "--taught-features"): "learning.taught_features",
    ("learning", "--replay"): "learning.replay",
}


def benchmark_names() -> list[str]:
    """Every benchmark module in this package, by name."""
    found = pkgutil.iter_modules([str(Path(__file__).parent)])
    return sorted(m.name for m in found if not m.name.startswith("_") and m.name not in _NOT_BENCHMARKS)


def run(name: str, argv: list[str]) -> int:
    module = importlib.import_module(f"bench.{name}")
    return module.main(argv) or 0


def main(argv: list[str]) -> int:
    names = benchmark_names()
    if argv and argv[0] in ("-h", "--help"):
        named_only = ", ".join(sorted(_ONLY_WHEN_NAMED & set(names)))
        print(f"usage: python -m bench [NAME [ARGS...]]   (NAME: {', '.join(names)}; none: all but {named_only})")
        return 0
    if argv:
        argv = [_ALIASES.get(argv[0], argv[0]), *argv[1:]]
        for (name, flag), target in _FLAGS.items():
            if argv[0] == name and flag in argv[1:]:
                argv = [target, *(arg for arg in argv[1:] if arg != flag)]
        if argv[0].split(".")[0] not in names:
            print(f"no benchmark named {argv[0]!r}; there are: {', '.join(names)}", file=sys.stderr)
            return 2
        return run(argv[0], argv[1:])
    status = 0
    for name in names:
        if name in _ONLY_WHEN_NAMED:
            print(f"\n=== bench {name}: skipped (runs only when named: python -m bench {name}) ===", flush=True)
            continue
        print(f"\n=== bench {name} ===", flush=True)
        status = run(name, []) or status
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
