"""The documented query/form parameters: what is accepted, and that every
refusal is a 400 naming the parameter."""

from __future__ import annotations

import pytest

from tagrate_common.errors import InvalidArgument
from tagrate_gateway import params

NAME = "a" * 64 + ".jpg"


def refused(call, *args) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as info:
        call(*args)
    assert info.value.http_status == 400
    return info.value


def test_page_and_limit():
    assert params.page(None) is None
    assert params.page("") is None
    assert params.page("1") == 1
    assert params.page(" 7 ") == 7
    for bad in ("0", "-1", "abc", "1.5", "1e3", "99999999999999"):
        assert "'page'" in refused(params.page, bad).message
    assert params.limit(None) == 60
    assert params.limit("1") == 1
    assert params.limit("1000") == 1000
    for bad in ("0", "5000", "-3", "ten"):
        error = refused(params.limit, bad)
        assert "'limit'" in error.message and "1 to 1000" in error.message


def test_sort_accepts_documented_values_and_aliases():
    assert params.sort(None) == "date-desc"
    for value in params.SORT_ORDERS:
        assert params.sort(value) == value
    assert params.sort("filename-asc") == "name-asc"
    assert params.sort("FILENAME-DESC") == "name-desc"
    error = refused(params.sort, "random")
    assert "'sort'" in error.message
    for value in (*params.SORT_ORDERS, "filename-asc", "filename-desc"):
        assert value in error.message


def test_rated():
    assert params.rated(None) == "yes"
    assert [params.rated(v) for v in ("yes", "no", "all", "ALL")] == ["yes", "no", "all", "all"]
    error = refused(params.rated, "maybe")
    assert "'rated'" in error.message and "yes, no, all" in error.message


def test_filters_trim_lowercase_skip_empty_and_exclude():
    got = params.filters(" Cat, ,dog,,-Indoor ,- , cat ")
    assert got.include == ("cat", "dog")
    assert got.exclude == ("indoor",)
    assert params.filters(None) == params.TagFilter()
    # SQL metacharacters are ordinary characters of a tag name.
    assert params.filters("jack-o'-lantern,%;--").include == ("jack-o'-lantern", "%;--")


def test_filters_limits():
    assert len(params.filters(",".join(f"t{i}" for i in range(50))).include) == 50
    assert "at most 50" in refused(params.filters, ",".join(f"t{i}" for i in range(51))).message
    params.filters("x" * 200)
    assert "'filters'" in refused(params.filters, "x" * 201).message
    assert "control" in refused(params.filters, "cat\x00").message


def test_size_and_boolean():
    assert params.size(None) is None
    assert params.size("16") == 16 and params.size("4096") == 4096
    for bad in ("15", "4097", "big", "0"):
        assert "'size'" in refused(params.size, bad).message
    for value, expected in [("true", True), ("1", True), ("YES", True), ("false", False), ("0", False), ("no", False)]:
        assert params.boolean(value, "scores") is expected
    assert params.boolean(None, "scores") is False
    assert "'scores'" in refused(params.boolean, "perhaps", "scores").message


def test_image_and_filename_alias():
    assert params.image(NAME) == NAME
    assert params.image(None, NAME) == NAME
    assert params.image(NAME, NAME) == NAME
    assert refused(params.image, None, None).code == "missing_parameter"
    assert "'filename'" in refused(params.image, None, "../../etc/passwd").message
    assert refused(params.image, NAME, "b" * 64 + ".jpg").code == "conflicting_parameters"
    for bad in ("../../etc/passwd", "/etc/passwd", NAME + "\x00", NAME.upper(), "a" * 64 + ".exe"):
        assert refused(params.image, bad).code == "invalid_image_name"


def test_user_and_rating():
    assert params.user("1234567890") == "1234567890"
    for bad in ("with space", "x" * 65, "all", "ALL", "José", ""):
        refused(params.user, bad)
    assert params.user_or_all("all") == "all"
    assert params.rating("0") == 0.0 and params.rating("1") == 1.0 and params.rating("0.83") == 0.83
    for bad in ("abc", "NaN", "inf", "-0.1", "1.5", "", None):
        assert "'rating'" in refused(params.rating, bad).message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.5", 0.5),
        ("1", 1.0),
        (".83", 0.83),
        ("0.1666667", 0.1666667),
        ("0", 0.0),
        ("1.", 1.0),
        ("1.000", 1.0),
        ("00.25", 0.25),
        (" 0.25 ", 0.25),
        ("-0", 0.0),
        ("-0.000", 0.0),
        ("-.0", 0.0),
    ],
)
def test_rating_grammar_accepts_plain_decimals(text, expected):
    value = params.rating(text)
    assert value == expected and str(value) == str(expected)  # never "-0.0"


@pytest.mark.parametrize(
    "text",
    [
        "1_0e-1",
        "0_5",
        "1e-1",
        "5E-1",
        "+0.5",
        "+0",
        "-0.5",
        "-1",
        "--0",
        "-",
        ".",
        "0.5.",
        "0,5",
        "0x1",
        "nan",
        "NaN",
        "inf",
        "-inf",
        "Infinity",
        "\uff11",  # full-width digit one
        "\u0660.\u0665",  # Arabic-Indic digits
        "½",
        "1.5",
        "1.0000000000000000001",  # over 1, though its float rounds to 1.0
        "2",
        "0.5 0.5",
        "0.5\x00",
    ],
)
def test_rating_grammar_refuses_other_forms(text):
    error = refused(params.rating, text)
    assert error.code == "invalid_rating" and "'rating'" in error.message


def test_rating_numbers_from_json_bodies():
    from tagrate_common import validation

    assert validation.rating(0.5) == 0.5 and validation.rating(1) == 1.0
    assert str(validation.rating(-0.0)) == "0.0"
    for bad in (float("nan"), float("inf"), 1.5, -0.1, True):
        assert refused(validation.rating, bad).code == "invalid_rating"


def test_single_valued_parameters():
    pairs = [("user", "a"), ("images", "x"), ("images", "y"), ("rating", "0.5")]
    assert params.single(pairs, "user") == "a" and params.single(pairs, "missing") is None
    error = refused(params.single, pairs, "images")
    assert error.code == "repeated_parameter" and "'images'" in error.message
    assert params.Fields(pairs).get("rating") == "0.5"
    assert refused(params.Fields([("full", "1"), ("full", "1")]).get, "full").code == "repeated_parameter"
