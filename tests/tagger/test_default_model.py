"""The embedded EfficientNet-Lite0: our module matches the packaged weights,
pads like TensorFlow, preprocesses as ARCHITECTURE.md says, and gives
sensible labels on real photographs."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tagrate_common.images import ImageLimits, decode_image
from tagrate_common.vision.efficientnet_lite import (
    PACKAGE_WEIGHTS_SHA256,
    Conv2dSame,
    EfficientNetLite0,
    load_efficientnet_lite0,
    package_weights_path,
)
from tagrate_common.vision.loaders import DEFAULT_LABELS_FILE, load_default_model
from tagrate_common.vision.preprocess import EFFICIENTNET_LITE

from .conftest import PHOTOS, png

LIMITS = ImageLimits(20 * 1024 * 1024, 50_000_000)


def top5(model, data: bytes) -> list[str]:
    image = decode_image(data, "photo.jpg", LIMITS)
    scores = model.predict(model.preprocess(image)[None])[0]
    return [model.labels.names[i] for i in np.argsort(-scores)[:5]]


@pytest.mark.parametrize("photo", sorted(PHOTOS))
def test_real_photos_get_their_class_in_the_top_5(default_model, photos, photo) -> None:
    assert PHOTOS[photo] in top5(default_model, photos[photo])


def test_the_cat_is_a_cat_and_the_coffee_is_coffee(default_model, photos) -> None:
    assert top5(default_model, photos["chelsea"])[0] in {"tabby_cat", "tiger_cat", "egyptian_mau"}
    assert top5(default_model, photos["coffee"])[0] == "espresso"


def test_scores_are_probabilities(default_model, photos) -> None:
    image = decode_image(photos["coffee"], "c.jpg", LIMITS)
    scores = default_model.predict(default_model.preprocess(image)[None])
    assert scores.shape == (1, 1000) and scores.dtype == np.float32
    assert np.all(scores >= 0) and abs(float(scores.sum()) - 1.0) < 1e-4


def test_module_keys_match_the_package_weights_exactly() -> None:
    packaged = torch.load(package_weights_path(), map_location="cpu", weights_only=True)
    ours = EfficientNetLite0().state_dict()
    assert set(ours) == set(packaged)
    assert all(ours[k].shape == packaged[k].shape for k in ours)


def test_features_are_1280_d_and_feed_the_classifier(default_model, photos) -> None:
    image = decode_image(photos["chelsea"], "c.jpg", LIMITS)
    batch = np.stack([default_model.preprocess(image)] * 2)
    features = default_model.forward_features(batch)
    assert features.shape == (2, 1280)
    with torch.inference_mode():
        logits = default_model.module.classify(torch.from_numpy(features))
    np.testing.assert_allclose(logits.softmax(-1).numpy(), default_model.predict(batch), rtol=1e-4, atol=1e-6)


def test_weights_with_the_wrong_hash_are_refused(tmp_path) -> None:
    tampered = tmp_path / "weights.pth"
    shutil.copyfile(package_weights_path(), tampered)
    with open(tampered, "r+b") as f:
        f.seek(-100, io.SEEK_END)
        byte = f.read(1)
        f.seek(-100, io.SEEK_END)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ValueError, match="sha256"):
        load_efficientnet_lite0(tampered, expected_sha256=PACKAGE_WEIGHTS_SHA256)


def test_same_padding_puts_the_extra_pixel_bottom_right() -> None:
    conv = Conv2dSame(1, 1, 3, stride=2)
    torch.nn.init.normal_(conv.weight)
    x = torch.randn(1, 1, 8, 8)
    # TF SAME for an even input, k=3, s=2: pad 0 top/left and 1 bottom/right.
    expected = F.conv2d(F.pad(x, [0, 1, 0, 1]), conv.weight, stride=2)
    assert torch.allclose(conv(x), expected, atol=1e-6)
    assert conv(x).shape == (1, 1, 4, 4)


def test_labels_are_the_1000_imagenet_classes_in_order(default_model) -> None:
    names = default_model.labels.names
    assert len(names) == 1000 and len(set(names)) == 1000
    assert (names[0], names[281], names[967], names[999]) == ("tench", "tabby_cat", "espresso", "toilet_paper")
    assert all(n == n.lower() and " " not in n for n in names)
    assert DEFAULT_LABELS_FILE.read_text().splitlines() == list(names)


def test_preprocessing_resizes_the_shorter_side_and_crops_the_centre() -> None:
    # 300 wide, 600 tall: top half red, bottom half blue. Shorter side to 256
    # makes it 256x512; the centre 224 crop keeps 112 rows of each.
    pixels = np.zeros((600, 300, 3), np.uint8)
    pixels[:300, :, 0] = 255
    pixels[300:, :, 2] = 255
    out = EFFICIENTNET_LITE(Image.fromarray(pixels))
    assert out.shape == (3, 224, 224) and out.dtype == np.float32
    on, off = (255 - 127) / 128, (0 - 127) / 128
    np.testing.assert_allclose(out[:, 0, 0], [on, off, off], atol=1e-6)  # red
    np.testing.assert_allclose(out[:, 223, 223], [off, off, on], atol=1e-6)  # blue
    np.testing.assert_allclose(out[:, 100, :], np.array([[on], [off], [off]]).repeat(224, 1), atol=1e-6)
    np.testing.assert_allclose(out[:, 124, :], np.array([[off], [off], [on]]).repeat(224, 1), atol=1e-6)


def test_transparency_is_composited_on_white() -> None:
    transparent = Image.new("RGBA", (40, 30), (0, 0, 0, 0))
    image = decode_image(png(transparent), "t.png", LIMITS)
    out = EFFICIENTNET_LITE(image)
    np.testing.assert_allclose(out, (255 - 127) / 128, atol=1e-6)


def test_greyscale_and_palette_images_are_accepted(default_model) -> None:
    for mode in ("L", "P", "1"):
        image = Image.new("RGB", (50, 70), (200, 30, 30)).convert(mode)
        assert default_model.preprocess(decode_image(png(image), "g.png", LIMITS)).shape == (3, 224, 224)


def test_the_default_model_id_is_stable() -> None:
    first, second = load_default_model("cpu"), load_default_model("cpu")
    assert first.model_id == second.model_id
    assert first.model_id.startswith("efficientnet-lite0-imagenet@") and len(first.model_id.split("@")[1]) == 12
