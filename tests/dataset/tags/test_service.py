"""TagService over real gRPC, on SQLite and PostgreSQL: GetImageTags,
PutImageTags, ListTags and UpdateTags without a tagger, and their refusals."""

from __future__ import annotations

import math
from collections import Counter

import grpc

from tagrate_common.protos import tags_pb2, work_pb2
from tests.dataset.calls import INVALID, NOT_FOUND, add, assert_refused, put_tags
from tests.dataset.conftest import Served, rpc_error
from tests.imagefactory import make_image


def test_image_tags_follow_the_current_model_and_its_threshold(served: Served) -> None:
    name = add(served, "alice", make_image(seed=10), 0.3).image
    get = lambda: served.stub.tags.GetImageTags(tags_pb2.GetImageTagsRequest(image=name), timeout=30)  # noqa: E731
    assert (get().tagged, list(get().tags), get().model_id) == (False, [], "")
    put_tags(served, name, "tagger-1", 0.5, [("Cat", 0.9), (" dog ", 0.5), ("car", 0.2), ("hat", 0.75)])
    reply = get()
    assert (reply.image, reply.tagged, reply.model_id) == (name, True, "tagger-1")
    assert [(t.name, round(t.score, 4)) for t in reply.tags] == [("cat", 0.9), ("hat", 0.75), ("dog", 0.5)]
    put_tags(served, name, "tagger-1", 0.5, [("cat", 0.6)])  # replaces that model's scores
    assert [t.name for t in get().tags] == ["cat"]
    put_tags(served, name, "tagger-1", 0.7, [("cat", 0.6)])  # no tag passes: still tagged
    assert (get().tagged, list(get().tags)) == (True, [])
    # a new model becomes current; the image is untagged for it
    other = add(served, "alice", make_image(seed=11), 0.3).image
    put_tags(served, other, "tagger-2", 0.1, [("tree", 0.3)])
    assert (get().tagged, get().model_id) == (False, "tagger-2")
    verify = served.stub.work.VerifyDatasets(work_pb2.VerifyDatasetsRequest(), timeout=30)
    assert verify.untagged_images == 1


def test_put_image_tags_refusals(served: Served) -> None:
    name = add(served, "alice", make_image(seed=12), 0.3).image

    def request(**kw):
        fields = dict(image=name, model_id="m", threshold=0.5, tags=[tags_pb2.ImageTagScore(name="cat", score=0.9)])
        fields.update(kw)
        return tags_pb2.PutImageTagsRequest(**fields)

    put = served.stub.tags.PutImageTags
    assert_refused(served, put, request(image="../x"), INVALID, "invalid_image_name")
    assert_refused(served, put, request(image="c" * 64 + ".jpg"), grpc.StatusCode.NOT_FOUND, "image_not_found")
    assert_refused(served, put, request(model_id=""), INVALID, "missing_parameter")
    assert_refused(served, put, request(model_id="m" * 201), INVALID, "invalid_parameter")
    for threshold in (math.nan, 1.5, -0.5):
        assert_refused(served, put, request(threshold=threshold), INVALID, "invalid_threshold")
    for tag in ("", "  ", "x" * 201):
        bad = [tags_pb2.ImageTagScore(name=tag, score=0.9)]
        assert_refused(served, put, request(tags=bad), INVALID, "invalid_tag")
    nan = [tags_pb2.ImageTagScore(name="cat", score=math.nan)]
    assert_refused(served, put, request(tags=nan), INVALID, "invalid_parameter")


def test_get_image_tags_refusals(served: Served) -> None:
    get = served.stub.tags.GetImageTags
    assert_refused(served, get, tags_pb2.GetImageTagsRequest(image="/etc/passwd"), INVALID, "invalid_image_name")
    unknown = tags_pb2.GetImageTagsRequest(image="d" * 64 + ".gif")
    assert_refused(served, get, unknown, grpc.StatusCode.NOT_FOUND, "image_not_found")


def test_list_tags_counts_equal_a_brute_force_count(served: Served) -> None:
    tagsets = [
        [("cat", 0.9), ("Ünicode", 0.8), ("dog", 0.3)],
        [("cat", 0.6), ("caterpillar", 0.7), ("zebra", 0.9)],
        [("cat", 0.5), ("dog", 0.95), ("Apple", 0.99)],
        [("catalogue", 0.1)],
    ]
    names = []
    for seed, tags in enumerate(tagsets):
        name = add(served, "alice" if seed < 2 else "bob", make_image(seed=100 + seed), 0.5).image
        put_tags(served, name, "m1", 0.5, tags)
        names.append(name)
    expected: Counter[str] = Counter(t.lower() for tags in tagsets for t, s in tags if s >= 0.5)
    got = served.stub.tags.ListTags(tags_pb2.ListTagsRequest(), timeout=30)
    assert got.model == "m1"
    assert list(zip(got.tags, got.counts, strict=True)) == sorted(expected.items())  # code-point order
    cat = served.stub.tags.ListTags(tags_pb2.ListTagsRequest(prefix="CAT"), timeout=30)
    assert list(zip(cat.tags, cat.counts, strict=True)) == [("cat", 3), ("caterpillar", 1)]
    mine = served.stub.tags.ListTags(tags_pb2.ListTagsRequest(user="alice"), timeout=30)
    assert dict(zip(mine.tags, mine.counts, strict=True)) == {"cat": 2, "caterpillar": 1, "zebra": 1, "ünicode": 1}
    assert list(served.stub.tags.ListTags(tags_pb2.ListTagsRequest(limit=2), timeout=30).tags) == sorted(expected)[:2]
    assert_refused(served, served.stub.tags.ListTags, tags_pb2.ListTagsRequest(limit=100_001), INVALID, "invalid_limit")
    assert_refused(
        served, served.stub.tags.ListTags, tags_pb2.ListTagsRequest(user="nobody"), NOT_FOUND, "user_not_found"
    )


def test_list_tags_contains_matches_substrings_with_literal_wildcards(served: Served) -> None:
    """``contains``: a case-insensitive substring anywhere in the name, spaces
    as "_", "_" and "%" literal (not LIKE wildcards), combined with prefix
    and user, brute-force checked on both databases."""
    tags = ["tabby_cat", "cat", "Bobcat", "tabby", "100%_real", "axb", "a_b", "dog"]
    name = add(served, "alice", make_image(seed=300), 0.5).image
    put_tags(served, name, "m1", 0.5, [(t, 0.9) for t in tags])
    other = add(served, "bob", make_image(seed=301), 0.5).image
    put_tags(served, other, "m1", 0.5, [("cat", 0.9), ("wildcat", 0.9)])
    every = sorted({t.lower() for t in tags} | {"wildcat"})

    def listed(**fields) -> list[str]:
        return list(served.stub.tags.ListTags(tags_pb2.ListTagsRequest(**fields), timeout=30).tags)

    for needle in ["CAT", "abby c", "a_b", "%", "b", "_", "zzz"]:
        want = needle.strip().lower().replace(" ", "_")
        assert listed(contains=needle) == [t for t in every if want in t], needle
    assert listed(contains="cat", prefix="t") == ["tabby_cat"]
    assert listed(contains="cat", user="bob") == ["cat", "wildcat"]
    counts = served.stub.tags.ListTags(tags_pb2.ListTagsRequest(contains="cat"), timeout=30)
    assert dict(zip(counts.tags, counts.counts, strict=True))["cat"] == 2
    assert_refused(
        served, served.stub.tags.ListTags, tags_pb2.ListTagsRequest(contains="x" * 500), INVALID, "invalid_contains"
    )


def test_update_tags_is_unavailable_until_the_tagger_exists(served: Served) -> None:
    status, code, message = rpc_error(served.stub.tags.UpdateTags, tags_pb2.UpdateTagsRequest())
    assert (status, code) == (grpc.StatusCode.UNAVAILABLE, "tagger_unavailable")
    assert "tagger" in message
