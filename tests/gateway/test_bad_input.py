"""Bad input gets a clear 4xx in the API's error shape and changes nothing:
after each refused request the users' datasets, /verifydatasets and the
stored files are exactly as before."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.imagefactory import bomb_png, make_image, truncated_jpeg

from .answers import assert_error
from .conftest import TEST_UPLOAD_LIMIT

USERS = ("alice", "bob")
GOOD_FORM = {"user": "alice", "rating": "0.5"}
UNKNOWN_IMAGE = "e" * 64 + ".jpg"


def jpeg() -> tuple[str, bytes, str]:
    return ("fresh.jpg", make_image("JPEG", seed=99), "image/jpeg")


def refused(shared, method: str, url: str, status: int, code: str | None = None, **kwargs: Any) -> dict:
    """Sends one bad request; checks the answer and that nothing changed."""
    with httpx.Client(base_url=shared.url, timeout=30) as http:
        before = shared.state(http, USERS)
        body = assert_error(http.request(method, url, **kwargs), status, code)
        assert shared.state(http, USERS) == before
    return body


@pytest.mark.parametrize(
    ("params", "code", "names"),
    [
        ({}, "missing_parameter", "user"),
        ({"user": ""}, "missing_parameter", "user"),
        ({"user": "with space"}, "invalid_user", "user"),
        ({"user": "x" * 65}, "invalid_user", "user"),
        ({"user": "all"}, "invalid_user", "user"),
        ({"user": "José"}, "invalid_user", "user"),
        ({"user": "alice", "page": "0"}, "invalid_page", "page"),
        ({"user": "alice", "page": "-1"}, "invalid_page", "page"),
        ({"user": "alice", "page": "abc"}, "invalid_page", "page"),
        ({"user": "alice", "page": "1", "limit": "0"}, "invalid_limit", "limit"),
        ({"user": "alice", "page": "1", "limit": "5000"}, "invalid_limit", "limit"),
        ({"user": "alice", "sort": "shuffle"}, "invalid_sort", "sort"),
        ({"user": "alice", "rated": "maybe"}, "invalid_rated", "rated"),
        ({"user": "alice", "filters": "x" * 5000}, "invalid_filters", "filters"),
        ({"user": "alice", "filters": ",".join(f"t{i}" for i in range(51))}, "invalid_filters", "filters"),
        ({"user": "alice", "filters": "cat\x00"}, "invalid_filters", "filters"),
    ],
)
def test_getuserdata_bad_params(shared, params, code, names):
    body = refused(shared, "GET", "/getuserdata", 400, code, params=params)
    assert f"'{names}'" in body["error"]


def test_getuserdata_sort_error_lists_allowed_values(shared):
    body = refused(shared, "GET", "/getuserdata", 400, "invalid_sort", params={"user": "alice", "sort": "x"})
    for value in ("date-desc", "date-asc", "rating-desc", "rating-asc", "name-asc", "name-desc"):
        assert value in body["error"]


@pytest.mark.parametrize("path", ["/getimage", "/getimagetags"])
@pytest.mark.parametrize(
    "query",
    [
        "image=../../etc/passwd",
        "image=%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "filename=..%2F..%2Fetc%2Fpasswd",
        "image=/etc/passwd",
        "image=%2Fetc%2Fpasswd",
        "image=" + "a" * 64 + ".jpg%00",
        "image=%00",
        "image=" + "a" * 64 + ".jpg/../../x",
        "image=" + "A" * 64 + ".jpg",
        "image=C:%5Cwindows%5Cwin.ini",
    ],
)
def test_image_names_that_try_to_escape(shared, path, query):
    body = refused(shared, "GET", f"{path}?{query}", 400, "invalid_image_name")
    assert "stored image name" in body["error"]


@pytest.mark.parametrize(
    ("path", "params", "status", "code"),
    [
        ("/getimage", {}, 400, "missing_parameter"),
        ("/getimagetags", {"image": ""}, 400, "missing_parameter"),
        ("/getimage", {"image": UNKNOWN_IMAGE}, 404, None),
        ("/getimagetags", {"image": UNKNOWN_IMAGE}, 404, None),
        ("/getimage", {"image": UNKNOWN_IMAGE, "size": "15"}, 400, "invalid_size"),
        ("/getimage", {"image": UNKNOWN_IMAGE, "size": "5000"}, 400, "invalid_size"),
        ("/getimage", {"image": UNKNOWN_IMAGE, "size": "big"}, 400, "invalid_size"),
        ("/getimagetags", {"image": UNKNOWN_IMAGE, "scores": "perhaps"}, 400, "invalid_scores"),
    ],
)
def test_image_endpoints_bad_params(shared, path, params, status, code):
    refused(shared, "GET", path, status, code, params=params)


def test_image_and_filename_naming_different_images(shared):
    params = {"image": shared.names["jpeg"], "filename": shared.names["png"]}
    refused(shared, "GET", "/getimage", 400, "conflicting_parameters", params=params)


@pytest.mark.parametrize(
    ("form", "missing"),
    [
        ({"rating": "0.5"}, "user"),
        ({"user": "alice"}, "rating"),
        ({"user": "alice", "rating": "   "}, "rating"),
    ],
)
def test_addrating_missing_fields(shared, form, missing):
    body = refused(shared, "POST", "/addrating", 400, "missing_parameter", data=form, files={"image": jpeg()})
    assert f"'{missing}'" in body["error"]


def test_addrating_without_image(shared):
    body = refused(shared, "POST", "/addrating", 400, "missing_parameter", data=GOOD_FORM, files={"other": jpeg()})
    assert "'image'" in body["error"]
    refused(shared, "POST", "/addrating", 400, "not_a_file", files={"image": (None, "abc"), **_text(GOOD_FORM)})


def _text(form: dict[str, str]) -> dict[str, tuple[None, str]]:
    """Form fields as multipart text parts (httpx sends ``data`` alone urlencoded)."""
    return {name: (None, value) for name, value in form.items()}


@pytest.mark.parametrize("rating", ["abc", "NaN", "nan", "inf", "-inf", "-0.1", "1.5", "1e400", ""])
def test_addrating_bad_ratings(shared, rating):
    code = "missing_parameter" if rating == "" else "invalid_rating"
    body = refused(
        shared, "POST", "/addrating", 400, code, data={"user": "alice", "rating": rating}, files={"image": jpeg()}
    )
    assert "'rating'" in body["error"]


@pytest.mark.parametrize("user", ["with space", "x" * 65, "all", "ALL", "José", "ünïcødé", "../alice", "alice\x00"])
def test_addrating_bad_user_names(shared, user):
    body = refused(
        shared, "POST", "/addrating", 400, "invalid_user", data={"user": user, "rating": "0.5"}, files={"image": jpeg()}
    )
    assert "'user'" in body["error"]


@pytest.mark.parametrize(
    ("filename", "data", "status", "code"),
    [
        ("notes.txt", b"just some text, not an image\n", 415, "unsupported_image"),
        ("fake.jpg", b"<html><body>not a jpeg</body></html>", 415, "unsupported_image"),
        ("empty.jpg", b"", 415, "empty_file"),
        ("half.jpg", truncated_jpeg(), 415, "truncated_image"),
        ("bomb.png", bomb_png(), 413, "too_many_pixels"),
    ],
)
def test_addrating_files_that_are_not_usable_images(shared, filename, data, status, code):
    body = refused(shared, "POST", "/addrating", status, code, data=GOOD_FORM, files={"image": (filename, data)})
    assert filename in body["error"]


def test_addrating_upload_over_the_size_limit(shared):
    big = b"\xff\xd8\xff" + b"\0" * TEST_UPLOAD_LIMIT
    body = refused(
        shared, "POST", "/addrating", 413, "file_too_large", data=GOOD_FORM, files={"image": ("big.jpg", big)}
    )
    assert "'big.jpg'" in body["error"] and str(TEST_UPLOAD_LIMIT) in body["error"]


def test_addrating_with_two_images(shared):
    two = [("image", jpeg()), ("image", ("second.jpg", make_image("JPEG", seed=98)))]
    refused(shared, "POST", "/addrating", 413, "too_many_files", data=GOOD_FORM, files=two)


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"data": {"user": "alice", "rating": "0.5"}}, 415, "unsupported_media_type"),
        ({"json": {"user": "alice", "rating": 0.5}}, 415, "unsupported_media_type"),
        ({}, 415, "unsupported_media_type"),
        ({"content": b"--x\r\nbroken", "headers": {"content-type": "multipart/form-data; boundary=x"}}, 400, None),
    ],
)
def test_addrating_bodies_that_are_not_multipart_forms(shared, kwargs, status, code):
    refused(shared, "POST", "/addrating", status, code, **kwargs)


def test_wrong_method_and_unknown_path_change_nothing(shared):
    refused(shared, "GET", "/addrating", 405, "method_not_allowed", params={"user": "alice"})
    refused(shared, "PUT", "/getuserdata", 405, "method_not_allowed")
    refused(shared, "POST", "/deleteeverything", 404, "unknown_endpoint", data=GOOD_FORM)


# ---- a parameter given twice ---------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url", "param"),
    [
        ("GET", "/getuserdata?user=alice&user=bob", "user"),
        ("GET", "/getuserdata?user=alice&page=1&page=2", "page"),
        ("GET", f"/getimagetags?image={UNKNOWN_IMAGE}&image={UNKNOWN_IMAGE}", "image"),
        ("GET", "/trainuser?user=alice&user=alice", "user"),
        ("POST", "/trainuser?user=alice&user=bob", "user"),
        ("GET", "/updatetags?full=true&full=false", "full"),
    ],
)
def test_repeated_query_parameter(shared, method, url, param):
    body = refused(shared, method, url, 400, "repeated_parameter")
    assert f"'{param}'" in body["error"]


def test_repeated_form_fields(shared):
    form = {"user": "alice", "rating": ["0.5", "0.9"]}
    body = refused(shared, "POST", "/addrating", 400, "repeated_parameter", data=form, files={"image": jpeg()})
    assert "'rating'" in body["error"]
    form = {"user": ["alice", "bob"], "rating": "0.5"}
    body = refused(shared, "POST", "/addrating", 400, "repeated_parameter", data=form, files={"image": jpeg()})
    assert "'user'" in body["error"]
    # In the form and in the query string is twice too (which one was meant?).
    body = refused(shared, "POST", "/trainuser?user=alice", 400, "repeated_parameter", data={"user": "bob"})
    assert "'user'" in body["error"]
    body = refused(shared, "POST", "/trainuser", 400, "repeated_parameter", data={"user": ["a", "b"]})
    assert "'user'" in body["error"]


def test_unknown_parameters_may_repeat(shared):
    with httpx.Client(base_url=shared.url, timeout=30) as http:
        assert http.get("/getuserdata?user=alice&x=1&x=2").status_code == 200


@pytest.mark.parametrize("rating", ["1_0e-1", "\uff11", "0.5e0", "+0.5", "-0.5", "nan", "Infinity", "0x1", "1.5", "½"])
def test_rating_outside_the_grammar(shared, rating):
    form = {"user": "alice", "rating": rating}
    body = refused(shared, "POST", "/addrating", 400, "invalid_rating", data=form, files={"image": jpeg()})
    assert "'rating'" in body["error"]


def test_negative_zero_rating_is_stored_as_zero(tmp_path):
    from .stack import start_stack

    stack = start_stack(f"sqlite:///{tmp_path / 'tagrate.db'}", tmp_path / "data")  # its own: this one stores
    try:
        with httpx.Client(base_url=stack.url, timeout=30) as http:
            image = ("zero.jpg", make_image("JPEG", seed=4242), "image/jpeg")
            answer = http.post("/addrating", data={"user": "carol", "rating": "-0"}, files={"image": image})
            assert answer.status_code == 200, answer.text
            assert answer.json()["rating"] == 0 and '"rating":0' in answer.text.replace(" ", "")
            data = http.get("/getuserdata", params={"user": "carol"}).json()
            assert [item["rating"] for item in data["images"]] == [0]
            assert '"rating":-' not in http.get("/getuserdata", params={"user": "carol"}).text.replace(" ", "")
    finally:
        stack.stop()
