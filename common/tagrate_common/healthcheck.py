"""A container health check: exit 0 only when the target is healthy.

    python -m tagrate_common.healthcheck HOST:PORT            gRPC health is SERVING
    python -m tagrate_common.healthcheck http://HOST:PORT/P   HTTP GET answers 200

Docker's HEALTHCHECK and compose's ``healthcheck`` run it inside the
container, so no grpc_health_probe binary has to be shipped in the images.
Kubernetes does not need it: it probes gRPC health natively.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def grpc_status(target: str, timeout: float, service: str = "") -> str:
    """The health status name the server reports for ``service`` (e.g.
    ``SERVING``), or the gRPC error code name when it does not answer."""
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as exc:
            return exc.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def http_status(url: str, timeout: float) -> int | str:
    """The HTTP status of a GET, or why there was none."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError as exc:
        return str(exc)


def is_healthy(target: str, timeout: float, service: str = "") -> tuple[bool, str]:
    """Whether ``target`` (HOST:PORT for gRPC, or an http:// URL) is healthy,
    and what it said."""
    if target.startswith(("http://", "https://")):
        status = http_status(target, timeout)
        return status == 200, f"HTTP {status}"
    status = grpc_status(target, timeout, service)
    return status == "SERVING", status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="HOST:PORT of a gRPC service, or an http:// URL")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    parser.add_argument("--service", default="", help='gRPC service name to check ("" = the whole server)')
    args = parser.parse_args(argv)
    healthy, said = is_healthy(args.target, args.timeout, args.service)
    print(f"{args.target}: {said}")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
