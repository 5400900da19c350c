"""The gateway's HTTP behaviour that needs no live backend: the error shape
for every kind of failure, 503 naming an unreachable service, readiness,
metrics, request ids, and uploads refused while they are still arriving."""

from __future__ import annotations

import re

import httpx
import pytest

from tagrate_common.errors import Overloaded
from tagrate_common.logging import request_id_var
from tagrate_gateway.app import create_app
from tests.imagefactory import make_image
from tests.support import free_port

from .answers import assert_error
from .conftest import TEST_UPLOAD_LIMIT, GatewayServer, gateway_settings
from .rawhttp import exchange

NAME = "0" * 64 + ".jpg"


@pytest.fixture
def down(start_gateway, tmp_path) -> GatewayServer:
    """A gateway whose dataset service is a free port with nothing listening."""
    settings = gateway_settings(f"127.0.0.1:{free_port()}", tmp_path)
    app = create_app(settings)

    # Test-only routes reaching the last-resort paths of the error handling.
    @app.get("/test/crash")
    async def crash() -> None:
        raise RuntimeError("a bug with a secret detail")

    @app.get("/test/overloaded")
    async def overloaded() -> None:
        raise Overloaded("the tagger queue is full; retry shortly")

    @app.get("/test/typed")
    async def typed(count: int) -> dict:
        return {"count": count, "request_id": request_id_var.get()}

    return start_gateway(settings, app)


def test_backend_down_is_503_naming_the_service(down):
    with httpx.Client(base_url=down.url) as http:
        for response in (
            http.get("/getuserdata", params={"user": "alice"}),
            http.get("/getimage", params={"image": NAME}),
            http.get("/getimagetags", params={"image": NAME}),
            http.get("/verifydatasets"),
            http.post(
                "/addrating",
                data={"user": "alice", "rating": "0.5"},
                files={"image": ("a.jpg", make_image("JPEG"), "image/jpeg")},
            ),
        ):
            body = assert_error(response, 503, "dataset_unavailable")
            assert "dataset service" in body["error"]


def test_unconfigured_backend_is_503_naming_it(start_gateway, tmp_path):
    gateway = start_gateway(gateway_settings("", tmp_path))
    with httpx.Client(base_url=gateway.url) as http:
        body = assert_error(http.get("/verifydatasets"), 503, "dataset_unavailable")
        assert "dataset service is not configured" in body["error"]
        ready = http.get("/readyz")
    # Nothing configured means nothing to wait for.
    assert ready.status_code == 200
    assert ready.json() == {
        "ready": True,
        "services": {name: "NOT_CONFIGURED" for name in ("dataset", "tagger", "rater", "trainer")},
    }


def test_health_and_readiness(down):
    with httpx.Client(base_url=down.url) as http:
        health = http.get("/healthz")
        ready = http.get("/readyz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert ready.status_code == 503
    body = ready.json()
    assert body["code"] == "not_ready" and "dataset service is UNAVAILABLE" in body["error"]
    assert body["ready"] is False
    assert body["services"] == {
        "dataset": "UNAVAILABLE",
        "tagger": "NOT_CONFIGURED",
        "rater": "NOT_CONFIGURED",
        "trainer": "NOT_CONFIGURED",
    }


def test_unknown_path_and_wrong_method(down):
    with httpx.Client(base_url=down.url) as http:
        body = assert_error(http.get("/no/such/thing"), 404, "unknown_endpoint")
        assert "/no/such/thing" in body["error"]
        wrong = http.get("/addrating")
        body = assert_error(wrong, 405, "method_not_allowed")
        assert "POST" in body["error"] and wrong.headers["allow"] == "POST"
        assert_error(http.post("/getuserdata"), 405, "method_not_allowed")
        assert_error(http.delete("/verifydatasets"), 405, "method_not_allowed")


def test_unexpected_exception_is_a_500_without_details(down):
    response = httpx.get(f"{down.url}/test/crash", headers={"X-Request-ID": "crash-1"})
    body = assert_error(response, 500, "internal_error")
    assert body["error"] == "internal error (request id crash-1)"
    assert "secret" not in response.text
    assert response.headers["x-request-id"] == "crash-1"


def test_overloaded_asks_to_retry(down):
    response = httpx.get(f"{down.url}/test/overloaded")
    assert_error(response, 503, "overloaded")
    assert response.headers["retry-after"] == "1"


def test_framework_validation_errors_are_400_naming_the_parameter(down):
    body = assert_error(httpx.get(f"{down.url}/test/typed", params={"count": "many"}), 400, "invalid_parameter")
    assert "'count'" in body["error"]
    body = assert_error(httpx.get(f"{down.url}/test/typed"), 400, "invalid_parameter")
    assert "'count'" in body["error"]


def test_request_id_is_kept_when_sane_and_replaced_otherwise(down, start_gateway, tmp_path):
    with httpx.Client(base_url=down.url) as http:
        kept = http.get("/test/typed", params={"count": 1}, headers={"X-Request-ID": "client.id_1-2"})
        assert kept.headers["x-request-id"] == "client.id_1-2"
        assert kept.json()["request_id"] == "client.id_1-2"  # visible to the route, hence forwarded
        for bad in ("has space", "x" * 65, "new\\nline", ""):
            response = http.get("/test/typed", params={"count": 1}, headers={"X-Request-ID": bad})
            rid = response.headers["x-request-id"]
            assert rid != bad and re.fullmatch(r"[0-9a-f]{16}", rid)
            assert response.json()["request_id"] == rid
        # Errors carry it too.
        assert http.get("/nowhere", headers={"X-Request-ID": "err-7"}).headers["x-request-id"] == "err-7"
    untrusting = start_gateway(gateway_settings("", tmp_path, trust_request_id=False))
    response = httpx.get(f"{untrusting.url}/healthz", headers={"X-Request-ID": "client-chosen"})
    assert re.fullmatch(r"[0-9a-f]{16}", response.headers["x-request-id"])


def test_metrics_are_labelled_by_route_template(down):
    with httpx.Client(base_url=down.url) as http:
        http.get("/healthz")
        http.get("/getuserdata", params={"user": "x" * 65})
        http.get("/random/path/12345")
        text = http.get("/metrics").text
    assert re.search(r'tagrate_http_requests_total\{method="GET",route="/healthz",status="200"\} [1-9]', text)
    assert re.search(r'tagrate_http_requests_total\{method="GET",route="/getuserdata",status="400"\} [1-9]', text)
    assert 'route="<unmatched>",status="404"' in text
    assert "/random/path/12345" not in text
    assert "tagrate_http_request_seconds_bucket" in text


def test_every_request_is_counted_once(down):
    """The middleware keeps the metric children it made (issue 28): each
    request still adds exactly one to its counter and its histogram."""

    def counts(http: httpx.Client) -> tuple[float, float]:
        text = http.get("/metrics").text
        served = re.search(r'tagrate_http_requests_total\{method="GET",route="/getuserdata",status="400"\} (\S+)', text)
        timed = re.search(r'tagrate_http_request_seconds_count\{method="GET",route="/getuserdata"\} (\S+)', text)
        return (float(served.group(1)) if served else 0.0), (float(timed.group(1)) if timed else 0.0)

    with httpx.Client(base_url=down.url) as http:
        http.get("/getuserdata", params={"user": "x" * 65})
        before = counts(http)
        for _ in range(3):
            assert http.get("/getuserdata", params={"user": "x" * 65}).status_code == 400
        after = counts(http)
    assert after == (before[0] + 3, before[1] + 3)


def test_docs_and_openapi(down):
    with httpx.Client(base_url=down.url) as http:
        docs = http.get("/docs")
        schema = http.get("/openapi.json").json()
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    for path in ("/getimage", "/getimagetags", "/getuserdata", "/addrating", "/verifydatasets", "/readyz"):
        assert path in schema["paths"]
    userdata = {p["name"] for p in schema["paths"]["/getuserdata"]["get"]["parameters"]}
    assert userdata >= {"user", "filters", "page", "limit", "sort", "rated"}
    form = schema["paths"]["/addrating"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["properties"]["image"]["format"] == "binary" and set(form["required"]) == {"image", "user", "rating"}
    assert "422" not in str(schema)


def _multipart_head(port: int, boundary: str, length_header: str) -> bytes:
    return (
        f"POST /addrating HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n{length_header}\r\n\r\n"
    ).encode()


def _part_head(boundary: str, filename: str) -> bytes:
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()


def test_declared_oversized_body_is_refused_before_it_is_sent(down):
    port, boundary = down.settings.port, "b0undary"
    head = _multipart_head(port, boundary, f"Content-Length: {100 * TEST_UPLOAD_LIMIT}")
    # Only the first bytes are ever sent; the answer must not wait for the rest.
    response = exchange(port, head, _part_head(boundary, "huge.jpg") + b"\xff\xd8\xff" + b"\0" * 1000)
    assert response.status == 413
    assert response.json()["code"] == "request_too_large"


def test_oversized_file_is_refused_while_streaming(down):
    port, boundary = down.settings.port, "b0undary"
    head = _multipart_head(port, boundary, "Transfer-Encoding: chunked")
    first = _part_head(boundary, "huge.jpg") + b"\xff\xd8\xff"
    chunks = [first] + [b"\0" * 16384] * (TEST_UPLOAD_LIMIT // 16384 + 2)
    encoded = [f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks]
    # No closing boundary and no last chunk: the body never ends.
    response = exchange(port, head, *encoded)
    assert response.status == 413
    body = response.json()
    assert body["code"] == "file_too_large" and "'huge.jpg'" in body["error"]
    assert response.headers["x-request-id"]
