"""What makes the default model fast on a CPU must not change what it says:
folded BatchNorms, batches split into single-threaded CPU streams, the
cropped-region resize and reduced-scale JPEG decoding each give the same
results as the plain way, to float rounding or within a grey level or two."""

from __future__ import annotations

import io

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from tagrate_common.batcher import InFlight
from tagrate_common.errors import PayloadTooLarge
from tagrate_common.images import ImageLimits, decode_image
from tagrate_common.vision.efficientnet_lite import fold_for_inference, load_efficientnet_lite0
from tagrate_common.vision.modeldir import load_default_model
from tagrate_common.vision.pipeline import ImagePipeline
from tagrate_common.vision.preprocess import (
    EFFICIENTNET_LITE,
    center_crop,
    resize_shorter_side,
    resize_shorter_side_and_crop,
)

from .conftest import jpeg

LIMITS = ImageLimits(64 << 20, 100_000_000)


def test_folding_batchnorm_keeps_outputs_and_features() -> None:
    model = load_efficientnet_lite0()
    folded = fold_for_inference(model)
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(folded.forward_features(x), model.forward_features(x), rtol=1e-4, atol=1e-4)
        # Odd sizes exercise the asymmetric TF "SAME" padding of stride-2 layers.
        odd = torch.randn(1, 3, 225, 231, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(folded(odd), model(odd), rtol=1e-4, atol=1e-4)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules()) == 0


def test_folding_needs_eval_mode() -> None:
    with pytest.raises(ValueError, match="eval mode"):
        fold_for_inference(load_efficientnet_lite0().train())


def _batch(model, count: int) -> np.ndarray:
    photos = [skimage.data.chelsea(), skimage.data.coffee(), skimage.data.astronaut()]
    return np.stack(
        [model.preprocess(decode_image(jpeg(photos[i % 3]), "p.jpg", LIMITS)) for i in range(count)]
        + [np.zeros(model.input_shape, np.float32)]
    )


def test_cpu_streams_give_the_same_rows_in_the_same_order() -> None:
    model = load_default_model("cpu")
    batch = _batch(model, 4)
    model.use_cpu_streams(1)
    assert model.cpu_streams is None
    one_pass = model.predict(batch)
    features = model.forward_features(batch)
    model.use_cpu_streams(2, 2)
    try:
        streams = model.cpu_streams
        assert streams is not None and (streams.streams, streams.threads) == (2, 2)
        np.testing.assert_allclose(model.predict(batch), one_pass, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(model.forward_features(batch), features, rtol=1e-4, atol=1e-5)
        # A lone image with company waiting runs single-threaded: same scores.
        np.testing.assert_allclose(model.predict(batch[:1], alone=False), one_pass[:1], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(model.predict(batch[:1], alone=True), one_pass[:1], rtol=1e-4, atol=1e-6)
        model.use_cpu_streams(2, 2)  # the same again (another service sharing the model): kept
        assert model.cpu_streams is streams
    finally:
        model.close()


def test_cpu_streams_are_off_on_a_gpu() -> None:
    model = load_default_model("cpu")
    model.device = "cuda"  # only the setting is looked at; nothing runs
    model.use_cpu_streams(4, 2)
    assert model.cpu_streams is None


@pytest.mark.parametrize("size", [(451, 300), (300, 451), (512, 512), (1000, 257), (257, 1000), (640, 427), (100, 80)])
def test_cropped_region_resize_matches_resize_then_crop(size) -> None:
    image = Image.fromarray(skimage.data.astronaut()).resize(size, Image.Resampling.LANCZOS)
    expected = np.asarray(center_crop(resize_shorter_side(image, 256), 224), np.int16)
    got = resize_shorter_side_and_crop(image, 256, 224).astype(np.int16)
    assert got.shape == (224, 224, 3)
    difference = np.abs(got - expected)  # torch's and Pillow's rounding differ
    assert difference.max() <= 2 and difference.mean() < 0.2


def test_other_modes_take_pillows_path() -> None:
    grey = Image.fromarray(skimage.data.camera())  # mode L: the model converts it to RGB first
    expected = np.asarray(center_crop(resize_shorter_side(grey, 256), 224))
    np.testing.assert_array_equal(resize_shorter_side_and_crop(grey, 256, 224), expected)


def _large_jpeg() -> bytes:
    big = Image.fromarray(skimage.data.chelsea()).resize((2706, 1800), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    big.save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def test_large_jpegs_decode_at_reduced_scale_with_nearly_the_same_input() -> None:
    data = _large_jpeg()
    full = decode_image(data, "big.jpg", LIMITS)
    reduced = decode_image(data, "big.jpg", LIMITS, EFFICIENTNET_LITE.decode_floor)
    assert full.size == (2706, 1800)
    assert reduced.size == (1353, 900)  # 1/2: 1/4 would fall under twice the 384x256 resize
    difference = np.abs(EFFICIENTNET_LITE(reduced) - EFFICIENTNET_LITE(full)) * 128  # in grey levels
    assert difference.mean() < 0.5 and difference.max() <= 4


def test_small_jpegs_decode_in_full() -> None:
    data = jpeg(skimage.data.coffee())  # 600x400: under twice the model's size
    assert decode_image(data, "c.jpg", LIMITS, EFFICIENTNET_LITE.decode_floor).size == (600, 400)


def test_the_pixel_limit_applies_to_the_stored_size() -> None:
    with pytest.raises(PayloadTooLarge, match="2706x1800"):
        decode_image(_large_jpeg(), "big.jpg", ImageLimits(64 << 20, 2_000_000), EFFICIENTNET_LITE.decode_floor)


def test_in_flight_counts_until_the_block_ends_even_on_error() -> None:
    in_flight = InFlight()
    with in_flight.track(3):
        assert in_flight.count == 3
        with pytest.raises(RuntimeError), in_flight.track(2):
            assert in_flight.count == 5
            raise RuntimeError("decode failed")
        assert in_flight.count == 3
    assert in_flight.count == 0


def _recording_pipeline(model, batching: bool, seen: list[bool]) -> ImagePipeline:
    return ImagePipeline(
        model,
        lambda batch, alone: seen.append(alone) or np.zeros((len(batch), 1), np.float32),
        name="test",
        limits=LIMITS,
        max_files=4,
        batching=batching,
        max_batch_size=4,
        max_queue_delay_ms=0,
        max_queue_size=8,
        warm_up=lambda sizes: None,
    )


def test_a_batch_is_alone_only_when_no_other_image_is_on_its_way(default_model) -> None:
    seen: list[bool] = []
    pipeline = _recording_pipeline(default_model, True, seen)
    try:
        image = np.zeros(default_model.input_shape, np.float32)
        pipeline.run([(jpeg(skimage.data.coffee()), "c.jpg")])
        assert seen == [True]
        # Another call's image still being decoded: the batch has company.
        with pipeline._in_flight.track(2):
            pipeline.batcher.run(image)
        assert seen == [True, False]
    finally:
        pipeline.close()


def test_without_batching_every_image_runs_alone(default_model) -> None:
    seen: list[bool] = []
    pipeline = _recording_pipeline(default_model, False, seen)
    try:
        with pipeline._in_flight.track(2):
            pipeline.batcher.run(np.zeros(default_model.input_shape, np.float32))
        assert seen == [True]
    finally:
        pipeline.close()


def test_the_cpu_model_runs_as_a_frozen_trace_with_the_eager_outputs() -> None:
    model = load_default_model("cpu")
    assert isinstance(model._scores, torch.jit.ScriptModule)
    assert isinstance(model._features, torch.jit.ScriptModule)
    batch = _batch(model, 3)
    x = model._input(batch)
    with torch.inference_mode():
        torch.testing.assert_close(model._scores(x), model.module(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model._features(x), model.module.forward_features(x), rtol=1e-5, atol=1e-5)
