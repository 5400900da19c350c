"""Turning a decoded image into the array a vision model expects.

Two resize modes cover the models tagrate loads:

* ``shorter_side_crop`` (the embedded EfficientNet-Lite0): shorter side to
  ``resize_size`` with bicubic filtering, then a centre crop of
  ``input_size`` -- exactly what ARCHITECTURE.md specifies. Only the region
  the crop will see is resampled (plus the filter's reach), so the work and
  memory are crop-sized whatever the aspect ratio: a 50000x1 image does not
  become a 12.8M x 256 one first;
* ``pad_square`` (WD tagger v3): resized so its longer side is
  ``input_size``, then centred on a white square (letterboxed), so nothing
  is cropped away. The reference tagger pads first and then resizes, the same
  picture except at the image's edges, but a padded 50000x1 image would be a
  50000x50000 canvas.

Images of any aspect ratio are accepted; every resize is held to
``RESAMPLE_BUDGET_PIXELS`` (see :func:`tagrate_common.image_resize.resize_upright`).

Normalisation is ``(x - mean) / std`` per channel on 0-255 values in the
model's channel order (EfficientNet-Lite uses 127/128, not the usual ImageNet
mean/std; WD v3 wants raw 0-255 BGR). Transparent pixels are composited on
white first, as the WD reference does and as a person sees such an image.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from ..image_resize import resize_upright, upright_size

ResizeMode = Literal["shorter_side_crop", "pad_square"]
WHITE = (255, 255, 255)


@dataclass(frozen=True)
class Preprocessing:
    """How one model wants its input; calling it converts one image."""

    input_size: int
    resize: ResizeMode
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    channel_order: Literal["RGB", "BGR"] = "RGB"
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    # shorter_side_crop only: the shorter side's length before the crop.
    resize_size: int | None = None

    def __call__(self, image: Image.Image) -> np.ndarray:
        """One image as float32, CHW or HWC per ``layout`` (no batch axis)."""
        if self.resize == "shorter_side_crop":
            resized = shorter_side_crop(image, self.resize_size or self.input_size, self.input_size)
        else:
            resized = letterbox(image, self.input_size)
        # 8-bit pixels, reordered as views; the float32 array is written once,
        # by the first of the ufuncs below (the same float32 arithmetic as
        # converting first and normalising in place, a third of the passes).
        pixels = np.asarray(resized)
        if self.channel_order == "BGR":
            pixels = pixels[:, :, ::-1]
        if self.layout == "NCHW":
            pixels = pixels.transpose(2, 0, 1)
        out = np.empty(pixels.shape, np.float32)
        mean, std = self._mean_std
        if mean is None:
            np.copyto(out, pixels)
            return out
        np.subtract(pixels, mean, out=out, dtype=np.float32)
        np.divide(out, std, out=out)
        return out

    @functools.cached_property
    def _mean_std(self) -> tuple[np.ndarray | None, np.ndarray]:
        """(mean, std) shaped to broadcast over one image; mean None when
        the normalisation is the identity."""
        mean, std = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
        if (mean == mean[0]).all() and (std == std[0]).all():
            mean, std = mean[:1], std[:1]  # one value for every channel: no slow per-channel broadcast
        elif self.layout == "NCHW":
            mean, std = mean[:, None, None], std[:, None, None]
        if not (mean.any() or (std != 1).any()):
            return None, std
        return mean, std

    def decode_floor(self, size: tuple[int, int]) -> tuple[int, int]:
        """How small an image of ``size`` (width, height) may be decoded
        before preprocessing: twice the size it is resized to. A large JPEG
        then decodes at 1/2, 1/4 or 1/8 scale (DCT scaling, several times
        cheaper) and the bicubic resize still shrinks it by at least 2x, so
        the result stays within a grey level or so of a full decode (the same
        trade as Pillow's ``thumbnail``). Photos under twice the model's size
        decode in full."""
        width, height = size
        if self.resize == "shorter_side_crop":
            scale = (self.resize_size or self.input_size) / min(width, height)
        else:
            scale = self.input_size / max(width, height)
        return (min(width, math.ceil(2 * width * scale)), min(height, math.ceil(2 * height * scale)))


# ARCHITECTURE.md's preprocessing for the embedded EfficientNet-Lite0.
EFFICIENTNET_LITE = Preprocessing(
    input_size=224, resize="shorter_side_crop", resize_size=256, mean=(127.0,) * 3, std=(128.0,) * 3
)


def shorter_side_crop(image: Image.Image, size: int, crop: int) -> Image.Image:
    """The upright image (EXIF orientation applied) scaled so its shorter
    side is ``size`` (bicubic; the longer side truncated like torchvision's
    Resize), then its central ``crop`` square, as 8-bit RGB. Only the crop's
    region is resampled, so the result is Pillow's resize-then-crop to the
    last bit (the filter still reads the pixels around the region) while the
    work and memory stay crop-sized."""
    width, height = upright_size(image)
    target = _shorter_side_size((width, height), size)
    left, top = _crop_corner(target, crop)
    if left < 0 or top < 0:
        raise ValueError(f"a {crop} pixel crop does not fit in a {size} pixel resize")
    x_scale, y_scale = width / target[0], height / target[1]
    box = (left * x_scale, top * y_scale, (left + crop) * x_scale, (top + crop) * y_scale)
    return resize_upright(image, (crop, crop), box)


def _shorter_side_size(size: tuple[int, int], shorter: int) -> tuple[int, int]:
    width, height = size
    if width <= height:
        return (shorter, max(1, int(shorter * height / width)))
    return (max(1, int(shorter * width / height)), shorter)


def _crop_corner(size: tuple[int, int], crop: int) -> tuple[int, int]:
    """The top-left corner of the central ``crop`` square of an image of ``size``."""
    return round((size[0] - crop) / 2), round((size[1] - crop) / 2)


def letterbox(image: Image.Image, side: int) -> Image.Image:
    """The upright image (EXIF orientation applied) as 8-bit RGB, resized
    (bicubic) so its longer side is ``side``, centred on a white ``side``
    square."""
    width, height = upright_size(image)
    scale = side / max(width, height)
    fitted = (min(side, max(1, round(width * scale))), min(side, max(1, round(height * scale))))
    rgb = resize_upright(image, fitted)
    if rgb.size == (side, side):
        return rgb
    canvas = Image.new("RGB", (side, side), WHITE)
    canvas.paste(rgb, ((side - rgb.width) // 2, (side - rgb.height) // 2))
    return canvas
