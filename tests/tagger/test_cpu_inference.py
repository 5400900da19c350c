"""What makes the default model fast on a CPU must not change what it says:
folded BatchNorms, batches split into single-threaded CPU streams, the
cropped-region resize, letterboxing and reduced-scale JPEG decoding each give
the same results as the plain way, to float rounding or within a grey level
or two."""

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
from tagrate_common.vision.loaders import load_default_model
from tagrate_common.vision.pipeline import ImagePipeline, PipelineOptions
from tagrate_common.vision.preprocess import EFFICIENTNET_LITE, letterbox, shorter_side_crop

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


def _resize_then_crop(image: Image.Image, size: int, crop: int) -> np.ndarray:
    """The plain way: the whole image resized (shorter side to ``size``), then its centre cropped."""
    width, height = image.size
    scale = size / min(width, height)
    target = (size, int(scale * height)) if width <= height else (int(scale * width), size)
    resized = image.convert("RGB").resize(target, Image.Resampling.BICUBIC)
    left, top = round((target[0] - crop) / 2), round((target[1] - crop) / 2)
    return np.asarray(resized.crop((left, top, left + crop, top + crop)), np.int16)


@pytest.mark.parametrize("size", [(451, 300), (300, 451), (512, 512), (1000, 257), (257, 1000), (640, 427), (100, 80)])
def test_cropped_region_resize_matches_resize_then_crop(size) -> None:
    image = Image.fromarray(skimage.data.astronaut()).resize(size, Image.Resampling.LANCZOS)
    got = np.asarray(shorter_side_crop(image, 256, 224), np.int16)
    assert got.shape == (224, 224, 3)
    difference = np.abs(got - _resize_then_crop(image, 256, 224))
    # Pillow may run its two passes in the other order for a region (8-bit
    # rounding in between): a grey level or two, a few sharp pixels at most 4.
    assert difference.mean() < 0.2 and np.percentile(difference, 99.9) <= 2 and difference.max() <= 4


def test_greyscale_is_cropped_like_rgb() -> None:
    grey = Image.fromarray(skimage.data.camera())  # mode L: resampled as is, made RGB afterwards
    got = np.asarray(shorter_side_crop(grey, 256, 224), np.int16)
    assert (got[..., 0] == got[..., 1]).all() and (got[..., 0] == got[..., 2]).all()
    assert np.abs(got - _resize_then_crop(grey, 256, 224)).max() <= 1


@pytest.mark.parametrize("size", [(451, 300), (300, 451), (640, 427), (1000, 257), (50_000, 1), (2, 9_000)])
def test_letterbox_resizes_the_picture_whole_and_pads_it_white(size) -> None:
    image = Image.fromarray(skimage.data.astronaut()).resize(size, Image.Resampling.LANCZOS)
    got = np.asarray(letterbox(image, 224), np.int16)
    scale = 224 / max(size)
    fitted = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
    left, top = (224 - fitted[0]) // 2, (224 - fitted[1]) // 2
    expected = np.asarray(image.resize(fitted, Image.Resampling.BICUBIC), np.int16)
    # Unlike padding first (the WD reference), the picture lands on whole
    # pixels: the same picture up to half a pixel's placement at its edges.
    assert np.abs(got[top : top + fitted[1], left : left + fitted[0]] - expected).max() <= 2
    padding = np.ones(got.shape[:2], bool)
    padding[top : top + fitted[1], left : left + fitted[0]] = False
    assert (got[padding] == 255).all()


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
        PipelineOptions(
            LIMITS, max_files=4, batching=batching, max_batch_size=4, max_queue_delay_ms=0, max_queue_size=8
        ),
        name="test",
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


def test_the_tagger_and_the_rater_take_their_model_settings_from_one_place() -> None:
    """Both services build their pipeline from PipelineOptions.from_settings:
    every setting arrives, CPU streams included, and unset ones follow the
    device."""
    from tagrate_rater.config import RaterSettings
    from tagrate_rater.extractor import FeatureExtractor
    from tagrate_tagger.tagging import Tagger

    from .conftest import tagger_settings

    model = load_default_model("cpu")
    values = {
        "max_upload_bytes": 3 << 20,
        "max_image_pixels": 4_000_000,
        "max_bulk_files": 7,
        "max_batch_size": 3,
        "max_queue_delay_ms": 12.5,
        "max_queue_size": 9,
        "cpu_streams": 2,
        "torch_threads": 2,
    }
    try:
        tagger = Tagger.from_settings(model, tagger_settings(**values))
        extractor = FeatureExtractor.from_settings(model, RaterSettings(device="cpu", **values))
        try:
            for pipeline in (tagger.pipeline, extractor.pipeline):
                assert pipeline.limits == ImageLimits(3 << 20, 4_000_000) and pipeline.max_files == 7
                batcher = pipeline.batcher
                assert (batcher.max_batch_size, batcher.max_queue_delay, batcher.max_queue_size) == (3, 0.0125, 9)
                assert pipeline.warm_up_sizes == (1, 2)
            assert model.cpu_streams is not None and (model.cpu_streams.streams, model.cpu_streams.threads) == (2, 2)
        finally:
            tagger.close()
            extractor.close()
        options = PipelineOptions.from_settings(tagger_settings(batching=False), "cuda")
        assert (options.batching, options.max_batch_size, options.max_queue_delay_ms) == (False, 32, 5.0)
        assert PipelineOptions.from_settings(tagger_settings(), "cpu").max_queue_delay_ms == 0.0
    finally:
        model.close()
