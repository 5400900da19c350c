"""The gateway's own CPU per GET /getuserdata (issue 28): ``python -m
bench gateway_cpu [--requests N] [--rounds R] [--limit 60]``.

In process, no sockets: the ASGI app of ``create_app`` (access control
off, logging set up as in a service, INFO lines written to /dev/null) is
called directly with a page request; the dataset stub's GetUserData is
replaced by a coroutine handing back a canned reply of ``--limit`` rated
rows. What is timed (``time.process_time``, all threads) is therefore the
gateway's Python work alone: middleware, dependencies, parameter parsing,
the reply's conversion to JSON, the access log line and the metrics; not
uvicorn's HTTP parsing and not the gRPC hop.

Prints CPU microseconds per request, the median of ``--rounds`` rounds,
and a digest of the response (body and headers, request id blanked) so
that two checkouts can be compared for identical output:
``PYTHONPATH=<other>/common:<other>/gateway python bench/gateway_cpu.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import sys
import time
from typing import Any

from tagrate_common.logging import setup_logging
from tagrate_common.protos import library_pb2
from tagrate_common.timestamps import to_timestamp
from tagrate_gateway.app import create_app
from tagrate_gateway.config import GatewaySettings


def _reply(rows: int) -> library_pb2.GetUserDataResponse:
    from datetime import UTC, datetime, timedelta

    start = datetime(2026, 11, 1, tzinfo=UTC)
    reply = library_pb2.GetUserDataResponse(user="alice", total=5000, limit=rows)
    for i in range(rows):
        item = reply.images.add(image=f"{i:08x}deadbeefcafef00d.jpg", rating=(i % 11) / 10, predicted=0.25 + i / 1000)
        item.rated_at.CopyFrom(to_timestamp(start + timedelta(seconds=37_013 * i, microseconds=i)))
    return reply


async def _run(requests: int, rounds: int, rows: int) -> tuple[list[float], str]:
    settings = GatewaySettings(
        dataset_addr="127.0.0.1:9", tagger_addr="", rater_addr="", trainer_addr="", auth="off", host="127.0.0.1"
    )
    app = create_app(settings)
    reply = _reply(rows)

    async def get_user_data(request: Any, **_: Any) -> library_pb2.GetUserDataResponse:
        return reply

    app.state.backends["dataset"].stub.library.GetUserData = get_user_data
    scope_template = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/getuserdata",
        "raw_path": b"/getuserdata",
        "root_path": "",
        "query_string": f"user=alice&page=2&limit={rows}&sort=date-desc".encode(),
        "headers": [(b"host", b"127.0.0.1:8000"), (b"accept", b"*/*"), (b"user-agent", b"bench")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def one() -> None:
        sent.clear()
        await app(dict(scope_template), receive, send)

    for _ in range(200):  # warm-up: caches, first-call imports
        await one()
    start_message, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    assert start_message["status"] == 200, body
    headers = sorted((k, b"-" if k == b"x-request-id" else v) for k, v in start_message["headers"])
    digest = hashlib.sha256(repr((start_message["status"], headers, body)).encode()).hexdigest()[:16]
    per_request = []
    for _ in range(rounds):
        cpu = time.process_time()
        for _ in range(requests):
            await one()
        per_request.append((time.process_time() - cpu) / requests * 1e6)
    return per_request, digest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench gateway_cpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--limit", type=int, default=60)
    args = parser.parse_args(argv)
    with open(os.devnull, "w") as devnull:
        sys.stderr, stderr = devnull, sys.stderr
        try:
            setup_logging("gateway", "INFO")
            rounds, digest = asyncio.run(_run(args.requests, args.rounds, args.limit))
        finally:
            sys.stderr = stderr
    print(
        f"gateway CPU per /getuserdata ({args.limit} rows): median {statistics.median(rounds):.0f} us, "
        f"min {min(rounds):.0f} us over {args.rounds} x {args.requests}; response digest {digest}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
