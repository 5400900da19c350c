"""Albums end to end: real HTTP to the gateway, real gRPC to the dataset
service, on SQLite and PostgreSQL, with real image files. The original's
chat bot's own requests (its /addimage with its filename and sankaku_id,
then /createmontagepost with ``filenames`` comma-separated and a numeric
user id, as multipart form fields) and each read path's shape as the
original's code builds it (api.py and db_functions.get_montagepost(s)), the
album API beyond it, access by owner with tokens, and the global-model
paths (/trainall, /verifyfulldataset, /createfulldataset) on a real
trainer."""

from __future__ import annotations

import math
from collections.abc import Iterator

import httpx
import pytest

from tagrate_common.vision.loaders import load_default_model
from tagrate_gateway.schemas.albums import AlbumPage, MontagePostReply, MontagePosts
from tests.imagefactory import make_image
from tests.trainer.scenes import rated_scenes
from tests.trainer.services import start_services

from .answers import assert_error
from .stack import Stack, add_rating, start_stack, stored_name, tag_image
from .test_training_e2e import TrainingStack, rate_through_api, wait_until

DISCORD_ID = "287262411358437376"  # a chat platform user id, as the bot sends it
ADMIN_TOKEN = "admin-bootstrap-token-for-the-album-tests-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

# The keys the original's code builds (db_functions.get_montagepost and the
# api.py routes); tagrate adds a few, never drops one.
POST_KEYS = {"id", "images", "created_at"}
IMAGE_KEYS = {"image_id", "filename", "meta", "sankaku_id", "tags"}
META_KEYS = {"width", "height", "aspect_ratio"}
NEIGHBOUR_KEYS = {"position", "max_montagepost", "next_montagepost", "prev_montagepost"}


@pytest.fixture
def stack(database_url, tmp_path) -> Iterator[Stack]:
    stack = start_stack(database_url, tmp_path / "data")
    yield stack
    stack.stop()


def bot_add_image(http: httpx.Client, data: bytes, filename: str, sankaku_id: int) -> dict:
    """The bot's aibackend.addImage: the file under its own name, and its post id."""
    response = http.post("/addimage", data={"sankaku_id": str(sankaku_id)}, files={"image": (filename, data)})
    assert response.status_code == 200, response.text
    return response.json()


# The boundary Node's form-data package writes (26 dashes and 24 digits).
BOUNDARY = "--------------------------" + "123456789012345678901234"


def bot_create_montage_post(http: httpx.Client, filenames: list[str], userid: str) -> httpx.Response:
    """The bot's aibackend.createMontagepost: ``filenames`` joined with
    commas then ``user``, as multipart form fields without any file."""
    parts = [("filenames", ",".join(filenames)), ("user", userid)]
    body = "".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n' for name, value in parts
    )
    body += f"--{BOUNDARY}--\r\n"
    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    return http.post("/createmontagepost", content=body.encode(), headers=headers)


def assert_original_post_shape(post: dict) -> None:
    assert set(post) >= POST_KEYS, post
    assert isinstance(post["id"], int) and isinstance(post["created_at"], str)
    for image in post["images"]:
        assert set(image) >= IMAGE_KEYS, image
        assert set(image["meta"]) == META_KEYS
        assert isinstance(image["image_id"], int) and isinstance(image["filename"], str)
        assert image["sankaku_id"] is None or isinstance(image["sankaku_id"], int)
        assert all(isinstance(tag, str) for tag in image["tags"])


def test_the_chat_bots_montage_post(stack) -> None:
    """The bot's whole sequence, then every read path the original served."""
    pictures = [make_image("JPEG", (90 + 10 * n, 60), seed=40 + n) for n in range(3)]
    bot_names = ["9f1b2c3d4e5f60718293a4b5c6d7e8f9.jpg", "0a1b2c3d4e5f60718293a4b5c6d7e8f9.png", "another one.jpg"]
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        # The user exists (their ratings came in from the bot's rating collector).
        assert add_rating(http, make_image("PNG", seed=99), DISCORD_ID, "0.5").status_code == 200
        stored = [
            bot_add_image(http, data, name, 35000000 + n)["image"]
            for n, (data, name) in enumerate(zip(pictures, bot_names, strict=True))
        ]
        tag_image(stack, stored[0], {"cat": 0.9, "bed": 0.7, "dog": 0.1})
        response = bot_create_montage_post(http, bot_names, DISCORD_ID)
        assert response.status_code == 200, response.text
        created = response.json()
        assert set(created) >= {"montagepost_id"} and isinstance(created["montagepost_id"], int)
        post_id = created["montagepost_id"]

        listed = http.get("/getmontageposts", params={"user": DISCORD_ID})
        assert listed.status_code == 200, listed.text
        body = listed.json()
        MontagePosts.model_validate(body)  # the body /openapi.json describes
        assert "max_page" not in body  # only with a page, as the original
        [post] = body["montageposts"]
        assert_original_post_shape(post)
        assert post["id"] == post_id and post["created_at"].endswith("Z")
        assert [image["filename"] for image in post["images"]] == stored  # in the bot's order
        first = post["images"][0]
        assert first["meta"] == {"width": 90, "height": 60, "aspect_ratio": 1.5}
        assert first["sankaku_id"] == 35000000 and first["tags"] == ["bed", "cat"]

        one = http.get("/getmontagepost", params={"id": post_id})
        assert one.status_code == 200, one.text
        assert set(one.json()) == {"montagepost"} and one.json()["montagepost"] == post
        MontagePostReply.model_validate(one.json())

        paged = http.get("/getmontageposts", params={"user": DISCORD_ID, "page": "1"}).json()
        assert paged["max_page"] == 1 and paged["montageposts"] == [post]

        neighbours = http.get("/getmontagepostneighbours", params={"id": post_id, "user": DISCORD_ID})
        assert neighbours.status_code == 200, neighbours.text
        assert neighbours.json() == {
            "position": 1,
            "max_montagepost": 1,
            "next_montagepost": {"id": None, "created_at": None},
            "prev_montagepost": {"id": None, "created_at": None},
        }
        filtered = http.get("/getmontageposts", params={"user": DISCORD_ID, "filters": "cat"}).json()
        assert [[i["filename"] for i in p["images"]] for p in filtered["montageposts"]] == [[stored[0]]]


def test_montage_post_refusals(stack) -> None:
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        data = make_image("JPEG", seed=1)
        name = stored_name(data, "jpg")
        assert add_rating(http, data, "alice", "0.5").status_code == 200
        missing = "f" * 64 + ".jpg"
        body = assert_error(bot_create_montage_post(http, [name, missing], "alice"), 404, "image_not_found")
        assert missing in body["error"]
        assert_error(bot_create_montage_post(http, [name], "4242"), 404, "user_not_found")
        assert_error(http.post("/createmontagepost", data={"user": "alice"}), 400, "missing_parameter")
        assert_error(http.post("/createmontagepost", data={"user": "alice", "filenames": " , "}), 400)
        assert_error(http.post("/createmontagepost", data={"filenames": name}), 400, "missing_parameter")
        assert_error(http.post("/createmontagepost", data={"user": "a/b", "filenames": name}), 400, "invalid_user")
        assert http.get("/getmontageposts", params={"user": "alice"}).json()["montageposts"] == []
        assert_error(http.get("/getmontagepost"), 400, "missing_parameter")
        assert_error(http.get("/getmontagepost", params={"id": "x"}), 400, "invalid_id")
        assert_error(http.get("/getmontagepost", params={"id": "0"}), 400, "invalid_id")
        assert_error(http.get("/getmontagepost", params={"id": "77"}), 404, "album_not_found")
        assert_error(http.get("/getmontageposts", params={"user": "nobody"}), 404, "user_not_found")
        assert_error(http.get("/getmontageposts", params={"user": "alice", "page": "0"}), 400, "invalid_page")
        assert_error(http.get("/getmontageposts", params={"user": "alice", "page": "1", "limit": "101"}), 400)
        created = http.post("/createmontagepost", json={"user": "alice", "filenames": name})  # JSON works too
        assert created.status_code == 200, created.text
        post_id = created.json()["montagepost_id"]
        assert_error(
            http.get("/getmontagepostneighbours", params={"id": post_id, "user": "bob"}), 404, "user_not_found"
        )
        assert add_rating(http, make_image("PNG", seed=5), "bob", "0.5").status_code == 200
        assert_error(
            http.get("/getmontagepostneighbours", params={"id": post_id, "user": "bob"}), 404, "album_not_found"
        )
        repeated = http.get("/getmontagepost", params=[("id", post_id), ("id", post_id)])
        assert_error(repeated, 400, "repeated_parameter")


def test_paging_and_neighbours_through_the_api(stack) -> None:
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        data = make_image("JPEG", seed=2)
        name = stored_name(data, "jpg")
        assert add_rating(http, data, DISCORD_ID, "0.5").status_code == 200
        ids = [bot_create_montage_post(http, [name], DISCORD_ID).json()["montagepost_id"] for _ in range(7)]
        reference = ids[::-1]  # newest first
        for limit in (1, 2, 3, 7, 15):
            seen = []
            max_page = math.ceil(7 / limit)
            for page in range(1, max_page + 2):
                body = http.get("/getmontageposts", params={"user": DISCORD_ID, "page": page, "limit": limit}).json()
                assert (body["max_page"], body["total"]) == (max_page, 7)
                seen += [post["id"] for post in body["montageposts"]]
            assert seen == reference
        default = http.get("/getmontageposts", params={"user": DISCORD_ID, "page": 1}).json()
        assert default["limit"] == 15  # the original's default
        for index, post_id in enumerate(reference):
            body = http.get("/getmontagepostneighbours", params={"id": post_id, "user": DISCORD_ID}).json()
            assert set(body) == NEIGHBOUR_KEYS
            assert (body["position"], body["max_montagepost"]) == (index + 1, 7)
            assert body["prev_montagepost"]["id"] == (reference[index - 1] if index else None)
            assert body["next_montagepost"]["id"] == (reference[index + 1] if index < 6 else None)


def test_the_album_api(stack) -> None:
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        pictures = [make_image("PNG", (50 + n, 40), seed=60 + n) for n in range(4)]
        names = []
        for data in pictures:
            assert add_rating(http, data, "alice", "0.25").status_code == 200
            names.append(stored_name(data, "png"))
        created = http.post("/albums", json={"user": "alice", "name": "Holiday", "images": ",".join(names[:2])})
        assert created.status_code == 201, created.text
        album = created.json()
        assert album["name"] == "Holiday" and album["image_count"] == 2 and album["cover"] == names[0]
        assert album["created"] is True
        url = f"/albums/{album['id']}"

        added = http.post(f"{url}/images", data={"images": f"{names[3]},{names[0]},{names[2]}", "position": "1"})
        assert added.status_code == 200, added.text
        assert added.json()["added"] == [names[3], names[2]]
        page = http.get(url).json()
        AlbumPage.model_validate(page)
        assert [i["image"] for i in page["images"]] == [names[3], names[2], names[0], names[1]]
        assert page["images"][0] == {
            "image": names[3],
            "image_id": page["images"][0]["image_id"],
            "position": 1,
            "width": 53,
            "height": 40,
            "rating": 0.25,
            "source": None,
        }
        moved = http.patch(f"{url}/images/{names[3]}", json={"position": 9})
        assert moved.status_code == 200, moved.text
        assert moved.json()["cover"] == names[2]
        removed = http.delete(f"{url}/images/{names[0]}")
        assert removed.status_code == 200 and removed.json()["image_count"] == 3
        paged = http.get(url, params={"page": 2, "limit": 2}).json()
        assert [i["image"] for i in paged["images"]] == [names[3]]
        assert (paged["total"], paged["max_page"]) == (3, 2)
        renamed = http.patch(url, data={"name": "Summer"})
        assert renamed.status_code == 200 and renamed.json()["name"] == "Summer"
        listed = http.get("/albums", params={"user": "alice"}).json()
        assert [a["id"] for a in listed["albums"]] == [album["id"]] and listed["total"] == 1

        # An image deleted from the store leaves the album.
        assert http.get("/deleteimage", params={"image": names[2]}).status_code == 200
        assert [i["image"] for i in http.get(url).json()["images"]] == [names[1], names[3]]

        assert_error(http.get("/albums/abc"), 400, "invalid_id")
        assert_error(http.get("/albums/999"), 404, "album_not_found")
        assert_error(http.delete(f"{url}/images/{names[0]}"), 404, "image_not_in_album")
        assert_error(http.delete(f"{url}/images/not-an-image"), 400, "invalid_image_name")
        assert_error(http.patch(f"{url}/images/{names[1]}", json={"position": 0}), 400, "invalid_position")
        assert_error(http.patch(f"{url}/images/{names[1]}", json={}), 400, "missing_parameter")
        assert_error(http.patch(url, json={}), 400, "missing_parameter")
        assert_error(http.post(f"{url}/images", json={"images": ""}), 400, "missing_parameter")
        assert_error(http.post("/albums", json={"user": "alice", "created_at": "yesterday"}), 400)
        assert_error(http.post("/albums", json={"user": "alice", "created_at": "2999-01-01T00:00:00Z"}), 400)

        # An import's source makes one album however often it runs.
        first = http.post(
            "/albums", data={"user": "alice", "source": "original:1", "created_at": "2023-04-05T06:07:08Z"}
        )
        again = http.post(
            "/albums", data={"user": "alice", "source": "original:1", "created_at": "2023-04-05T06:07:08Z"}
        )
        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json()["id"] == first.json()["id"] and again.json()["created"] is False
        assert first.json()["created_at"] == "2023-04-05T06:07:08Z"

        deleted = http.delete(url)
        assert deleted.status_code == 200 and deleted.json() == {"success": True, "id": album["id"], "images": 2}
        assert_error(http.get(url), 404, "album_not_found")
        assert http.get("/getimage", params={"image": names[1]}).status_code == 200  # images stay


@pytest.fixture
def auth_stack(database_url, tmp_path) -> Iterator[tuple[Stack, dict[str, str]]]:
    stack = start_stack(database_url, tmp_path / "data", auth="on", admin_token=ADMIN_TOKEN, auth_cache_seconds=0)
    try:
        with httpx.Client(base_url=stack.url, timeout=30, headers=ADMIN) as http:
            tokens = {}
            for n, user in enumerate(("alice", "bob")):
                assert add_rating(http, make_image("JPEG", seed=70 + n), user, "0.5").status_code == 200
                tokens[user] = http.post("/tokens", json={"user": user}).json()["token"]
        yield stack, tokens
    finally:
        stack.stop()


def test_a_user_token_sees_and_changes_only_its_own_albums(auth_stack) -> None:
    stack, tokens = auth_stack
    image = stored_name(make_image("JPEG", seed=70), "jpg")

    def client(user: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {tokens[user]}"} if user else ADMIN
        return httpx.Client(base_url=stack.url, timeout=30, headers=headers)

    with client("alice") as alice, client("bob") as bob, client(None) as admin:
        made = alice.post("/createmontagepost", data={"user": "alice", "filenames": image})
        assert made.status_code == 200, made.text
        post_id = made.json()["montagepost_id"]
        mine = alice.post("/albums", data={"images": image})  # the owner defaults to the token's user
        assert mine.status_code == 201 and mine.json()["user"] == "alice"
        bobs = bob.post("/albums", data={"name": "bob's"}).json()["id"]
        url = f"/albums/{post_id}"
        for request in [
            ("GET", "/getmontagepost", {"params": {"id": post_id}}),
            ("GET", url, {}),
            ("PATCH", url, {"json": {"name": "mine now"}}),
            ("POST", f"{url}/images", {"data": {"images": image}}),
            ("DELETE", f"{url}/images/{image}", {}),
            ("PATCH", f"{url}/images/{image}", {"json": {"position": 1}}),
            ("DELETE", url, {}),
            ("GET", "/getmontageposts", {"params": {"user": "alice"}}),
            ("GET", "/getmontagepostneighbours", {"params": {"id": post_id, "user": "alice"}}),
            ("GET", "/albums", {"params": {"user": "alice"}}),
            ("POST", "/createmontagepost", {"data": {"user": "alice", "filenames": image}}),
            ("POST", "/albums", {"data": {"user": "alice"}}),
        ]:
            method, path, spec = request
            assert_error(bob.request(method, path, **spec), 403, "forbidden")
        # Nothing of alice's changed; she sees hers, bob his, the admin all.
        assert [a["id"] for a in alice.get("/albums").json()["albums"]] == [mine.json()["id"], post_id]
        assert [a["id"] for a in bob.get("/albums").json()["albums"]] == [bobs]
        assert {a["id"] for a in admin.get("/albums").json()["albums"]} == {post_id, mine.json()["id"], bobs}
        assert alice.get(url).json()["image_count"] == 1
        assert admin.get(url).status_code == 200
        assert admin.patch(url, json={"name": "renamed by admin"}).json()["name"] == "renamed by admin"
        assert_error(bob.get(f"/albums/{post_id + 1000}"), 404, "album_not_found")
        # The global-model paths: /trainall is an admin's; the others anyone's.
        assert_error(alice.get("/trainall"), 403, "forbidden")
        assert alice.get("/verifyfulldataset").json() == {"valid": False}


def test_the_global_model_paths(tmp_path_factory) -> None:
    model = load_default_model("cpu")
    data_dir = tmp_path_factory.mktemp("global-model")
    stack = TrainingStack(start_services(data_dir, model, scenes=0), [], [], data_dir)
    try:
        with stack.gateway() as http:
            for n, user in enumerate(("ann", "4711")):
                rate_through_api(http, stack.services, user, [(png, r) for png, _, r in rated_scenes(20, seed=30 + n)])
            assert http.get("/verifyfulldataset").json() == {"valid": False}
            assert http.get("/createfulldataset").json() == {"success": True}
            started = http.get("/trainall")
            assert started.status_code == 202, started.text
            assert started.json()["success"] is True and started.json()["status"]["current_user"] == "all"
            final = wait_until(http, lambda s: not s["is_training"])[-1]
            assert final["state"] == "succeeded", final
            assert http.get("/verifyfulldataset").json() == {"valid": True}
            body = assert_error(http.get("/createfulldataset"), 400, "full_dataset_up_to_date")
            assert body["error"] == "Full dataset already up-to-date"  # as the original's clients read it
            assert_error(http.get("/trainall"), 409, "model_up_to_date")
            assert_error(http.get("/trainall", params={"force": "maybe"}), 400, "invalid_force")
            rate_through_api(http, stack.services, "ann", [(png, r) for png, _, r in rated_scenes(1, seed=99)])
            assert http.get("/verifyfulldataset").json() == {"valid": False}
            assert http.post("/trainall", data={"force": "true"}).status_code == 202
            wait_until(http, lambda s: not s["is_training"])
    finally:
        stack.stop()


def test_album_filters_resolve_like_the_library(stack) -> None:
    """Album filters (/albums/{id} and /getmontageposts) are the library's:
    manual and taught tags beside the tagger's, a removed model tag gone,
    aliases, implications, scoped tags, ``~`` groups, ``rating:``
    comparisons against the owner's ratings, and malformed items as 400s."""
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        pictures = [make_image("PNG", (60 + n, 40), seed=700 + n) for n in range(4)]
        names = []
        for data, rating in zip(pictures, ["0.25", "0.5", "0.75", "1"], strict=True):
            assert add_rating(http, data, "alice", rating).status_code == 200
            names.append(stored_name(data, "png"))
        tag_image(stack, names[0], {"cat": 0.9})
        tag_image(stack, names[1], {"sofa": 0.8})
        assert http.post("/tagimplications", json={"tag": "kitten", "implies": "cat"}).status_code == 200
        assert http.post("/tagimplications", json={"tag": "sofa", "implies": "furniture"}).status_code == 200
        assert http.post("/tagaliases", json={"alias": "kitty", "tag": "cat"}).status_code == 200
        assert http.post("/addtags", data={"image": names[2], "tag": "kitten"}).status_code == 200
        assert http.post("/addtags", data={"image": names[3], "tag": "cat"}).status_code == 200
        created = http.post("/albums", json={"user": "alice", "name": "Cats", "images": ",".join(names)})
        assert created.status_code == 201, created.text
        url = f"/albums/{created.json()['id']}"

        def album(filters: str) -> list[int]:
            body = http.get(url, params={"filters": filters})
            assert body.status_code == 200, body.text
            shown = [names.index(i["image"]) for i in body.json()["images"]]
            assert body.json()["total"] == len(shown)
            posts = http.get("/getmontageposts", params={"user": "alice", "filters": filters})
            assert posts.status_code == 200, posts.text
            [post] = posts.json()["montageposts"]
            assert [names.index(i["filename"]) for i in post["images"]] == shown
            return shown

        assert album("cat") == [0, 2, 3]  # the tagger's, and manual (added with kitten)
        assert album("kitty") == [0, 2, 3]  # an alias acts on its tag
        assert album("furniture") == [1]  # a model tag implying it
        assert album("manual:cat") == [2, 3]
        assert album("model:cat") == [0]
        assert album("-cat") == [1]
        assert album("~sofa,~kitten") == [1, 2]
        assert album("rating:>=0.5,-kitten") == [1, 3]
        assert album("nosuchtag") == []
        assert album("-nosuchtag") == [0, 1, 2, 3]
        # A removed model tag no longer matches.
        assert http.post("/removetags", data={"image": names[0], "tag": "cat"}).status_code == 200
        assert album("cat") == [2, 3]
        for bad in ("rating:>x", "predicted:>=2", "manual:"):
            assert_error(http.get(url, params={"filters": bad}), 400, "invalid_filter")
            assert_error(http.get("/getmontageposts", params={"user": "alice", "filters": bad}), 400, "invalid_filter")
