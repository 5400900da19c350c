"""Generates the Python gRPC stubs from the .proto files in this folder.

    python protos/generate.py [--out gen]   write stubs and the freshness stamp
    python protos/generate.py --check       fail when gen/ is stale

Besides the messages' .pyi files (protoc's own ``--pyi_out``), mypy-protobuf's
``protoc-gen-mypy_grpc`` plugin writes ``*_pb2_grpc.pyi``: typed stubs, so an
editor or mypy follows ``stub.GetUser(request)`` to its request and reply
types (and, over a ``grpc.aio`` channel, to an awaitable reply).

The stamp (``gen/tagrate/PROTOS_SHA256``) records a hash of every .proto file
and the grpcio-tools version; ``tagrate_common.protos`` refuses to import
stubs whose stamp disagrees with the protos on disk, so stale stubs fail loudly
instead of misbehaving on the wire.
"""

from __future__ import annotations

import argparse
import filecmp
import hashlib
import shutil
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PROTO_ROOT.parent
STAMP_NAME = "PROTOS_SHA256"


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def protos_digest() -> str:
    """Hash of the proto sources and the generator version."""
    h = hashlib.sha256(f"grpcio-tools=={version('grpcio-tools')}\n".encode())
    for path in proto_files():
        h.update(str(path.relative_to(PROTO_ROOT)).encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


def generate(out: Path) -> None:
    from grpc_tools import protoc  # build-time dependency only

    out.mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).parent / "_proto"  # google/protobuf/*.proto
    # Installed next to this interpreter by mypy-protobuf (requirements.txt);
    # named explicitly so protoc does not depend on PATH.
    mypy_grpc = Path(sys.executable).parent / "protoc-gen-mypy_grpc"
    if not mypy_grpc.exists():
        raise SystemExit(f"{mypy_grpc} is missing; install requirements.txt (mypy-protobuf)")
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        f"--plugin=protoc-gen-mypy_grpc={mypy_grpc}",
        f"--mypy_grpc_out=quiet:{out}",
        *(str(p) for p in proto_files()),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    (out / "tagrate" / STAMP_NAME).write_text(protos_digest() + "\n")


def _tree(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def check(gen: Path) -> list[str]:
    """Differences between gen/ and freshly generated stubs (empty when fresh)."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        have, want = _tree(gen), _tree(fresh)
        problems = [f"missing: {name}" for name in sorted(want.keys() - have.keys())]
        problems += [f"unexpected: {name}" for name in sorted(have.keys() - want.keys())]
        problems += [
            f"stale: {name}"
            for name in sorted(want.keys() & have.keys())
            if not filecmp.cmp(want[name], have[name], shallow=False)
        ]
        return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "gen")
    parser.add_argument("--check", action="store_true", help="fail when the stubs in --out are stale")
    args = parser.parse_args()
    if args.check:
        problems = check(args.out)
        if problems:
            print("generated stubs are stale; run `make protos`:", *problems, sep="\n  ", file=sys.stderr)
            raise SystemExit(1)
        print("generated stubs are up to date")
        return
    if args.out.exists():
        shutil.rmtree(args.out)
    generate(args.out)
    print(f"generated stubs for {len(proto_files())} protos in {args.out}")


if __name__ == "__main__":
    main()
