"""The HTTP edge limits (tagrate_gateway.edge) on a real uvicorn server
with the gateway's httptools protocol, driven over raw sockets: over-long
targets and headers are refused with the JSON error body, stalled heads and
bodies lose their connection, and a slow but steady upload still gets through."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from tagrate_gateway.app import create_app
from tagrate_gateway.config import GatewaySettings
from tagrate_gateway.edge import uvicorn_config
from tests.imagefactory import make_image

from .conftest import gateway_settings
from .rawhttp import RawResponse

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0


class EdgeGateway:
    """The gateway app under :func:`uvicorn_config` (as ``python -m
    tagrate_gateway`` serves it), in a thread."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.server = uvicorn.Server(uvicorn_config(create_app(settings), settings, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, name="edge-gateway", daemon=True)

    def start(self) -> EdgeGateway:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeGateway]:
    # No backend: requests that pass the edge reach the routes, which answer 503.
    settings = gateway_settings(
        "",
        tmp_path_factory.mktemp("edge"),
        host="127.0.0.1",
        header_timeout_seconds=HEADER_TIMEOUT,
        body_timeout_seconds=BODY_TIMEOUT,
    )
    server = EdgeGateway(settings).start()
    yield server
    server.stop()


def port(edge: EdgeGateway) -> int:
    return edge.settings.port


def send_and_read(edge: EdgeGateway, data: bytes, timeout: float = 10.0) -> bytes:
    """Sends ``data`` (as much as the server takes) and returns everything it
    answers until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port(edge)), timeout=timeout) as sock:
        try:
            for start in range(0, len(data), 65536):
                sock.sendall(data[start : start + 65536])
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server refused and closed while we were still sending
        return read_until_closed(sock)


def read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    return received


def assert_json_error(raw: bytes, status: int, code: str) -> str:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith(f"HTTP/1.1 {status} "), raw[:300]
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    answer = httpx.Response(status, content=body).json()
    assert set(answer) == {"error", "code"} and answer["code"] == code
    return answer["error"]


def request_head(target: str = "/healthz", headers: list[tuple[str, str]] = ()) -> bytes:
    lines = [f"GET {target} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_defaults() -> None:
    settings = GatewaySettings()
    assert settings.max_url_bytes == 16 * 1024
    assert (settings.max_header_bytes, settings.max_header_count) == (32 * 1024, 100)
    assert (settings.header_timeout_seconds, settings.body_timeout_seconds) == (10.0, 30.0)


def test_ordinary_requests_pass(edge: EdgeGateway) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{port(edge)}") as http:
        for _ in range(3):  # keep-alive: several requests on one connection
            assert http.get("/healthz", headers={"X-Big": "v" * 8000}).json() == {"status": "ok"}
        answer = http.get("/getimagetags", params={"image": "a" * 64 + ".jpg", "q": "x" * 10_000})
        assert answer.status_code == 503  # past the edge (no dataset backend)


def test_an_8_mb_header_is_a_431(edge: EdgeGateway) -> None:
    start = time.monotonic()
    raw = send_and_read(edge, request_head(headers=[("X-Huge", "h" * 8_000_000)]))
    assert "headers" in assert_json_error(raw, 431, "headers_too_large")
    assert time.monotonic() - start < 5


def test_too_many_headers_is_a_431(edge: EdgeGateway) -> None:
    raw = send_and_read(edge, request_head(headers=[(f"X-H{i}", "v") for i in range(200)]))
    assert "100 headers" in assert_json_error(raw, 431, "headers_too_large")


def test_a_70_kb_query_string_is_a_414(edge: EdgeGateway) -> None:
    raw = send_and_read(edge, request_head("/getuserdata?user=alice&filters=" + "x" * 70_000))
    assert "16384 bytes" in assert_json_error(raw, 414, "uri_too_long")


def test_malformed_request_is_a_json_400(edge: EdgeGateway) -> None:
    raw = send_and_read(edge, b"GET /healthz HTTP/1.1\r\nBad Header Line\r\n\r\n")
    assert_json_error(raw, 400, "malformed_request")


def test_a_stalled_request_line_is_closed_within_the_timeout(edge: EdgeGateway) -> None:
    with socket.create_connection(("127.0.0.1", port(edge)), timeout=10) as sock:
        start = time.monotonic()
        sock.sendall(b"GET /heal")
        raw = read_until_closed(sock)
        elapsed = time.monotonic() - start
    assert HEADER_TIMEOUT * 0.8 < elapsed < HEADER_TIMEOUT + 3
    assert_json_error(raw, 408, "request_timeout")


def test_trickling_headers_do_not_extend_the_deadline(edge: EdgeGateway) -> None:
    with socket.create_connection(("127.0.0.1", port(edge)), timeout=10) as sock:
        start = time.monotonic()
        closed = False
        for byte in request_head(headers=[("X-Slow", "s" * 40)]):
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.05)  # ~100 bytes at 20 per second: 5 s, well past the timeout
            if time.monotonic() - start > HEADER_TIMEOUT + 3:
                break
        raw = b"" if closed else read_until_closed(sock)
    assert time.monotonic() - start < HEADER_TIMEOUT + 4
    assert raw == b"" or raw.startswith(b"HTTP/1.1 408 ")


def multipart() -> tuple[bytes, bytes]:
    boundary = "edgeboundary"
    image = make_image("PNG", seed=5)
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST /tag HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head, body


def test_a_stalled_body_is_closed_within_the_timeout(edge: EdgeGateway) -> None:
    head, body = multipart()
    with socket.create_connection(("127.0.0.1", port(edge)), timeout=10) as sock:
        sock.sendall(head + body[: len(body) // 2])
        start = time.monotonic()
        raw = read_until_closed(sock)
        elapsed = time.monotonic() - start
    assert BODY_TIMEOUT * 0.8 < elapsed < BODY_TIMEOUT + 3
    assert_json_error(raw, 408, "request_timeout")


def test_a_slow_but_steady_upload_gets_through(edge: EdgeGateway) -> None:
    head, body = multipart()
    pieces = 12
    size = len(body) // pieces + 1
    parts = [body[i : i + size] for i in range(0, len(body), size)]

    def trickle() -> Iterator[bytes]:
        for piece in parts:
            time.sleep(BODY_TIMEOUT / 3)  # ~4 s in all: several body timeouts, never one without progress
            yield piece

    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port(edge)), timeout=15) as sock:
        sock.sendall(head)
        for piece in trickle():
            sock.sendall(piece)
        answer = exchange_rest(sock)
    assert time.monotonic() - start > 2 * BODY_TIMEOUT
    # Past the edge and the upload parser: only the missing tagger is left.
    assert answer.status == 503 and answer.json()["code"] == "tagger_unavailable"


def exchange_rest(sock: socket.socket) -> RawResponse:
    """The response on ``sock`` (the request was sent already)."""
    raw = read_until_closed_or_complete(sock)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return RawResponse(int(lines[0].split()[1]), headers, body[: int(headers.get("content-length", "0"))])


def read_until_closed_or_complete(sock: socket.socket) -> bytes:
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            lines = head.split(b"\r\n")
            length = next((int(x.split(b":", 1)[1]) for x in lines if x.lower().startswith(b"content-length:")), 0)
            if len(body) >= length:
                return data
