"""The soak benchmark stays runnable: a few seconds with 2 clients against the
real stack under the real supervisor, every endpoint exercised, no 5xx."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.soak import ENDPOINTS, Photos, main, parse_mix


@pytest.mark.slow
def test_short_soak_exercises_every_endpoint_without_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    output = tmp_path / "soak.json"
    # Every endpoint weighted alike, so a few seconds reach each one.
    mix = "getuserdata=1,addrating=1,tag=1,ratebulk=1"
    args = ["--clients", "2", "--warmup", "1", "--duration", "5", "--users", "2", "--rss-interval", "1"]
    status = main([*args, "--mix", mix, "--output", str(output)])
    out = capsys.readouterr().out

    samples = json.loads(output.read_text())["samples"]
    measured = [s for s in samples if s[0] >= 1]
    assert {s[1] for s in measured} == set(ENDPOINTS), out
    assert not [s for s in samples if isinstance(s[3], int) and s[3] >= 500], out
    assert status == 0, out  # non-zero when any request failed, whatever the status
    for heading in ("Requests and errors by endpoint", "Latency", "Over time", "Resident memory", "CPU time"):
        assert heading in out
    for endpoint in ENDPOINTS:
        assert f"/{endpoint} " in out
    for row in ("warm-up end", "20%", "100%", "growth after warm-up", "load generator"):
        assert row in out
    document = json.loads(output.read_text())
    assert {"gateway", "dataset", "tagger", "rater", "trainer"} <= set(document["processes"])
    assert len(document["rss_mib"]) >= 5 and all(r["gateway"] > 0 for r in document["rss_mib"])


def test_new_photos_are_distinct_real_jpegs() -> None:
    photos = Photos(seed=1)
    uploads = [photos.new() for _ in range(50)]
    assert len(set(uploads)) == 50
    assert all(data[:3] == b"\xff\xd8\xff" for data in uploads + photos.pool)
    assert not set(uploads) & set(photos.pool)


def test_mix_is_checked() -> None:
    assert parse_mix("tag=1,/ratebulk=2") == {"tag": 1.0, "ratebulk": 2.0}
    for bad in ("tags=1", "tag=x", "tag=-1", "tag=0"):
        with pytest.raises(Exception, match="mix"):
            parse_mix(bad)
