"""Collection management at the HTTP edge, before any backend is asked:
CORS (preflights answered by the gateway itself), and the 400s for bad
parameters and bodies of the new endpoints. The gateway here has no backend
configured, so anything that reached one would be a 503."""

from __future__ import annotations

import httpx
import pytest

from .answers import assert_error
from .conftest import gateway_settings

NAME = "a" * 64 + ".jpg"
ORIGIN = "https://frontend.example"


@pytest.fixture
def http(start_gateway, tmp_path):
    gateway = start_gateway(gateway_settings("", tmp_path))
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        yield client


@pytest.mark.parametrize("path", ["/addimage", "/ratebulk", "/updaterating", "/deleteimage"])
def test_a_preflight_is_answered_without_a_backend(http, path):
    response = http.options(
        path,
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, x-request-id",
        },
    )
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == "*"
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "content-type" in response.headers["access-control-allow-headers"].lower()
    # No credentials with "*": a browser would refuse the answer anyway.
    assert "access-control-allow-credentials" not in response.headers


def test_a_cross_origin_request_is_allowed(http):
    response = http.get("/healthz", headers={"Origin": ORIGIN})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
    assert "x-request-id" in response.headers["access-control-expose-headers"].lower()
    # Errors carry it too, so a browser script can read the error body.
    refused = http.get("/getthumbnail", headers={"Origin": ORIGIN})
    assert_error(refused, 400, "missing_parameter")
    assert refused.headers["access-control-allow-origin"] == "*"


def test_allowed_origins_are_a_setting(start_gateway, tmp_path):
    settings = gateway_settings("", tmp_path, cors_origins=f" {ORIGIN} , http://localhost:3000")
    gateway = start_gateway(settings)
    preflight = {"Access-Control-Request-Method": "POST"}
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        allowed = http.options("/addimage", headers={"Origin": ORIGIN, **preflight})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == ORIGIN
        other = http.options("/addimage", headers={"Origin": "https://evil.example", **preflight})
        assert other.status_code == 400
        assert "access-control-allow-origin" not in other.headers
        plain = http.get("/healthz", headers={"Origin": "https://evil.example"})
        assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers


def test_updaterating_bad_bodies_name_the_field(http):
    json_headers = {"content-type": "application/json"}
    body = assert_error(http.post("/updaterating", content=b'{"image": "x', headers=json_headers), 400)
    assert body["code"] == "malformed_json"
    assert_error(http.post("/updaterating", content=b"[1, 2]", headers=json_headers), 400, "malformed_json")
    missing = assert_error(http.post("/updaterating", json={"image": NAME, "user": "alice"}), 400)
    assert missing["code"] == "missing_parameter" and "'rating'" in missing["error"]
    repeated = http.post(
        "/updaterating",
        content=b'{"image": "%s", "user": "a", "user": "b", "rating": 0.5}' % NAME.encode(),
        headers=json_headers,
    )
    assert "'user'" in assert_error(repeated, 400, "repeated_parameter")["error"]
    assert_error(http.post("/updaterating", json={"image": NAME, "user": True, "rating": 0.5}), 400, "invalid_user")
    assert_error(http.post("/updaterating", json={"image": NAME, "user": 1.5, "rating": 0.5}), 400, "invalid_user")
    assert_error(http.post("/updaterating", json={"image": NAME, "user": "a", "rating": 1.5}), 400, "invalid_rating")
    assert_error(http.post("/updaterating", json={"image": NAME, "user": "a", "rating": "1e-1"}), 400, "invalid_rating")
    assert_error(http.post("/updaterating", json={"image": NAME, "user": "a", "rating": [1]}), 400, "invalid_rating")
    traversal = {"image": "../etc", "user": "a", "rating": 1}
    assert_error(http.post("/updaterating", json=traversal), 400, "invalid_image_name")
    form = {"image": NAME, "user": "a", "rating": "0.5"}
    assert_error(http.post("/updaterating", data=form, params={"rating": "0.5"}), 400, "repeated_parameter")
    assert_error(http.post("/updaterating", files={"image": ("x.jpg", b"x")}, data=form), 413, "too_many_files")
    # Well-formed: reaches for the dataset service, which is not configured here.
    assert_error(http.post("/updaterating", json={"filename": NAME, "user": 123, "rating": "0.5"}), 503)
    assert_error(http.post("/updaterating", data=form), 503)


def test_form_endpoints_refuse_json(http):
    for path in ("/removerating", "/deleteimage"):
        body = assert_error(http.post(path, json={"image": NAME, "user": "a"}), 400, "json_not_accepted")
        assert path in body["error"]


@pytest.mark.parametrize(
    ("path", "query", "code"),
    [
        ("/removerating", {"image": NAME}, "missing_parameter"),
        ("/removerating", {"user": "a"}, "missing_parameter"),
        ("/removerating", {"user": "a", "image": "x.jpg"}, "invalid_image_name"),
        ("/deleteimage", {}, "missing_parameter"),
        ("/deleteimage", {"image": NAME, "filename": "b" * 64 + ".jpg"}, "conflicting_parameters"),
        ("/getthumbnail", {"image": NAME, "size": "15"}, "invalid_size"),
        ("/getthumbnail", {"image": NAME, "size": "1025"}, "invalid_size"),
        ("/gettags", {"limit": "0"}, "invalid_limit"),
        ("/gettags", {"limit": "100001"}, "invalid_limit"),
        ("/gettags", {"user": "no/such"}, "invalid_user"),
        ("/getstats", {}, "missing_parameter"),
        ("/getstats", {"user": "all"}, "invalid_user"),
        ("/getimageneighbours", {"user": "a"}, "missing_parameter"),
        ("/getimageneighbours", {"image": NAME}, "missing_parameter"),
        ("/getimageneighbours", {"image": NAME, "user": "a", "sort": "sideways"}, "invalid_sort"),
        ("/getimageneighbours", {"image": NAME, "user": "a", "rated": "maybe"}, "invalid_rated"),
    ],
)
def test_bad_query_parameters_are_400_naming_them(http, path, query, code):
    assert_error(http.get(path, params=query), 400, code)


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/removerating", "user=a&user=b&image=" + NAME),
        ("/deleteimage", f"image={NAME}&image={NAME}"),
        ("/getthumbnail", f"image={NAME}&size=20&size=30"),
        ("/gettags", "prefix=a&prefix=b"),
        ("/getstats", "user=a&user=b"),
        ("/getimageneighbours", f"image={NAME}&user=a&sort=name-asc&sort=name-desc"),
    ],
)
def test_a_repeated_parameter_is_400_naming_it(http, path, query):
    body = assert_error(http.get(f"{path}?{query}"), 400, "repeated_parameter")
    assert "'" in body["error"]


def test_addimage_refusals(http):
    jpeg = b"\xff\xd8\xff\xe0" + b"\0" * 64
    assert_error(http.post("/addimage", data={"source": "x"}, files={"nothing": ("a.jpg", jpeg)}), 400)
    both = {"image": ("a.jpg", jpeg), "images": ("b.jpg", jpeg)}
    assert_error(http.post("/addimage", files=both), 400, "conflicting_parameters")
    too_long = assert_error(
        http.post("/addimage", data={"source": "s" * 2049}, files={"image": ("a.jpg", jpeg)}), 400, "invalid_source"
    )
    assert "2048" in too_long["error"]
    alias = http.post("/addimage", data={"source": "a", "sankaku_id": "b"}, files={"image": ("a.jpg", jpeg)})
    assert_error(alias, 400, "conflicting_parameters")
    assert_error(http.post("/addimage", files={"image": ("notes.txt", b"hello")}), 415)
    five = [("images", (f"{i}.jpg", jpeg)) for i in range(5)]  # the test gateway allows 4 per request
    assert_error(http.post("/addimage", files=five), 413, "too_many_files")
    assert_error(http.post("/addimage", files={"image": ("a.jpg", jpeg)}), 503)  # well-formed
