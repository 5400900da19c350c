"""Prometheus metrics shared by every service.

The gateway serves them at ``/metrics``; gRPC services serve them on their
own ``metrics_port`` (see :func:`start_metrics_server`).
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Histogram, start_http_server

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

GRPC_SERVER_HANDLED = Counter(
    "tagrate_grpc_server_handled_total", "RPCs completed by this server.", ["service", "method", "code"]
)
GRPC_SERVER_SECONDS = Histogram(
    "tagrate_grpc_server_handling_seconds", "RPC handling time.", ["service", "method"], buckets=_LATENCY_BUCKETS
)
GRPC_CLIENT_HANDLED = Counter(
    "tagrate_grpc_client_handled_total", "RPCs this process made.", ["target_service", "method", "code"]
)
GRPC_CLIENT_SECONDS = Histogram(
    "tagrate_grpc_client_seconds", "Outgoing RPC latency.", ["target_service", "method"], buckets=_LATENCY_BUCKETS
)
HTTP_REQUESTS = Counter("tagrate_http_requests_total", "HTTP requests served.", ["route", "method", "status"])
HTTP_SECONDS = Histogram(
    "tagrate_http_request_seconds", "HTTP request latency.", ["route", "method"], buckets=_LATENCY_BUCKETS
)


def start_metrics_server(port: int, host: str) -> None:
    """Serves the default registry over HTTP on the service's own bind address; port 0 disables it."""
    if port:
        start_http_server(port, addr=host)
        log.info("metrics on http://%s:%d/metrics", host, port)
