"""Structured logging with a request id carried across services.

The gateway creates a request id per HTTP request (or keeps a sane one the
client sent as ``X-Request-ID``); the gRPC client helper sends it as
``x-request-id`` metadata and the server interceptor puts it back into
:data:`request_id_var`, so one id ties together every log line a request
caused, in every service.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
import uuid

REQUEST_ID_HEADER = "x-request-id"
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def new_request_id() -> str:
    return uuid.uuid4().hex[:16]


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``extra={...}`` fields are included."""

    # uvicorn adds color_message, a duplicate of msg with ANSI colours.
    _STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
        "message",
        "request_id",
        "service",
        "color_message",
    }

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in self._STANDARD})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    """Human-readable, with ``extra={...}`` fields appended as key=value."""

    _STANDARD = JsonFormatter._STANDARD | {"asctime"}

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-5s [%(request_id)s] %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = {k: v for k, v in vars(record).items() if k not in self._STANDARD}
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return line


def setup_logging(service: str, level: str = "INFO", fmt: str = "text") -> None:
    """Configures the root logger once per process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's access log duplicates the gateway's own request log.
    logging.getLogger("uvicorn.access").disabled = True
    # Alembic's notes on the dialect it drives, at every start: noise beside
    # its "Running upgrade ..." lines, which stay.
    alembic = logging.getLogger("alembic.runtime.migration")
    if _not_alembic_setup_note not in alembic.filters:
        alembic.addFilter(_not_alembic_setup_note)


def _not_alembic_setup_note(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(("Context impl ", "Will assume "))
