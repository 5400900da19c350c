"""The documented query/form parameters: what is accepted, and that every
refusal is a 400 naming the parameter."""

from __future__ import annotations

import pytest

from tagrate_common.errors import InvalidArgument
from tagrate_common.userdata import RatedFilter, SortOrder, TagFilter
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
    # Only the form of a page size is the gateway's: its range is the dataset
    # service's setting (DATASET_USERDATA_MAX_LIMIT), which refuses more.
    assert params.limit(None) is None
    assert params.limit("1") == 1
    assert params.limit("1000") == 1000
    assert params.limit("5000") == 5000
    for bad in ("0", "-3", "ten", "99999999999999"):
        error = refused(params.limit, bad)
        assert "'limit'" in error.message and error.code == "invalid_limit"


def test_sort_accepts_documented_values_and_aliases():
    assert SortOrder.parse(None) == "date-desc"
    for value in SortOrder:
        assert SortOrder.parse(value) == value
    assert SortOrder.parse("filename-asc") == "name-asc"
    assert SortOrder.parse("FILENAME-DESC") == "name-desc"
    error = refused(SortOrder.parse, "random")
    assert "'sort'" in error.message
    for value in (*SortOrder, "filename-asc", "filename-desc"):
        assert value in error.message


def test_rated():
    assert RatedFilter.parse(None) == "yes"
    assert [RatedFilter.parse(v) for v in ("yes", "no", "all", "ALL")] == ["yes", "no", "all", "all"]
    error = refused(RatedFilter.parse, "maybe")
    assert "'rated'" in error.message and "yes, no, all" in error.message


def test_sort_and_rated_map_onto_the_wire_and_back():
    for order in SortOrder:
        assert SortOrder.from_proto(order.to_proto()) is order
    for rated in RatedFilter:
        assert RatedFilter.from_proto(rated.to_proto()) is rated
    assert SortOrder.from_proto(0) is SortOrder.DATE_DESC and RatedFilter.from_proto(0) is RatedFilter.YES
    assert refused(SortOrder.from_proto, 99).code == "invalid_sort"


def test_filters_trim_lowercase_skip_empty_and_exclude():
    got = TagFilter.parse(" Cat, ,dog,,-Indoor ,- , cat ")
    assert got.include == ("cat", "dog")
    assert got.exclude == ("indoor",)
    assert TagFilter.parse(None) == TagFilter()
    # SQL metacharacters are ordinary characters of a tag name.
    assert TagFilter.parse("jack-o'-lantern,%;--").include == ("jack-o'-lantern", "%;--")


def test_filters_limits():
    # Parsing checks the form; the limits are the dataset service's settings.
    many = TagFilter.parse(",".join(f"t{i}" for i in range(80)))
    assert len(many.include) == 80
    assert many.checked(80, 200) is many
    assert "at most 50" in refused(many.checked, 50, 200).message
    TagFilter.parse("x" * 201).checked(50, 201)
    assert "'filters'" in refused(TagFilter.parse("x" * 201).checked, 50, 200).message
    assert "control" in refused(TagFilter.parse, "cat\x00").message


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
