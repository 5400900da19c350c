"""LibraryService over real gRPC, on SQLite and PostgreSQL: GetUserData
(filters, sorts, pages, refusals) and GetImageNeighbours against the full
listing."""

from __future__ import annotations

import grpc

from tagrate_common.protos import images_pb2, library_pb2
from tests.dataset.calls import INVALID, NOT_FOUND, add, assert_refused, name_of, put_tags
from tests.dataset.conftest import Served, image_file, rpc_error
from tests.imagefactory import make_image


def _userdata(served: Served, **kw) -> library_pb2.GetUserDataResponse:
    return served.stub.library.GetUserData(library_pb2.GetUserDataRequest(**kw), timeout=30)


def test_get_user_data_filters_sorts_and_pages(served: Served) -> None:
    names = [add(served, "alice", make_image(seed=20 + i), r).image for i, r in enumerate((0.2, 0.9, 0.5, 0.7))]
    unrated = add(served, "bob", make_image(seed=30), 0.1).image
    put_tags(served, names[0], "m", 0.5, [("cat", 0.9), ("outdoor", 0.8)])
    put_tags(served, names[1], "m", 0.5, [("cat", 0.6)])
    put_tags(served, names[2], "m", 0.5, [("cat", 0.4), ("outdoor", 0.9)])
    everything = _userdata(served, user="alice")
    assert everything.user == "alice" and everything.total == 4
    assert [r.image for r in everything.images] == names[::-1]  # most recently rated first
    assert all(r.HasField("rating") and r.rated_at.seconds > 0 for r in everything.images)
    by_rating = _userdata(served, user="alice", sort=library_pb2.SORT_ORDER_RATING_DESC)
    assert [r.rating for r in by_rating.images] == [0.9, 0.7, 0.5, 0.2]
    cats = _userdata(served, user="alice", include_tags=["CAT "], sort=library_pb2.SORT_ORDER_RATING_ASC)
    assert [r.image for r in cats.images] == [names[0], names[1]]
    both = _userdata(served, user="alice", include_tags=["cat", "outdoor"])
    assert [r.image for r in both.images] == [names[0]]
    not_outdoor = _userdata(served, user="alice", exclude_tags=["outdoor"], sort=library_pb2.SORT_ORDER_RATING_ASC)
    assert [r.image for r in not_outdoor.images] == [names[3], names[1]]
    page = _userdata(served, user="alice", page=2, limit=3)
    assert (page.total, [r.image for r in page.images]) == (4, [names[0]])
    past = _userdata(served, user="alice", page=9, limit=3)
    assert (past.total, list(past.images)) == (4, [])
    unrated_rows = _userdata(served, user="alice", rated=library_pb2.RATED_FILTER_NO).images
    assert [r.image for r in unrated_rows] == [unrated]
    assert not unrated_rows[0].HasField("rating") and not unrated_rows[0].HasField("rated_at")
    all_rows = _userdata(
        served, user="alice", rated=library_pb2.RATED_FILTER_ALL, sort=library_pb2.SORT_ORDER_RATING_DESC
    )
    assert [r.image for r in all_rows.images][-1] == unrated and all_rows.total == 5
    hostile = _userdata(served, user="alice", include_tags=["' OR 1=1 --", "cat"], page=1, limit=10)
    assert (hostile.total, list(hostile.images)) == (0, [])
    assert _userdata(served, user="alice", exclude_tags=["'; DROP TABLE images; --"]).total == 4
    assert served.state()["images"] == 5


def test_get_user_data_refusals(served: Served) -> None:
    add(served, "alice", make_image(seed=40), 0.5)
    call = served.stub.library.GetUserData

    def refused(code: str, status: grpc.StatusCode = INVALID, **kw) -> str:
        return assert_refused(served, call, library_pb2.GetUserDataRequest(**kw), status, code)

    refused("user_not_found", grpc.StatusCode.NOT_FOUND, user="nobody")
    refused("invalid_user", user="all")
    refused("invalid_user", user="bad name")
    refused("missing_parameter", user="")
    assert "'limit'" in refused("invalid_limit", user="alice", page=1, limit=1001)
    refused("invalid_filters", user="alice", include_tags=[f"t{i}" for i in range(51)])
    refused("invalid_filters", user="alice", include_tags=["x" * 201])
    refused("invalid_filters", user="alice", exclude_tags=["x" * 100_000])
    refused("invalid_sort", user="alice", sort=99)
    refused("invalid_rated", user="alice", rated=42)
    refused("invalid_filters", user="alice", include_tags=["cat\x00"])
    # page 0 = everything: a valid limit does not matter, an invalid one is still refused
    assert _userdata(served, user="alice", page=0, limit=5).total == 1
    refused("invalid_limit", user="alice", page=0, limit=5000)
    # the page size used is in the answer (the default when none was given)
    assert _userdata(served, user="alice", page=1).limit == 60


def test_neighbours_match_the_full_listing(served: Served) -> None:
    names = []
    for seed in range(14):
        rating = [0.2, 0.5, 0.5, 0.8, 1.0, 0.0, 0.5][seed % 7]
        if seed % 4 == 3:
            names.append(
                served.stub.images.AddImages(
                    images_pb2.AddImagesRequest(images=[image_file(make_image(seed=300 + seed))]), timeout=30
                )
                .images[0]
                .image
            )
        else:
            names.append(add(served, "alice", make_image(seed=300 + seed), rating).image)
        put_tags(served, names[-1], "m1", 0.5, [("odd" if seed % 2 else "even", 0.9), ("all", 0.9)])
    cases = [
        (library_pb2.SORT_ORDER_UNSPECIFIED, library_pb2.RATED_FILTER_UNSPECIFIED, [], []),
        (library_pb2.SORT_ORDER_RATING_DESC, library_pb2.RATED_FILTER_ALL, [], []),
        (library_pb2.SORT_ORDER_RATING_ASC, library_pb2.RATED_FILTER_ALL, ["all"], []),
        (library_pb2.SORT_ORDER_RATING_DESC, library_pb2.RATED_FILTER_YES, ["all"], ["odd"]),
        (library_pb2.SORT_ORDER_DATE_ASC, library_pb2.RATED_FILTER_ALL, [], []),
        (library_pb2.SORT_ORDER_NAME_DESC, library_pb2.RATED_FILTER_NO, [], []),
        (library_pb2.SORT_ORDER_RATING_DESC, library_pb2.RATED_FILTER_NO, ["odd"], []),
    ]
    for sort, rated, include, exclude in cases:
        listing = served.stub.library.GetUserData(
            library_pb2.GetUserDataRequest(
                user="alice", sort=sort, rated=rated, include_tags=include, exclude_tags=exclude
            ),
            timeout=30,
        ).images
        paged = []
        for page in (1, 2, 3, 4):
            paged += served.stub.library.GetUserData(
                library_pb2.GetUserDataRequest(
                    user="alice", sort=sort, rated=rated, include_tags=include, exclude_tags=exclude, page=page, limit=4
                ),
                timeout=30,
            ).images
        assert [r.image for r in paged] == [r.image for r in listing]
        assert listing, (sort, rated)
        for index, row in enumerate(listing):
            got = served.stub.library.GetImageNeighbours(
                library_pb2.GetImageNeighboursRequest(
                    image=row.image, user="alice", sort=sort, rated=rated, include_tags=include, exclude_tags=exclude
                ),
                timeout=30,
            )
            case = (sort, rated, include, index)
            assert (got.position, got.max_image) == (index + 1, len(listing)), case
            prev = listing[index - 1] if index else None
            nxt = listing[index + 1] if index + 1 < len(listing) else None
            assert got.HasField("prev") == (prev is not None), case
            assert got.HasField("next") == (nxt is not None), case
            if prev is not None:
                assert got.prev.image == prev.image and got.prev.HasField("rating") == prev.HasField("rating"), case
                if prev.HasField("rating"):
                    assert got.prev.rating == prev.rating
            if nxt is not None:
                assert got.next.image == nxt.image, case
        outside = {n for n in names} - {r.image for r in listing}
        if outside:
            request = library_pb2.GetImageNeighboursRequest(
                image=sorted(outside)[0],
                user="alice",
                sort=sort,
                rated=rated,
                include_tags=include,
                exclude_tags=exclude,
            )
            assert rpc_error(served.stub.library.GetImageNeighbours, request)[:2] == (NOT_FOUND, "image_not_in_list")
    unknown = library_pb2.GetImageNeighboursRequest(image=name_of(make_image(seed=999)), user="alice")
    assert rpc_error(served.stub.library.GetImageNeighbours, unknown)[:2] == (NOT_FOUND, "image_not_found")
    nobody = library_pb2.GetImageNeighboursRequest(image=names[0], user="nobody")
    assert rpc_error(served.stub.library.GetImageNeighbours, nobody)[:2] == (NOT_FOUND, "user_not_found")


def test_a_newcomer_sees_every_stored_image_unrated(served: Served) -> None:
    """A user who has not rated yet (not in the database): rated=no and
    rated=all list every stored image unrated, the same as for a user with no
    ratings left, with filters, paging (the one-statement first page and the
    long way) and neighbours; rated=yes stays a 404. Nothing is created."""
    names = [add(served, "alice", make_image(seed=60 + i), 0.1 * i).image for i in range(5)]
    put_tags(served, names[1], "m", 0.5, [("cat", 0.9)])
    put_tags(served, names[3], "m", 0.5, [("cat", 0.8), ("dog", 0.9)])
    users_before = served.state()
    for rated in (library_pb2.RATED_FILTER_NO, library_pb2.RATED_FILTER_ALL):
        for sort in (
            library_pb2.SORT_ORDER_NAME_ASC,
            library_pb2.SORT_ORDER_DATE_DESC,
            library_pb2.SORT_ORDER_PREDICTED_DESC,
        ):
            whole = _userdata(served, user="carol", rated=rated, sort=sort)
            assert whole.total == 5 and sorted(r.image for r in whole.images) == sorted(names)
            assert not any(r.HasField("rating") for r in whole.images)
            paged = [
                r.image
                for p in (1, 2)
                for r in _userdata(served, user="carol", rated=rated, sort=sort, page=p, limit=3).images
            ]
            assert paged == [r.image for r in whole.images]
        cats = _userdata(
            served, user="carol", rated=rated, include_tags=["cat"], exclude_tags=["dog"], page=1, limit=10
        )
        assert [r.image for r in cats.images] == [names[1]] and cats.total == 1
        by_name = sorted(names)
        where = served.stub.library.GetImageNeighbours(
            library_pb2.GetImageNeighboursRequest(
                image=by_name[2], user="carol", rated=rated, sort=library_pb2.SORT_ORDER_NAME_ASC
            )
        )
        assert (where.position, where.max_image, where.prev.image, where.next.image) == (3, 5, by_name[1], by_name[3])
    assert_refused(
        served,
        served.stub.library.GetUserData,
        library_pb2.GetUserDataRequest(user="carol", rated=library_pb2.RATED_FILTER_YES),
        NOT_FOUND,
        "user_not_found",
    )
    assert served.state() == users_before
