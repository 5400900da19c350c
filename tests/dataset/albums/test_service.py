"""AlbumService over real gRPC, on SQLite and PostgreSQL: creating albums
by stored or uploaded names, the images' tags, dimensions and ratings,
paging and neighbours against a reference computed in Python, filters
inside albums, adding/removing/moving against list operations, an image
deleted from the store or merged into its duplicate, access by owner, and
refusals that store nothing."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from sqlmodel import Session

from tagrate_common.protos import albums_pb2, images_pb2
from tagrate_common.timestamps import to_datetime, to_timestamp
from tagrate_dataset.albums import membership
from tests.dataset.calls import INVALID, NOT_FOUND, add, assert_refused, put_tags
from tests.dataset.conftest import Served, image_file, rpc_error
from tests.imagefactory import make_image

DENIED = grpc.StatusCode.PERMISSION_DENIED


def _store(served: Served, count: int, user: str = "alice", seed: int = 0) -> list[str]:
    """``count`` stored images rated by ``user`` (sizes differ per image)."""
    return [
        add(served, user, make_image("PNG", (40 + n, 30 + 2 * n), seed=seed * 1000 + n), 0.5, f"up{seed}-{n}.png").image
        for n in range(count)
    ]


def _create(served: Served, owner: str, images: list[str], **kw) -> albums_pb2.Album:
    request = albums_pb2.CreateAlbumRequest(owner=owner, images=images, **kw)
    return served.stub.albums.CreateAlbum(request, timeout=30).album


def _images(served: Served, album_id: int, caller: str = "", **kw) -> list[str]:
    reply = served.stub.albums.GetAlbum(albums_pb2.GetAlbumRequest(id=album_id, caller=caller, **kw), timeout=30)
    return [item.image for item in reply.images]


def test_an_album_keeps_its_images_in_order_with_their_tags_sizes_and_ratings(served: Served) -> None:
    names = _store(served, 4)
    put_tags(served, names[2], "tagger-1", 0.5, [("zebra", 0.9), ("cat", 0.8), ("dog", 0.2)])
    # Stored names and the names they were uploaded under (as the chat bot
    # sends them), a repeat, spaces around a name: each image once, in order.
    album = _create(served, "alice", [names[2], "up0-0.png", f" {names[3]} ", names[2]], name="Trip")
    assert (album.user, album.name, album.image_count, album.cover) == ("alice", "Trip", 3, names[2])
    reply = served.stub.albums.GetAlbum(albums_pb2.GetAlbumRequest(id=album.id, with_tags=True), timeout=30)
    assert [i.image for i in reply.images] == [names[2], names[0], names[3]]
    first = reply.images[0]
    assert (first.width, first.height, first.position, first.rating) == (42, 34, 1, 0.5)
    assert list(first.tags) == ["cat", "zebra"]  # at or above the model's threshold, by name
    assert list(reply.images[1].tags) == [] and reply.total == 3


def test_an_uploaded_name_means_the_newest_image_stored_under_it(served: Served) -> None:
    old = add(served, "alice", make_image("PNG", seed=1), 0.5, "same.png").image
    new = add(served, "alice", make_image("PNG", seed=2), 0.5, "same.png").image
    assert old != new
    album = _create(served, "alice", ["same.png"])
    assert _images(served, album.id) == [new]


def test_refusals_name_the_problem_and_store_nothing(served: Served) -> None:
    names = _store(served, 2)
    create = served.stub.albums.CreateAlbum
    unknown = "f" * 64 + ".jpg"
    message = assert_refused(
        served, create, albums_pb2.CreateAlbumRequest(owner="alice", images=[names[0], unknown, "nope.png"]),
        NOT_FOUND, "image_not_found",
    )  # fmt: skip
    assert unknown in message and "nope.png" not in message  # the first unknown one
    assert_refused(
        served, create, albums_pb2.CreateAlbumRequest(owner="nobody", images=names), NOT_FOUND, "user_not_found"
    )
    assert_refused(served, create, albums_pb2.CreateAlbumRequest(owner="al ice"), INVALID, "invalid_user")
    assert_refused(
        served, create, albums_pb2.CreateAlbumRequest(owner="alice", name="x" * 201), INVALID, "invalid_name"
    )
    assert_refused(
        served, create, albums_pb2.CreateAlbumRequest(owner="alice", images=[" ", ""]), INVALID, "missing_parameter"
    )
    assert_refused(
        served, create, albums_pb2.CreateAlbumRequest(owner="alice", images=["a\x00b"]), INVALID, "invalid_images"
    )
    album = _create(served, "alice", names)
    for call, request, code in [
        (served.stub.albums.GetAlbum, albums_pb2.GetAlbumRequest(id=album.id + 1), "album_not_found"),
        (served.stub.albums.DeleteAlbum, albums_pb2.DeleteAlbumRequest(id=album.id + 1), "album_not_found"),
        (
            served.stub.albums.RemoveAlbumImage,
            albums_pb2.RemoveAlbumImageRequest(id=album.id, image="0" * 64 + ".png"),
            "image_not_in_album",
        ),
    ]:
        assert_refused(served, call, request, NOT_FOUND, code)
    assert_refused(served, served.stub.albums.GetAlbum, albums_pb2.GetAlbumRequest(id=0), INVALID, "invalid_id")


def test_an_album_is_its_owners_and_an_admins(served: Served) -> None:
    names = _store(served, 2)
    _store(served, 1, "bob", seed=1)
    album = _create(served, "alice", names)
    assert _images(served, album.id, "alice") == names
    assert _images(served, album.id, "") == names  # admin
    for call, request in [
        (served.stub.albums.GetAlbum, albums_pb2.GetAlbumRequest(id=album.id, caller="bob")),
        (served.stub.albums.UpdateAlbum, albums_pb2.UpdateAlbumRequest(id=album.id, caller="bob", name="mine")),
        (served.stub.albums.DeleteAlbum, albums_pb2.DeleteAlbumRequest(id=album.id, caller="bob")),
        (served.stub.albums.AddAlbumImages, albums_pb2.AddAlbumImagesRequest(id=album.id, caller="bob", images=names)),
        (
            served.stub.albums.RemoveAlbumImage,
            albums_pb2.RemoveAlbumImageRequest(id=album.id, caller="bob", image=names[0]),
        ),
        (
            served.stub.albums.MoveAlbumImage,
            albums_pb2.MoveAlbumImageRequest(id=album.id, caller="bob", image=names[0], position=2),
        ),
    ]:
        assert_refused(served, call, request, DENIED, "forbidden")
    code = rpc_error(
        served.stub.albums.GetAlbumNeighbours, albums_pb2.GetAlbumNeighboursRequest(id=album.id, owner="bob")
    )
    assert code[:2] == (NOT_FOUND, "album_not_found")  # not in bob's list


def test_adding_removing_and_moving_follow_list_operations(served: Served) -> None:
    names = _store(served, 12)
    album = _create(served, "alice", names[:5])
    expected = names[:5]
    rng = random.Random(5)
    albums = served.stub.albums
    for step in range(40):
        action = rng.choice(["add", "remove", "move"])
        if action == "add":
            chosen = rng.sample(names, rng.randint(1, 3))
            position = rng.randint(0, len(expected) + 2)
            reply = albums.AddAlbumImages(
                albums_pb2.AddAlbumImagesRequest(id=album.id, images=chosen, position=position), timeout=30
            )
            new = [n for n in dict.fromkeys(chosen) if n not in expected]
            assert list(reply.added) == new
            at = len(expected) if position == 0 or position > len(expected) else position - 1
            expected[at:at] = new
        elif action == "remove" and expected:
            gone = rng.choice(expected)
            albums.RemoveAlbumImage(albums_pb2.RemoveAlbumImageRequest(id=album.id, image=gone), timeout=30)
            expected.remove(gone)
        elif expected:
            moving = rng.choice(expected)
            position = rng.randint(1, len(expected) + 3)
            albums.MoveAlbumImage(
                albums_pb2.MoveAlbumImageRequest(id=album.id, image=moving, position=position), timeout=30
            )
            expected.remove(moving)
            expected.insert(min(position, len(expected) + 1) - 1, moving)
        got = served.stub.albums.GetAlbum(albums_pb2.GetAlbumRequest(id=album.id), timeout=30)
        assert [i.image for i in got.images] == expected, step
        assert [i.position for i in got.images] == list(range(1, len(expected) + 1))
        assert got.album.image_count == len(expected)
        assert (got.album.cover or None) == (expected[0] if expected else None)


def test_an_image_deleted_from_the_store_leaves_every_album(served: Served) -> None:
    names = _store(served, 5)
    first = _create(served, "alice", names)
    second = _create(served, "alice", [names[2], names[4]])
    served.stub.images.DeleteImage(images_pb2.DeleteImageRequest(image=names[2]), timeout=30)
    got = served.stub.albums.GetAlbum(albums_pb2.GetAlbumRequest(id=first.id), timeout=30)
    assert [i.image for i in got.images] == [names[0], names[1], names[3], names[4]]
    assert [i.position for i in got.images] == [1, 2, 3, 4]
    assert _images(served, second.id) == [names[4]]
    # the positions stayed dense: moving to the end lands at the end
    served.stub.albums.MoveAlbumImage(
        albums_pb2.MoveAlbumImageRequest(id=first.id, image=names[0], position=4), timeout=30
    )
    assert _images(served, first.id) == [names[1], names[3], names[4], names[0]]


def test_merging_a_duplicate_keeps_its_album_places_on_the_kept_image(served: Served) -> None:
    names = _store(served, 4)
    both = _create(served, "alice", [names[0], names[1], names[3]])  # holds the kept and the removed image
    only_removed = _create(served, "alice", [names[2], names[1]])
    with Session(served.engine) as session:
        ids = {
            name: session.connection().exec_driver_sql(f"SELECT id FROM images WHERE name = '{name}'").scalar_one()
            for name in names
        }
        changed = membership.move_image(session, ids[names[1]], ids[names[3]])
        session.commit()
    assert changed == 2
    assert _images(served, both.id) == [names[0], names[3]]
    assert _images(served, only_removed.id) == [names[2], names[3]]
    # the removed image can then be deleted without touching the albums
    served.stub.images.DeleteImage(images_pb2.DeleteImageRequest(image=names[1]), timeout=30)
    assert _images(served, only_removed.id) == [names[2], names[3]]


def test_filters_keep_matching_images_inside_each_album(served: Served) -> None:
    names = _store(served, 4)
    put_tags(served, names[0], "tagger-1", 0.5, [("cat", 0.9), ("sofa", 0.7)])
    put_tags(served, names[1], "tagger-1", 0.5, [("cat", 0.9)])
    put_tags(served, names[2], "tagger-1", 0.5, [("cat", 0.4), ("dog", 0.9)])
    album = _create(served, "alice", names)

    def filtered(include: list[str], exclude: tuple[str, ...] = ()) -> tuple[list[str], int]:
        reply = served.stub.albums.GetAlbum(
            albums_pb2.GetAlbumRequest(id=album.id, include_tags=include, exclude_tags=exclude), timeout=30
        )
        return [i.image for i in reply.images], reply.total

    assert filtered(["cat"]) == ([names[0], names[1]], 2)
    assert filtered(["cat"], ["sofa"]) == ([names[1]], 1)
    assert filtered([], ["dog", "unknown"]) == ([names[0], names[1], names[3]], 3)
    assert filtered(["unknown"]) == ([], 0)
    listed = served.stub.albums.ListAlbums(
        albums_pb2.ListAlbumsRequest(owner="alice", with_images=True, include_tags=["cat"]), timeout=30
    )
    assert [[i.image for i in a.images] for a in listed.albums] == [[names[0], names[1]]]
    listed = served.stub.albums.ListAlbums(
        albums_pb2.ListAlbumsRequest(owner="alice", with_images=True, include_tags=["unknown"]), timeout=30
    )
    assert [(a.album.id, list(a.images)) for a in listed.albums] == [(album.id, [])]  # the album stays listed


def test_paging_and_neighbours_match_a_reference(served: Served) -> None:
    names = _store(served, 3)
    _store(served, 1, "bob", seed=1)
    base = datetime(2024, 5, 1, tzinfo=UTC)
    rng = random.Random(3)
    made = []
    for n in range(23):
        # Ties in created_at are broken by id, newest (highest) first.
        when = base + timedelta(minutes=rng.randint(0, 6))
        album = _create(served, "alice", [names[n % 3]], created_at=to_timestamp(when))
        made.append((when, album.id))
    _create(served, "bob", [], created_at=to_timestamp(base + timedelta(minutes=3)))
    reference = [album_id for _, album_id in sorted(made, reverse=True)]
    for limit in (1, 5, 15, 23, 100):
        seen = []
        for page in range(1, len(reference) // limit + 3):
            reply = served.stub.albums.ListAlbums(
                albums_pb2.ListAlbumsRequest(owner="alice", page=page, limit=limit, with_images=True), timeout=30
            )
            assert reply.total == 23 and reply.limit == limit
            seen += [a.album.id for a in reply.albums]
        assert seen == reference, limit
    everything = served.stub.albums.ListAlbums(albums_pb2.ListAlbumsRequest(owner="alice"), timeout=30)
    assert [a.album.id for a in everything.albums] == reference
    every_user = served.stub.albums.ListAlbums(albums_pb2.ListAlbumsRequest(), timeout=30)
    assert every_user.total == 24
    created = {album_id: when for when, album_id in made}
    for index, album_id in enumerate(reference):
        found = served.stub.albums.GetAlbumNeighbours(
            albums_pb2.GetAlbumNeighboursRequest(id=album_id, owner="alice"), timeout=30
        )
        assert (found.position, found.total) == (index + 1, 23)
        prev = reference[index - 1] if index > 0 else None
        after = reference[index + 1] if index + 1 < len(reference) else None
        assert (found.prev.id if found.HasField("prev") else None) == prev
        assert (found.next.id if found.HasField("next") else None) == after
        if prev is not None:
            assert to_datetime(found.prev.created_at) == created[prev]


def test_an_import_source_makes_one_album(served: Served) -> None:
    names = _store(served, 2)
    when = to_timestamp(datetime(2023, 1, 2, 3, 4, 5, tzinfo=UTC))
    request = albums_pb2.CreateAlbumRequest(owner="alice", images=names, source="original:7", created_at=when)
    first = served.stub.albums.CreateAlbum(request, timeout=30)
    again = served.stub.albums.CreateAlbum(request, timeout=30)
    assert first.created and not again.created and first.album.id == again.album.id
    assert to_datetime(first.album.created_at) == datetime(2023, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert served.stub.albums.ListAlbums(albums_pb2.ListAlbumsRequest(owner="alice"), timeout=30).total == 1


def test_rename_and_delete(served: Served) -> None:
    names = _store(served, 2)
    album = _create(served, "alice", names, name="old")
    renamed = served.stub.albums.UpdateAlbum(albums_pb2.UpdateAlbumRequest(id=album.id, name=" new "), timeout=30)
    assert renamed.album.name == "new"
    deleted = served.stub.albums.DeleteAlbum(albums_pb2.DeleteAlbumRequest(id=album.id), timeout=30)
    assert (deleted.id, deleted.images) == (album.id, 2)
    assert served.stub.albums.ListAlbums(albums_pb2.ListAlbumsRequest(owner="alice"), timeout=30).total == 0
    # the images stay stored
    served.stub.images.GetImage(images_pb2.GetImageRequest(image=names[0]), timeout=30)


@pytest.mark.parametrize("most", [3])
def test_an_album_holds_at_most_the_setting(tmp_path, database_url: str, most: int) -> None:
    from tagrate_common.dataset_stubs import DatasetStubs
    from tagrate_dataset.server import create_server
    from tests.dataset.conftest import make_settings

    server = create_server(make_settings(tmp_path, database_url, album_max_images=most, background_work=False))
    port = server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        stub = DatasetStubs(channel)
        from tagrate_common.protos import ratings_pb2

        names = [
            stub.ratings.AddRating(
                ratings_pb2.AddRatingRequest(user="alice", rating=0.5, image=image_file(make_image(seed=n))), timeout=30
            ).image
            for n in range(5)
        ]
        status, code, _ = rpc_error(stub.albums.CreateAlbum, albums_pb2.CreateAlbumRequest(owner="alice", images=names))
        assert (status, code) == (INVALID, "invalid_images")
        album = stub.albums.CreateAlbum(albums_pb2.CreateAlbumRequest(owner="alice", images=names[:3]), timeout=30)
        status, code, _ = rpc_error(
            stub.albums.AddAlbumImages, albums_pb2.AddAlbumImagesRequest(id=album.album.id, images=names[3:4])
        )
        assert (status, code) == (INVALID, "album_full")
    finally:
        channel.close()
        server.stop(0)


def test_a_page_of_albums_costs_the_same_statements_however_many_images(served: Served) -> None:
    """The images' tags and dimensions come in one statement per page, not
    one per album or image (the original read each image's tags alone)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from tagrate_common.logging import REQUEST_ID_HEADER, request_id_var

    names = _store(served, 6)
    for n, name in enumerate(names):
        put_tags(served, name, "tagger-1", 0.5, [("cat", 0.9), (f"tag{n}", 0.8)])
    for n in range(12):
        _create(served, "alice", names[: 1 + n % 6])
    statements: list[str] = []
    # Only this request's statements: the service's background threads (work
    # queue, scoring, hashes) read the same database while the page is served.
    request_id = "albums-page-cost"

    def count(conn, cursor, statement, parameters, context, executemany) -> None:
        if request_id_var.get() == request_id and statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    def page_cost(limit: int, **kw) -> int:
        statements.clear()
        event.listen(Engine, "before_cursor_execute", count)
        try:
            reply = served.stub.albums.ListAlbums(
                albums_pb2.ListAlbumsRequest(owner="alice", page=1, limit=limit, with_images=True, **kw),
                timeout=30,
                metadata=((REQUEST_ID_HEADER, request_id),),
            )
        finally:
            event.remove(Engine, "before_cursor_execute", count)
        assert len(reply.albums) == limit and all(len(a.images[0].tags) == 2 for a in reply.albums)
        return len(statements)

    # The albums, then their images with every source's tags (two statements).
    assert page_cost(1) == page_cost(12) == 2
    assert page_cost(12, include_tags=["cat"], exclude_tags=["tag3"]) == 2
