"""Bring your own tagger end to end: ``tagrate models add/list/use`` as its
own process, through the real gateway, to the real tagger (the embedded
model first, then a WD v3-style ONNX folder built here) and the real
dataset service (SQLite and PostgreSQL) whose background worker notices the switch and
re-tags every stored image, with the progress in /verifydatasets and the
new model's categories in /getimagetags?detail=true."""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tagrate_common.vision.loaders import load_default_model
from tagrate_common.vision.models import ImageModel
from tagrate_dataset.server import create_server
from tests.gateway.conftest import GatewayServer, gateway_settings, start_tagger
from tests.support import dataset_settings
from tests.tagger.modelfiles import write_wd_v3_dir

from .conftest import run_cli

COLOURS = {"red": (255, 0, 0), "blue": (0, 0, 255), "dark_red": (200, 0, 0), "navy": (0, 0, 160)}


def solid_png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def tagger_model() -> ImageModel:
    return load_default_model("cpu")


@pytest.fixture
def stack(tmp_path: Path, tagger_model: ImageModel, database_url: str) -> Iterator[str]:
    """Tagger (embedded model, data in tmp) + dataset (SQLite or
    PostgreSQL; background work checking the tagger's model often) +
    gateway; the gateway's URL."""
    data = tmp_path / "data"
    tagger, tagger_addr = start_tagger(tagger_model, data_dir=data, backend="torch", max_bulk_files=4)
    dataset = create_server(
        dataset_settings(
            data,
            database_url,
            tagger_addr=tagger_addr,
            tag_batch_size=1,
            work_poll_seconds=0.1,
            work_model_check_seconds=0.1,
        )
    )
    dataset_addr = f"127.0.0.1:{dataset.start()}"
    gateway = GatewayServer(gateway_settings(dataset_addr, data, tagger_addr=tagger_addr)).start()
    try:
        yield gateway.url
    finally:
        gateway.stop()
        dataset.stop(0)
        tagger.stop(1.0)


def ok(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def wait_for(http: httpx.Client, done, what: str, seconds: float = 120) -> list[dict]:
    """Polls /verifydatasets until ``done(state)``; every state seen."""
    seen = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen.append(ok(http.get("/verifydatasets")))
        if done(seen[-1]):
            return seen
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen; last state {seen[-1]}")


def retagged(http: httpx.Client, image: str, model_id: str) -> bool:
    """Whether ``image`` shows tags of ``model_id`` (every image gets at least
    its rating tag from a WD model)."""
    tags = ok(http.get("/getimagetags", params={"image": image}))
    return tags["model"] == model_id and bool(tags["tags"])


def test_models_add_use_retags_every_image_with_categories(tmp_path: Path, stack: str) -> None:
    with httpx.Client(base_url=stack, timeout=60) as http:
        names = {}
        for label, colour in COLOURS.items():
            body = ok(http.post("/addimage", files={"image": (f"{label}.png", solid_png(colour))}))
            names[label] = body["image"]
        wait_for(http, lambda s: s["untagged_images"] == 0 and s["work"]["tag"]["pending"] == 0, "first tagging")
        default_id = ok(http.get("/getimagetags", params={"image": names["red"]}))["model"]
        assert default_id.startswith("efficientnet-lite0-imagenet@")

        # Refused with the reason, nothing registered.
        nchw = write_wd_v3_dir(tmp_path / "nchw-tagger", layout="NCHW")
        refused = run_cli(stack, "models", "add", str(nchw))
        assert refused.returncode == 1
        assert "(this looks like NCHW, channels first)" in refused.stderr
        assert "NHWC input [batch, size, size, 3] (BGR float 0-255)" in refused.stderr

        added = run_cli(stack, "models", "add", str(write_wd_v3_dir(tmp_path / "wd-mini-v3")))
        assert added.returncode == 0, added.stderr
        model_id = re.search(r"^registered (wd-mini-v3@[0-9a-f]{12}) ", added.stdout, re.MULTILINE)
        assert model_id, added.stdout
        model_id = model_id.group(1)
        assert "9 tags (2 character, 3 general, 4 rating)" in added.stdout
        assert "thresholds: character 0.85, general 0.35, rating 0" in added.stdout
        listed = run_cli(stack, "models", "list")
        assert listed.returncode == 0 and listed.stdout.splitlines()[0].startswith("* default")
        assert f"  {model_id}  onnx-wd-v3" in listed.stdout
        # Adding does not switch: the embedded model still tags.
        assert ok(http.get("/taggermodels"))["running"] == default_id

        used = run_cli(stack, "models", "use", model_id)
        assert used.returncode == 0, used.stderr
        assert f"the tagger now runs {model_id}" in used.stdout
        assert ok(http.get("/taggermodels"))["active"] == model_id
        # The worker notices the new model and re-tags every image, one a batch.
        seen = wait_for(
            http,
            lambda s: (
                s["work"]["tag"]["pending"] == 0
                and s["untagged_images"] == 0
                and all(retagged(http, name, model_id) for name in names.values())
            ),
            "re-tagging",
        )
        # Until the worker's next model check nothing is owed; from then on
        # every image is queued and the count only goes down.
        pending = [state["work"]["tag"]["pending"] for state in seen]
        started = next((i for i, n in enumerate(pending) if n), len(pending))
        assert pending[started:] == sorted(pending[started:], reverse=True) and max(pending) <= len(COLOURS)

        # The new model's tags with its per-category thresholds and categories.
        red = ok(http.get("/getimagetags", params={"image": names["red"], "detail": "true"}))
        assert {(t["tag"], t["source"], t["category"]) for t in red["tags"]} == {
            ("rating:general", "model", "rating"),
            ("red_theme", "model", "general"),
            ("1girl", "model", "general"),
            ("kasane_teto", "model", "character"),
        }
        blue = ok(http.get("/getimagetags", params={"image": names["blue"]}))
        assert blue["model"] == model_id
        assert set(blue["tags"]) == {"rating:sensitive", "blue_theme", "1girl"}

        # Back to the embedded model: re-tagged again, no categories.
        assert run_cli(stack, "models", "use", "default").returncode == 0
        wait_for(
            http,
            lambda s: (
                s["work"]["tag"]["pending"] == 0
                and ok(http.get("/getimagetags", params={"image": names["navy"]}))["model"] == default_id
            ),
            "re-tagging with the default",
        )
        unknown = run_cli(stack, "models", "use", "wd@0123456789ab")
        assert unknown.returncode == 1 and "404" in unknown.stderr and "no registered model" in unknown.stderr
