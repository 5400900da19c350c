"""Limits at the HTTP edge, enforced while uvicorn parses a request.

uvicorn's httptools protocol (the fast C parser the gateway runs on) has no
limit on the request target or the headers and no timeout for a request
head or a stalled body: an 8 MB header is buffered whole, and a client that
sends half a request line holds its connection open for as long as it
likes. :class:`EdgeProtocol` adds them without giving up httptools:

- a request target longer than ``max_url_bytes``: 414;
- more than ``max_header_count`` headers, or a head (request line and
  headers) larger than ``max_url_bytes + max_header_bytes``: 431, counted
  on the raw bytes as they arrive, before httptools buffers a whole header;
- a request head not complete ``header_timeout_seconds`` after the
  connection opened (or the request began): 408, connection closed;
- a request body that makes no progress for ``body_timeout_seconds`` while
  the gateway is waiting for it: 408 (when no answer has started), closed;
- a request httptools cannot parse: 400.

Every refusal has the API's JSON error body and closes the connection
(what is left of the request is never parsed).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from .config import GatewaySettings

log = logging.getLogger("tagrate_gateway.edge")

# The request line's method, spaces and version beyond the target itself.
REQUEST_LINE_SLACK = 1024
# After a refusal the connection reads and drops what the client is still
# sending for at most this long before it closes: closing a socket with
# unread data makes the kernel send a reset, which can destroy the answer
# before the client reads it.
LINGER_SECONDS = 2.0


@dataclass(frozen=True)
class EdgeLimits:
    max_url_bytes: int
    max_header_bytes: int
    max_header_count: int
    header_timeout_seconds: float
    body_timeout_seconds: float

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> EdgeLimits:
        return cls(
            settings.max_url_bytes,
            settings.max_header_bytes,
            settings.max_header_count,
            settings.header_timeout_seconds,
            settings.body_timeout_seconds,
        )

    @property
    def max_head_bytes(self) -> int:
        # Each header line adds ": " and CRLF to its name and value.
        return self.max_url_bytes + REQUEST_LINE_SLACK + self.max_header_bytes + 4 * self.max_header_count + 2


class _Refused(Exception):
    """Raised from a parser callback to stop parsing; the refusal itself is
    kept on the protocol (httptools wraps callback exceptions)."""


class EdgeProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of :class:`EdgeLimits`.
    Use :func:`protocol_class` to bind the limits."""

    limits: EdgeLimits

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # bytes arriving now belong to a request head
        self._head_bytes = 0
        self._header_count = 0
        self._header_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._refusal: tuple[int, str, str] | None = None
        self._lingering = False

    # ---- connection ----

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        self._unset_keepalive_if_required()
        if self._in_head:
            self._head_bytes += len(data)
        elif self._body_timer is not None:
            self._arm_body_timer()  # progress: the no-progress clock starts again
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            # Raised too for an exception in a callback (then _refusal says why).
            status, message, code = self._refusal or (
                400,
                "the request is not valid HTTP/1.1",
                "malformed_request",
            )
            self._refuse(status, message, code)
            return
        if self._in_head and self._head_bytes > self.limits.max_head_bytes:
            self._refuse(*self._headers_too_large())

    # ---- parser callbacks ----

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._header_count = self._header_bytes = 0
        self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.limits.max_url_bytes:
            self._refusal = (
                414,
                f"the request target (path and query string) is longer than {self.limits.max_url_bytes} bytes",
                "uri_too_long",
            )
            raise _Refused

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._header_bytes += len(name) + len(value)
        if self._header_count > self.limits.max_header_count or self._header_bytes > self.limits.max_header_bytes:
            self._refusal = self._headers_too_large()
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._cancel_head_timer()
        super().on_headers_complete()
        self._arm_body_timer()

    def on_message_complete(self) -> None:
        self._cancel_body_timer()
        super().on_message_complete()

    # ---- refusals ----

    def _headers_too_large(self) -> tuple[int, str, str]:
        return (
            431,
            f"the request headers are too large (at most {self.limits.max_header_count} headers of "
            f"{self.limits.max_header_bytes} bytes in all)",
            "headers_too_large",
        )

    def _refuse(self, status: int, message: str, code: str) -> None:
        """Answers ``status`` with the JSON error body and closes the connection."""
        self._cancel_timers()
        if self.transport.is_closing():
            return
        log.info("refused at the HTTP edge: %d %s (client %s)", status, code, self.client)
        body = json.dumps({"error": message, "code": code}).encode()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the answer is complete; keep reading (and dropping) a while
            self._lingering = True
            self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()

    # ---- timers ----

    def _arm_head_timer(self) -> None:
        # The deadline counts from the connection (or the request's first
        # byte): a head trickling in a byte at a time does not extend it.
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.header_timeout_seconds, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if self.flow is not None and self.flow.read_paused:  # the gateway is not reading: not the client's fault
            self._arm_head_timer()
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm_head_timer()  # a pipelined head behind a request still being answered
            return
        if self._head_bytes == 0:  # an idle connection that never sent a byte: nothing to answer
            self.transport.close()
            return
        self._refuse(
            408,
            f"the request head did not arrive within {self.limits.header_timeout_seconds:g} seconds",
            "request_timeout",
        )

    def _arm_body_timer(self) -> None:
        self._cancel_body_timer()
        self._body_timer = self.loop.call_later(self.limits.body_timeout_seconds, self._body_timed_out)

    def _body_timed_out(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if self.transport.is_closing() or cycle is None or not cycle.more_body or cycle.response_complete:
            return
        if self.flow.read_paused:  # the gateway has not consumed what arrived yet
            self._arm_body_timer()
            return
        message = f"the request body made no progress for {self.limits.body_timeout_seconds:g} seconds"
        if cycle.response_started:
            log.info("closing a connection whose request body stalled: %s", message)
            self.transport.close()
        else:
            self._refuse(408, message, "request_timeout")

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _cancel_timers(self) -> None:
        self._cancel_head_timer()
        self._cancel_body_timer()


def protocol_class(limits: EdgeLimits) -> type[EdgeProtocol]:
    """:class:`EdgeProtocol` bound to ``limits``, for uvicorn's ``http=``."""
    return type("EdgeProtocol", (EdgeProtocol,), {"limits": limits})


def uvicorn_config(app: Any, settings: GatewaySettings, **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration the gateway serves ``app`` with: httptools
    with the edge limits, on the settings' host and port. log_config=None
    keeps uvicorn from replacing the logging the caller set up."""
    values: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        # X-Forwarded-* are believed only from GATEWAY_TRUSTED_PROXIES (auth.client_address),
        # never by uvicorn's own rule (which trusts any local peer).
        "proxy_headers": False,
        "http": protocol_class(EdgeLimits.from_settings(settings)),
    }
    values.update(overrides)
    return uvicorn.Config(app, **values)
