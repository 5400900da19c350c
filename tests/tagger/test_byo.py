"""Bring your own tagger through the real tagger service: registering WD v3
and DeepDanbooru folders built here as small ONNX graphs (checked before
use, refused with a clear reason), switching the running model without a
restart, per-category thresholds and categories in its answers, and a
restart keeping the choice."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from PIL import Image

from tagrate_common.grpc_server import GrpcServer
from tagrate_common.protos import common_pb2, tagger_pb2, tagger_pb2_grpc
from tagrate_common.vision import registry
from tagrate_common.vision.loaders import load_model_dir
from tagrate_tagger.server import create_server
from tagrate_tagger.tagging import Tagger

from .conftest import png, tagger_settings
from .modelfiles import WD_TAGS, expected_wd_scores, write_deepdanbooru_dir, write_wd_v3_dir

RED, BLUE = (255, 0, 0), (0, 0, 255)


def solid(colour: tuple[int, int, int]) -> bytes:
    return png(Image.new("RGB", (32, 32), colour))


class Running:
    """A tagger server on a data directory, and a stub to call it."""

    def __init__(self, data_dir: Path, model=None) -> None:
        self.server: GrpcServer = create_server(
            tagger_settings(data_dir=data_dir, max_bulk_files=4, backend="torch"), model=model
        )
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.server.start()}")
        self.stub = tagger_pb2_grpc.TaggerServiceStub(self.channel)

    def tag(self, colour: tuple[int, int, int], **request: object) -> tuple[str, dict[str, tuple[float, str]]]:
        reply = self.stub.Tag(
            tagger_pb2.TagRequest(images=[common_pb2.ImageFile(data=solid(colour), filename="x.png")], **request)
        )
        return reply.model_id, {t.name: (t.score, t.category) for t in reply.results[0].tags}

    def close(self) -> None:
        self.channel.close()
        self.server.stop(1.0)


@pytest.fixture
def tagger(tmp_path: Path, default_model) -> Iterator[Running]:
    running = Running(tmp_path / "data", default_model)
    yield running
    running.close()


def add(tagger: Running, folder: Path) -> tagger_pb2.AddModelResponse:
    return tagger.stub.AddModel(tagger_pb2.AddModelRequest(path=str(folder)))


def refusal(tagger: Running, folder: Path) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        add(tagger, folder)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return caught.value.details()


def test_a_wd_v3_folder_is_registered_used_and_kept_over_a_restart(tmp_path: Path, tagger: Running) -> None:
    default_id = tagger.stub.GetModelInfo(tagger_pb2.GetModelInfoRequest()).model_id
    reply = add(tagger, write_wd_v3_dir(tmp_path / "wd-mini-v3"))
    model = reply.model
    assert reply.added and model.format == "onnx-wd-v3" and model.label_count == len(WD_TAGS)
    assert dict(model.categories) == {"character": 2, "general": 3, "rating": 4}
    assert dict(model.thresholds) == pytest.approx({"character": 0.85, "general": 0.35, "rating": 0.0})
    assert model.model_id.startswith("wd-mini-v3@") and model.input_size == 32
    # The same folder again: the same id, nothing new.
    again = add(tagger, tmp_path / "wd-mini-v3")
    assert not again.added and again.model.model_id == model.model_id
    listed = tagger.stub.ListModels(tagger_pb2.ListModelsRequest())
    assert [m.model_id for m in listed.models] == [model.model_id]
    assert listed.active == "default" and listed.running == default_id
    # Not used yet: the embedded model still answers.
    assert tagger.tag(RED)[0] == default_id

    info = tagger.stub.UseModel(tagger_pb2.UseModelRequest(model_id=model.model_id))
    assert info.model_id == model.model_id and info.per_category
    model_id, tags = tagger.tag(RED)
    assert model_id == model.model_id
    # Per category: general from 0.35 (1girl 0.378 in), characters from 0.85
    # (kasane_teto 0.95 in, hatsune_miku 0.73 out), one rating.
    assert set(tags) == {"rating:general", "red_theme", "1girl", "kasane_teto"}
    assert tags["red_theme"][0] == pytest.approx(expected_wd_scores((0, 0, 1))["red_theme"], abs=1e-5)
    assert {name: category for name, (_, category) in tags.items()} == {
        "rating:general": "rating",
        "red_theme": "general",
        "1girl": "general",
        "kasane_teto": "character",
    }
    assert tagger.stub.ListModels(tagger_pb2.ListModelsRequest()).active == model.model_id
    assert json.loads((tmp_path / "data" / "models" / "active.json").read_text()) == {"model": model.model_id}
    tagger.close()

    # A restart (no model handed in): the registered model comes back.
    restarted = Running(tmp_path / "data")
    try:
        assert restarted.tag(BLUE)[0] == model.model_id
        # Back to the embedded one.
        assert restarted.stub.UseModel(tagger_pb2.UseModelRequest(model_id="default")).model_id == default_id
        assert not restarted.stub.GetModelInfo(tagger_pb2.GetModelInfoRequest()).per_category
        model_id, tags = restarted.tag(RED, threshold=0.0, limit=3)
        assert model_id == default_id and len(tags) == 3 and all(category == "" for _, category in tags.values())
    finally:
        restarted.close()
    assert registry.active_model(tmp_path / "data") == "default"


def test_a_deepdanbooru_folder_reads_rgb_0_1_with_its_categories_and_thresholds(
    tmp_path: Path, tagger: Running
) -> None:
    folder = write_deepdanbooru_dir(tmp_path / "dd-mini")
    (folder / "thresholds.json").write_text(json.dumps({"general": 0.4}))
    model = add(tagger, folder).model
    assert model.format == "onnx-deepdanbooru" and model.input_size == 24
    assert dict(model.categories) == {"character": 2, "general": 3, "rating": 3}
    assert dict(model.thresholds) == pytest.approx({"character": 0.85, "general": 0.4, "rating": 0.0})
    tagger.stub.UseModel(tagger_pb2.UseModelRequest(model_id=model.model_id))
    _, red = tagger.tag(RED)
    # RGB in 0..1: red is the first channel. solo 0.45 passes the folder's
    # 0.4; marisa (0.73) stays under the character 0.85; one rating.
    assert set(red) == {"rating:safe", "red_background", "hakurei_reimu", "solo"}
    assert red["hakurei_reimu"][1] == "character" and red["rating:safe"][1] == "rating"
    assert red["red_background"][0] == pytest.approx(0.982, abs=1e-3)  # sigmoid(4)
    _, blue = tagger.tag(BLUE)
    assert set(blue) == {"rating:questionable", "blue_background", "solo"}


def test_wrong_folders_are_refused_with_the_reason(tmp_path: Path, tagger: Running) -> None:
    nchw = write_wd_v3_dir(tmp_path / "nchw", layout="NCHW")
    message = refusal(tagger, nchw)
    assert "takes input shape ['batch_size', 3, 32, 32] (this looks like NCHW, channels first)" in message
    assert "NHWC input [batch, size, size, 3] (BGR float 0-255)" in message
    counted = write_wd_v3_dir(tmp_path / "count", outputs=len(WD_TAGS) + 1)
    assert (
        f"model.onnx gives {len(WD_TAGS) + 1} scores per image but selected_tags.csv lists {len(WD_TAGS)} tags"
        in refusal(tagger, counted)
    )
    # A tag list that lost a line.
    short = write_wd_v3_dir(tmp_path / "short")
    lines = (short / "selected_tags.csv").read_text().splitlines()
    (short / "selected_tags.csv").write_text("\n".join(lines[:-1]) + "\n")
    assert f"gives {len(WD_TAGS)} scores per image but selected_tags.csv lists {len(WD_TAGS) - 1} tags" in refusal(
        tagger, short
    )
    only_model = tmp_path / "only-model"
    only_model.mkdir()
    (only_model / "model.onnx").write_bytes((nchw / "model.onnx").read_bytes())
    assert "not an ONNX tagger folder: model.onnx with selected_tags.csv" in refusal(tagger, only_model)
    assert "does not exist" in refusal(tagger, tmp_path / "nowhere")
    assert "must be an absolute path" in refusal(tagger, Path("relative/folder"))
    (tmp_path / "bad-thresholds").mkdir()
    bad = write_wd_v3_dir(tmp_path / "bad-thresholds")
    (bad / "thresholds.json").write_text('{"general": 2}')
    assert "threshold for 'general' must be a number within [0, 1], got 2" in refusal(tagger, bad)
    # Nothing was registered, and the running model did not change.
    assert list(tagger.stub.ListModels(tagger_pb2.ListModelsRequest()).models) == []
    with pytest.raises(grpc.RpcError) as caught:
        tagger.stub.UseModel(tagger_pb2.UseModelRequest(model_id="wd@0123456789ab"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no registered model has the id 'wd@0123456789ab'" in caught.value.details()


def test_settings_thresholds_override_the_models_per_category(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TAGGER_CATEGORY_THRESHOLDS", '{"character": 0.7}')
    settings = tagger_settings()
    assert settings.category_thresholds == {"character": 0.7}
    tagger = Tagger.from_settings(load_model_dir(write_wd_v3_dir(tmp_path / "wd"), "cpu"), settings)
    try:
        [red] = tagger.tag([(solid(RED), "red.png")])
        # hatsune_miku (0.73) passes the setting's 0.7; general stays at the model's 0.35.
        assert {name for name, _ in red} == {"rating:general", "red_theme", "1girl", "kasane_teto", "hatsune_miku"}
        assert tagger.per_category
    finally:
        tagger.close()
    with pytest.raises(ValueError, match="within \\[0, 1\\]"):
        tagger_settings(category_thresholds={"general": 1.5})
