"""``tagrate import`` against a real gateway and dataset service, with real
photographs: a folder with a ratings file, folder-per-rating layouts, an
import killed and resumed, and bad rows reported without losing the rest."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.support import REPO_ROOT

from .conftest import cli_command, photo_jpegs, ratings_of, run_import, stored_images


def name_of(data: bytes) -> str:
    return f"{hashlib.sha256(data).hexdigest()}.jpg"


def test_folder_with_csv_imports_ratings_unrated_images_and_sources_and_is_idempotent(server, tmp_path, write_files):
    photos = photo_jpegs(6, seed=1)
    root = write_files(
        {
            "a/one.jpg": photos[0],
            "a/two.jpg": photos[1],
            "b/deep/three.jpg": photos[2],
            "four.jpg": photos[3],
            "unrated.jpg": photos[4],
            "also-unrated.jpg": photos[5],
            "notes.txt": b"not an image",
        }
    )
    csv_file = tmp_path / "ratings.csv"
    csv_file.write_text(
        "path,user,rating,source\n"
        "a/one.jpg,alice,0.5,https://example.org/1\n"
        "a/one.jpg,bob,1,\n"
        "a/two.jpg,alice,.83,\n"
        "b/deep/three.jpg,bob,0,\n"
        "four.jpg,alice,0.1666667,post-4\n"
        "also-unrated.jpg,,,post-6\n"
    )
    result, summary = run_import(server.url, tmp_path, str(root), "--ratings", str(csv_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary["images_added"] == 6 and summary["images_existing"] == 0
    assert summary["ratings_added"] == 5 and summary["failed"] == [] and summary["skipped_rows"] == []
    assert summary["not_images"] == ["notes.txt"]
    assert "notes.txt" in result.stdout
    names = [name_of(p) for p in photos]
    assert ratings_of(server.url, "alice") == {names[0]: 0.5, names[1]: 0.83, names[3]: 0.1666667}
    assert ratings_of(server.url, "bob") == {names[0]: 1.0, names[2]: 0.0}
    assert stored_images(server.url, "alice") == sorted(names)
    sources = {n: httpx.get(f"{server.url}/getimagetags", params={"image": n}).json()["source"] for n in names}
    assert sources[names[0]] == "https://example.org/1" and sources[names[3]] == "post-4"
    assert sources[names[5]] == "post-6" and sources[names[4]] is None

    again, summary = run_import(server.url, tmp_path, str(root), "--ratings", str(csv_file))
    assert again.returncode == 0, again.stdout + again.stderr
    assert summary["images_added"] == 0 and summary["images_existing"] == 6
    assert summary["ratings_added"] == 0 and summary["ratings_existing"] == 5

    # A changed rating is an update, the rest stays as it is.
    csv_file.write_text("path,user,rating\na/one.jpg,alice,0.25\na/two.jpg,alice,.83\n")
    _, summary = run_import(server.url, tmp_path, str(root), "--ratings", str(csv_file))
    assert summary["ratings_changed"] == 1 and summary["ratings_existing"] == 1 and summary["images_added"] == 0
    assert ratings_of(server.url, "alice")[names[0]] == 0.25


@pytest.mark.parametrize(
    ("folders", "expected"),
    [
        (["0", "1", "2", "3", "4", "5", "6"], [0, 1 / 6, 2 / 6, 0.5, 4 / 6, 5 / 6, 1]),
        (["0.0", "0.25", "0.5", "1.0"], [0, 0.25, 0.5, 1]),
    ],
    ids=["sixths", "decimals"],
)
def test_rating_from_folder(server, tmp_path, write_files, folders, expected):
    photos = photo_jpegs(len(folders) * 2 + 1, seed=2)
    files = {f"{folder}/{i}.jpg": photos[2 * n + i] for n, folder in enumerate(folders) for i in range(2)}
    files["loose.jpg"] = photos[-1]  # outside a rating folder: stored unrated
    root = write_files(files)
    result, summary = run_import(server.url, tmp_path, str(root), "--user", "carol", "--rating-from-folder")
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary["images_added"] == len(photos) and summary["ratings_added"] == 2 * len(folders)
    got = ratings_of(server.url, "carol")
    for n, value in enumerate(expected):
        for i in range(2):
            assert got[name_of(photos[2 * n + i])] == pytest.approx(value, abs=1e-6)
    assert name_of(photos[-1]) not in got
    assert name_of(photos[-1]) in stored_images(server.url, "carol")


def _count(url: str, user: str) -> int:
    response = httpx.get(f"{url}/getuserdata", params={"user": user, "page": 1, "limit": 1}, timeout=10)
    return response.json()["total"] if response.status_code == 200 else 0


@pytest.mark.slow
def test_import_killed_mid_run_resumes_without_duplicates(server, tmp_path, write_files):
    photos = photo_jpegs(120, seed=3, side=320)
    root = write_files({f"p{i:03}.jpg": data for i, data in enumerate(photos)})
    csv_file = tmp_path / "ratings.csv"
    csv_file.write_text("path,user,rating\n" + "".join(f"p{i:03}.jpg,dave,{i % 7 / 6:.4f}\n" for i in range(120)))
    args = ["import", str(root), "--ratings", str(csv_file), "--concurrency", "2"]
    process = subprocess.Popen(
        cli_command(server.url, *args), cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while _count(server.url, "dave") < 10 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(10)
    at_kill = _count(server.url, "dave")
    assert 10 <= at_kill < 120, f"the import was not interrupted mid-run ({at_kill} of 120 stored)"

    result, summary = run_import(server.url, tmp_path, str(root), "--ratings", str(csv_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary["ratings_existing"] >= at_kill - 2  # the last in flight may have landed after the count
    assert summary["images_added"] + summary["images_existing"] == 120
    assert summary["ratings_added"] + summary["ratings_existing"] == 120
    expected = {name_of(data): float(f"{i % 7 / 6:.4f}") for i, data in enumerate(photos)}
    assert ratings_of(server.url, "dave") == expected
    assert stored_images(server.url, "dave") == sorted(expected)  # no duplicates, nothing else
    blobs = [f for f, _ in server.stored_files() if f.endswith(".jpg")]
    assert len({Path(f).name for f in blobs}) == len(blobs)


def test_bad_rows_are_reported_and_skipped_and_nothing_else_is_lost(server, tmp_path, write_files):
    photos = photo_jpegs(5, seed=4)
    root = write_files({f"{i}.jpg": data for i, data in enumerate(photos)})
    csv_file = tmp_path / "ratings.csv"
    csv_file.write_bytes(
        b"path,user,rating,comment\n"  # 'comment' is not known: ignored, said so
        b"0.jpg,erin,0.5,fine\n"
        b"missing.jpg,erin,0.5,\n"  # line 3: no such file
        b"1.jpg,erin,1.5,\n"  # line 4: out of range
        b"2.jpg,erin,0.3,x,extra\n"  # line 5: a value in no column
        b"3.jpg,\xff\xfeerin,0.2,\n"  # line 6: not UTF-8
        b"4.jpg,erin,1,\n"
        b"3.jpg,bad user!,0.2,\n"  # line 8: not a user name
    )
    result, summary = run_import(server.url, tmp_path, str(root), "--ratings", str(csv_file))
    assert result.returncode == 1, result.stdout + result.stderr
    reasons = {p["where"]: p["reason"] for p in summary["skipped_rows"]}
    assert set(reasons) == {"ratings.csv:3", "ratings.csv:4", "ratings.csv:5", "ratings.csv:6", "ratings.csv:8"}
    assert "missing.jpg" in reasons["ratings.csv:3"] and "1.5" in reasons["ratings.csv:4"]
    assert "unknown column" in reasons["ratings.csv:5"] and "UTF-8" in reasons["ratings.csv:6"]
    assert any("comment" in note for note in summary["notes"])
    for where in reasons:
        assert where in result.stdout
    # Every good row imported; every image stored (the bad rows' images unrated).
    assert ratings_of(server.url, "erin") == {name_of(photos[0]): 0.5, name_of(photos[4]): 1.0}
    assert stored_images(server.url, "erin") == sorted(name_of(p) for p in photos)
    assert summary["images_added"] == 5 and summary["failed"] == []

    jsonl = tmp_path / "ratings.jsonl"
    jsonl.write_text(
        '{"path": "1.jpg", "user": "erin", "rating": 0.75}\n{"path": "2.jpg", "user": "erin", "stars": 3}\n'
    )
    result, summary = run_import(server.url, tmp_path, str(root), "--ratings", str(jsonl))
    assert result.returncode == 1
    assert [p["where"] for p in summary["skipped_rows"]] == ["ratings.jsonl:2"]
    assert "stars" in summary["skipped_rows"][0]["reason"]
    assert ratings_of(server.url, "erin")[name_of(photos[1])] == 0.75


def test_server_refusals_name_the_file_and_the_rest_is_stored(server, tmp_path, write_files):
    photos = photo_jpegs(2, seed=5)
    broken = photos[0][: len(photos[0]) // 3]  # a JPEG header and not enough data: the server refuses it
    root = write_files({"good.jpg": photos[1], "broken.jpg": broken})
    csv_file = tmp_path / "ratings.csv"
    csv_file.write_text("path,user,rating\ngood.jpg,frank,0.4\nbroken.jpg,frank,0.6\n")
    result, summary = run_import(server.url, tmp_path, str(root), "--ratings", str(csv_file))
    assert result.returncode == 1
    assert [p["where"] for p in summary["failed"]] == ["broken.jpg"]
    assert "415" in summary["failed"][0]["reason"]
    assert "broken.jpg" in result.stdout
    assert ratings_of(server.url, "frank") == {name_of(photos[1]): 0.4}


def test_import_reports_the_near_duplicates_it_met(server, tmp_path, write_files):
    from tests.similar.photos import original, variant

    root = write_files(
        {
            "1-coffee.jpg": original("coffee"),
            "2-coffee-copy.png": variant("coffee", "png"),
            "3-rocket.jpg": original("rocket"),
        }
    )
    result, summary = run_import(server.url, tmp_path, str(root), "--concurrency", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary["images_added"] == 3
    [near] = summary["near_duplicates"]
    assert near["where"].endswith("2-coffee-copy.png") and near["near_duplicate_of"] == name_of(original("coffee"))
    assert "near-duplicates of stored images (1" in result.stdout
