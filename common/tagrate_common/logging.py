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


# Control characters (C0, DEL, C1) and the Unicode line/paragraph separators,
# written as escapes: a request path with %0d%0a cannot forge a log line,
# %1b[2J cannot reach the operator's terminal (issue 23, #6).
_CONTROL_ESCAPES = {
    code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    for code in [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]
}
_CONTROL_ESCAPES_KEEP_NEWLINE = {k: v for k, v in _CONTROL_ESCAPES.items() if k != 0x0A}


def escape_control(text: str, keep_newlines: bool = False) -> str:
    """``text`` with every control character written as ``\\xNN``."""
    return text.translate(_CONTROL_ESCAPES_KEEP_NEWLINE if keep_newlines else _CONTROL_ESCAPES)


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

    def formatMessage(self, record: logging.LogRecord) -> str:
        # Every piece of the line is escaped (the message and anything a
        # caller passed); a traceback keeps its newlines, each continuation
        # line indented so that it cannot pass for a log line of its own.
        if not hasattr(record, "request_id"):  # a handler without the request-id filter
            record.request_id = "-"
        return escape_control(super().formatMessage(record))

    def formatException(self, ei) -> str:  # type: ignore[no-untyped-def]
        return escape_control(super().formatException(ei), keep_newlines=True).replace("\n", "\n    ")

    def formatStack(self, stack_info: str) -> str:
        return escape_control(super().formatStack(stack_info), keep_newlines=True).replace("\n", "\n    ")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = {k: v for k, v in vars(record).items() if k not in self._STANDARD}
        if extras:
            line += " " + " ".join(f"{k}={escape_control(str(v))}" for k, v in extras.items())
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
