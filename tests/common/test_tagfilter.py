"""The filter grammar's edge with taggers' own names: WD v3 and DeepDanbooru
call their rating tags ``rating:general`` / ``rating:safe``, which share the
``rating:`` comparison key. A letter after ``rating:`` names such a tag; an
operator (or anything else) is a comparison, malformed or not."""

from __future__ import annotations

import pytest

from tagrate_common.errors import InvalidArgument
from tagrate_common.tagfilter import Comparison, Condition, TagTerm, parse_filter, tag_name
from tagrate_common.userdata import TagFilter


def conditions(include: list[str], exclude: list[str] = ()) -> tuple[Condition, ...]:
    return parse_filter(TagFilter.of(include, exclude)).conditions


def test_a_taggers_rating_tag_is_a_tag_in_every_filter_position() -> None:
    assert conditions(["rating:general"]) == (Condition(terms=(TagTerm("rating:general"),)),)
    assert conditions([], ["rating:explicit"]) == (Condition(terms=(TagTerm("rating:explicit"),), negate=True),)
    assert conditions(["~rating:general", "~rating:sensitive"]) == (
        Condition(terms=(TagTerm("rating:general"), TagTerm("rating:sensitive"))),
    )
    assert conditions(["model:rating:safe"]) == (Condition(terms=(TagTerm("rating:safe", "model"),)),)


def test_rating_comparisons_stay_comparisons_and_malformed_ones_400() -> None:
    assert conditions(["rating:>=0.5"]) == (Condition(comparison=Comparison("rating", ">=", 0.5)),)
    for bad in ["rating:>x", "rating:", "rating:0.5", "rating:~0.5", "predicted:general"]:
        with pytest.raises(InvalidArgument) as refused:
            conditions(["cat", bad])
        assert refused.value.code == "invalid_filter" and bad[:8] in refused.value.message


def test_people_still_cannot_name_a_tag_after_a_filter_key() -> None:
    for name in ["rating:general", "predicted:x", "manual:cat"]:
        with pytest.raises(InvalidArgument) as refused:
            tag_name(name)
        assert refused.value.code == "invalid_tag"
