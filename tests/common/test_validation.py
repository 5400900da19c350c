import pytest

from tagrate_common import validation
from tagrate_common.errors import InvalidArgument

SHA = "a" * 64


@pytest.mark.parametrize("name", ["alice", "123456789", "a.b-c_d", "x" * 64, "All-Stars"])
def test_valid_user_names(name):
    assert validation.user_name(name) == name


@pytest.mark.parametrize("name", ["has space", "x" * 65, "all", "ALL", "josé", "名前", "..", "a/b", "a\0b"])
def test_invalid_user_names(name):
    with pytest.raises(InvalidArgument) as exc:
        validation.user_name(name)
    assert "'user'" in exc.value.message


def test_all_only_where_allowed():
    assert validation.user_name("all", allow_all=True) == "all"


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd",
        "%2e%2e%2fetc%2fpasswd",
        "/etc/passwd",
        f"{SHA}.jpg\0.png",
        f"{SHA}.exe",
        f"{SHA.upper()}.jpg",
        f"../{SHA}.jpg",
        f"{SHA}.JPG",
        SHA,
    ],
)
def test_image_names_that_are_not_stored_names_are_refused(name):
    with pytest.raises(InvalidArgument) as exc:
        validation.image_name(name)
    assert exc.value.code == "invalid_image_name"


def test_stored_image_name_accepted():
    assert validation.image_name(f"{SHA}.webp") == f"{SHA}.webp"


@pytest.mark.parametrize("value", ["abc", "NaN", "nan", "inf", "-inf", "-0.1", "1.5", "1e3"])
def test_bad_ratings(value):
    with pytest.raises(InvalidArgument) as exc:
        validation.rating(value)
    assert exc.value.code == "invalid_rating"


@pytest.mark.parametrize("value", ["", "  ", None])
def test_missing_rating(value):
    with pytest.raises(InvalidArgument) as exc:
        validation.rating(value)
    assert exc.value.code == "missing_parameter"


@pytest.mark.parametrize(("value", "expected"), [("0", 0.0), ("0.5", 0.5), ("1", 1.0), ("1.0", 1.0), (" 0.25 ", 0.25)])
def test_good_ratings_stored_as_given(value, expected):
    assert validation.rating(value) == expected
