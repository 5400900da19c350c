"""The feature extractor: concurrent calls share forward passes and get the
vectors they would get alone; a model directory can replace the default,
its heads then only fit it; a model that gives no feature vector is refused."""

from __future__ import annotations

import io
import json
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tagrate_common.images import ImageLimits
from tagrate_common.protos import rater_pb2
from tagrate_common.vision.manifest import ModelDirError
from tagrate_common.vision.pipeline import PipelineOptions
from tagrate_common.vision.rating_heads import serialize_weights
from tagrate_rater.config import RaterSettings
from tagrate_rater.extractor import FeatureExtractor, load_feature_model
from tests.tagger.modelfiles import write_wd_v3_dir

from .conftest import DEADLINE, linear_weights, sigmoid

LIMITS = ImageLimits(1 << 22, 1 << 24)


def test_concurrent_calls_are_batched_and_get_their_own_vectors(default_model, photos) -> None:
    extractor = FeatureExtractor(
        default_model, PipelineOptions(LIMITS, max_files=4, max_batch_size=8, max_queue_delay_ms=50)
    )
    try:
        assert extractor.dimensions == 1280
        names = list(photos) * 3
        alone = {name: extractor.features([(photos[name], f"{name}.jpg")])[0] for name in photos}
        batches_before, items_before = extractor.batcher.batches_run, extractor.batcher.items_run
        with ThreadPoolExecutor(len(names)) as pool:
            together = list(pool.map(lambda n: extractor.features([(photos[n], f"{n}.jpg")])[0], names))
        for name, vector in zip(names, together, strict=True):
            np.testing.assert_allclose(vector, alone[name], atol=1e-5)
        batches = extractor.batcher.batches_run - batches_before
        assert extractor.batcher.items_run - items_before == len(names) and batches < len(names)
    finally:
        extractor.close()


class MeanColourFeatures(torch.nn.Module):
    """A 4-d feature vector: mean R, G, B (0..1) and their spread."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3))
        return torch.cat([mean, x.std(dim=(1, 2, 3))[:, None]], dim=1)


def write_feature_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    with warnings.catch_warnings():  # TorchScript is deprecated upstream but is what users bring
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(MeanColourFeatures()).save(str(path / "model.pt"))
    (path / "labels.txt").write_text("feature\n")  # a manifest names a labels file; features ignore it
    manifest = {
        "name": "mean-colour-features",
        "format": "torchscript",
        "architecture": "mean-colour",
        "weights": "model.pt",
        "labels": "labels.txt",
        "input_size": 16,
        "resize": "shorter_side_crop",
        "std": [255, 255, 255],
        "activation": "none",
    }
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def test_a_torchscript_model_directory_is_an_extractor_with_its_own_heads(start_rater, tmp_path) -> None:
    """Heads published to the default extractor are not served by a rater
    running another extractor on the same store, and vice versa."""
    default = start_rater(tmp_path / "heads")
    default.publish("all", linear_weights(0.5))
    default.stop()

    custom = start_rater(tmp_path / "heads", model_dir=write_feature_dir(tmp_path / "features"))
    info = custom.stub.GetExtractorInfo(rater_pb2.GetExtractorInfoRequest(), timeout=DEADLINE)
    assert info.dimensions == 4 and info.extractor_id.startswith("mean-colour-features@")
    assert info.extractor_id.endswith(":output")
    pixels = np.zeros((32, 32, 3), np.uint8)
    pixels[..., 0] = 255
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    red = buf.getvalue()
    [vector] = custom.embed(red)
    np.testing.assert_allclose(vector, [1, 0, 0, vector[3]], atol=1e-6)
    assert list(custom.stub.ListHeads(rater_pb2.ListHeadsRequest(), timeout=DEADLINE).heads) == []

    custom.publish("bob", serialize_weights({"weight": np.array([2.0, 0, 0, 0]), "bias": np.array(-1.0)}))
    [bob] = custom.rate("bob", red).users
    assert bob.ratings[0] == pytest.approx(float(sigmoid(1.0)), abs=1e-6)
    custom.stop()

    again = start_rater(tmp_path / "heads")
    assert [h.user for h in again.stub.ListHeads(rater_pb2.ListHeadsRequest(), timeout=DEADLINE).heads] == ["all"]


def test_a_model_without_feature_vectors_is_refused(tmp_path) -> None:
    settings = RaterSettings(model_dir=write_wd_v3_dir(tmp_path / "wd"), device="cpu", heads_dir=tmp_path / "h")
    with pytest.raises(ModelDirError) as caught:
        load_feature_model(settings)
    assert "feature vectors" in str(caught.value)
