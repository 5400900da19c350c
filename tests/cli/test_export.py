"""``tagrate export`` then ``tagrate import`` of it into a fresh server
restores every user's data; ``tagrate status`` on one screen."""

from __future__ import annotations

import csv
import json

import httpx

from tests.gateway.stack import tag_image

from .conftest import photo_jpegs, run_cli, run_import, start_cli_stack


def _userdata(url: str, user: str) -> list[dict]:
    """/getuserdata of everything (rated=all), in name order, without rated_at
    (the time a rating was made: no REST call sets it, so a restore cannot)."""
    response = httpx.get(f"{url}/getuserdata", params={"user": user, "rated": "all", "sort": "name-asc"}, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    for item in body["images"]:
        item.pop("rated_at")
    return body


def _sources(url: str, names: list[str]) -> dict[str, str | None]:
    return {n: httpx.get(f"{url}/getimagetags", params={"image": n}).json()["source"] for n in names}


def _original_names(url: str, names: list[str]) -> dict[str, str | None]:
    return {n: httpx.get(f"{url}/getimagetags", params={"image": n}).json()["original_name"] for n in names}


def _albums(url: str) -> list[tuple]:
    """Every album (an admin's view) with its images, newest first, without ids."""
    albums = httpx.get(f"{url}/albums", timeout=30).json()["albums"]
    return [
        (
            a["user"],
            a["name"],
            a["created_at"],
            [i["image"] for i in httpx.get(f"{url}/albums/{a['id']}").json()["images"]],
        )
        for a in albums
    ]


def test_export_then_import_into_a_fresh_server_restores_every_user(server, tmp_path, write_files):
    photos = photo_jpegs(8, seed=8)
    root = write_files({f"{i}.jpg": data for i, data in enumerate(photos)})
    ratings = tmp_path / "seed.csv"
    ratings.write_text(
        "path,user,rating,source\n0.jpg,alice,0.5,post-0\n1.jpg,alice,1,\n2.jpg,alice,0.1666667,\n"
        "0.jpg,bob,0,\n3.jpg,bob,.83,https://example.org/3\n4.jpg,1234567890,0.25,\n6.jpg,,,post-6\n"
    )
    result, _ = run_import(server.url, tmp_path, str(root), "--ratings", str(ratings))
    assert result.returncode == 0, result.stdout + result.stderr
    names = [item["image"] for item in _userdata(server.url, "alice")["images"]]
    assert len(names) == 8
    tag_image(server, names[0], {"cat": 0.93, "sofa": 0.61})
    for user, name, images in [("alice", "Trip", [names[5], names[0], names[2]]), ("bob", "", []), ("bob", "B", names)]:
        made = httpx.post(f"{server.url}/albums", json={"user": user, "name": name, "images": ",".join(images)})
        assert made.status_code == 201, made.text

    out = tmp_path / "export"
    exported = run_cli(server.url, "export", str(out), "--images")
    assert exported.returncode == 0, exported.stdout + exported.stderr
    assert "exported 6 ratings of 3 users, 8 images" in exported.stdout and "3 albums" in exported.stdout
    albums = [json.loads(line) for line in (out / "albums.jsonl").open()]
    assert [(a["user"], a["name"], a["images"]) for a in albums] == [
        ("alice", "Trip", [names[5], names[0], names[2]]),
        ("bob", "", []),
        ("bob", "B", names),
    ]
    rows = list(csv.DictReader((out / "ratings.csv").open()))
    assert len(rows) == 6 + 3  # six ratings, three images nobody rated
    assert [json.loads(line) for line in (out / "ratings.jsonl").open()] == [
        {**r, "predicted": None if r["predicted"] == "" else float(r["predicted"])} for r in rows
    ]
    images = {i["image"]: i for i in map(json.loads, (out / "images.jsonl").open())}
    assert images[names[0]]["tags"] == [["cat", 0.93], ["sofa", 0.61]]
    # The files carry the names the images were imported under.
    originals = _original_names(server.url, names)
    assert sorted(originals.values()) == [f"{i}.jpg" for i in range(8)]
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(originals.values())
    assert {r["image"]: (r["path"], r["original_name"]) for r in rows} == {
        n: (f"images/{o}", o) for n, o in originals.items()
    }

    fresh = start_cli_stack(tmp_path, "fresh")
    try:
        result, summary = run_import(fresh.url, tmp_path, str(out), "--ratings", str(out / "ratings.csv"))
        assert summary["failed"] == [] and summary["skipped_rows"] == [], summary
        assert summary["images_added"] == 8 and summary["ratings_added"] == 6
        for user in ("alice", "bob", "1234567890"):
            assert _userdata(fresh.url, user) == _userdata(server.url, user)
        assert _sources(fresh.url, names) == _sources(server.url, names)
        assert _original_names(fresh.url, names) == originals
        assert _albums(fresh.url) == _albums(server.url)
        again, summary = run_import(fresh.url, tmp_path, str(out), "--ratings", str(out / "ratings.csv"))
        assert again.returncode == 0 and _albums(fresh.url) == _albums(server.url)  # no second copy
    finally:
        fresh.stop()

    alice_only = tmp_path / "alice"
    result = run_cli(server.url, "export", str(alice_only), "--user", "alice", "--format", "csv")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = list(csv.DictReader((alice_only / "ratings.csv").open()))
    assert {r["user"] for r in rows} == {"alice"} and len(rows) == 3
    assert not (alice_only / "ratings.jsonl").exists()


def test_status_shows_readiness_users_images_and_the_trainer(server, tmp_path, write_files):
    root = write_files({f"{i}.jpg": data for i, data in enumerate(photo_jpegs(3, seed=9))})
    ratings = tmp_path / "r.csv"
    ratings.write_text("path,user,rating\n0.jpg,alice,0.5\n1.jpg,bob,1\n")
    run_import(server.url, tmp_path, str(root), "--ratings", str(ratings))

    result = run_cli(server.url, "status", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    state = json.loads(result.stdout)
    assert state["ready"] is True and state["images"] == 3
    assert [u["user"] for u in state["users"]] == ["alice", "bob"]
    assert state["untagged_images"] == 3  # no tagger in this stack
    assert state["trainer"] is None and state["trainer_error"]  # no trainer configured: said, not a crash

    screen = run_cli(server.url, "status")
    assert screen.returncode == 0, screen.stdout + screen.stderr
    for text in ("ready", "images: 3", "untagged: 3", "users: 2", "models up to date: 0/2", "trainer:", "alice"):
        assert text in screen.stdout, screen.stdout

    down = run_cli("http://127.0.0.1:9", "status")
    assert down.returncode == 1 and "unreachable" in down.stdout and "cannot reach the gateway" in down.stdout


def test_export_names_files_by_original_name_unique_and_never_overwriting(server, tmp_path, write_files):
    photos = photo_jpegs(6, seed=21)
    # Two different images first stored as cat.jpg, one as CAT.JPG (the same
    # name on a case-insensitive disk), one with a name no file may have,
    # one whose later upload under another name changes nothing, one with none.
    uploads = [
        (photos[0], "cat.jpg"),
        (photos[1], "holiday/cat.jpg"),
        (photos[2], "CAT.JPG"),
        (photos[3], "what?: <a|b>.png"),
        (photos[4], "first.jpg"),
        (photos[4], "second.jpg"),
        (photos[5], "folder/"),  # nothing left of it: no name
    ]
    stored = []
    for data, filename in uploads:
        reply = httpx.post(f"{server.url}/addimage", files={"image": (filename, data, "image/jpeg")}, timeout=30)
        assert reply.status_code == 200, reply.text
        stored.append(reply.json()["image"])
    originals = _original_names(server.url, stored)
    expected = ["cat.jpg", "cat.jpg", "CAT.JPG", "what?: <a|b>.png", "first.jpg", "first.jpg", None]
    assert [originals[n] for n in stored] == expected
    out = tmp_path / "export"
    (out / "images").mkdir(parents=True)
    (out / "images" / "first.jpg").write_bytes(b"a file of the user's own")  # never overwritten
    # Nobody has rated anything: the export holds the whole library all the same.
    result = run_cli(server.url, "export", str(out), "--images")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "exported 0 ratings of 0 users, 6 images (6 files)" in result.stdout
    rows = {r["image"]: r for r in csv.DictReader((out / "ratings.csv").open())}
    assert len(rows) == 6
    paths = {name: rows[name]["path"] for name in stored}
    # sorted by stored name, the first of a name keeps it, the next get " (2)", " (3)"
    cats = sorted(stored[:3])
    assert sorted(paths[n] for n in cats) == ["images/CAT (3).JPG", "images/cat (2).jpg", "images/cat.jpg"]
    assert paths[cats[0]] == "images/" + ("cat.jpg" if originals[cats[0]] == "cat.jpg" else "CAT.JPG")
    assert paths[stored[3]] == "images/what__ _a_b_.png"
    assert paths[stored[4]] == "images/first (2).jpg"
    assert paths[stored[6]] == f"images/{stored[6]}"  # no name: the stored one
    assert (out / "images" / "first.jpg").read_bytes() == b"a file of the user's own"
    for name in set(stored):
        assert (out / paths[name]).read_bytes() == httpx.get(f"{server.url}/getimage", params={"image": name}).content
    assert {r["original_name"] for r in rows.values()} == {"cat.jpg", "CAT.JPG", "what?: <a|b>.png", "first.jpg", ""}

    # Again into the same folder: the same files, nothing new, nothing overwritten.
    before = sorted(p.name for p in (out / "images").iterdir())
    again = run_cli(server.url, "export", str(out), "--images")
    assert again.returncode == 0, again.stdout + again.stderr
    assert sorted(p.name for p in (out / "images").iterdir()) == before
    assert {r["image"]: r["path"] for r in csv.DictReader((out / "ratings.csv").open())} == paths | {}

    # Imported into a fresh server, every image gets its original name back.
    fresh = start_cli_stack(tmp_path, "fresh")
    try:
        result, summary = run_import(fresh.url, tmp_path, str(out), "--ratings", str(out / "ratings.csv"))
        assert summary["failed"] == [], summary
        assert summary["images_added"] == 6
        assert _original_names(fresh.url, list(set(stored))) == {n: originals[n] for n in set(stored)}
    finally:
        fresh.stop()
