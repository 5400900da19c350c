"""Turning a decoded image into the array a vision model expects.

Two resize modes cover the models tagrate loads:

* ``shorter_side_crop`` (the embedded EfficientNet-Lite0): shorter side to
  ``resize_size`` with bicubic filtering, then a centre crop of
  ``input_size`` -- exactly what ARCHITECTURE.md specifies;
* ``pad_square`` (WD tagger v3): padded to a white square, then resized to
  ``input_size``, as the reference tagger does, so nothing is cropped away.

Normalisation is ``(x - mean) / std`` per channel on 0-255 values in the
model's channel order (EfficientNet-Lite uses 127/128, not the usual ImageNet
mean/std; WD v3 wants raw 0-255 BGR). Transparent pixels are composited on
white first, as the WD reference does and as a person sees such an image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from .torch_threads import use_torch_threads

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
        rgb = to_rgb(image)
        if self.resize == "shorter_side_crop":
            resized = resize_shorter_side_and_crop(rgb, self.resize_size or self.input_size, self.input_size)
        else:
            rgb = pad_to_square(rgb)
            if rgb.size != (self.input_size, self.input_size):
                rgb = rgb.resize((self.input_size, self.input_size), Image.Resampling.BICUBIC)
            resized = np.asarray(rgb)
        pixels = resized.astype(np.float32)
        if self.channel_order == "BGR":
            pixels = pixels[:, :, ::-1]
        if self.layout == "NCHW":
            pixels = pixels.transpose(2, 0, 1)
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        mean, std = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
        if (mean == mean[0]).all() and (std == std[0]).all():
            mean, std = mean[:1], std[:1]  # one value for every channel: no slow per-channel broadcast
        elif self.layout == "NCHW":
            mean, std = mean[:, None, None], std[:, None, None]
        if mean.any() or (std != 1).any():
            pixels -= mean
            pixels /= std
        return pixels

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


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB, upright (EXIF orientation applied), transparency
    composited on white; 16-bit greyscale is scaled, not clipped."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float32)
        if image.mode != "F" and values.max(initial=0) > 255:
            values = values / 257.0  # 16-bit range onto 0-255
        image = Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), "L")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        canvas = Image.new("RGBA", image.size, (*WHITE, 255))
        canvas.alpha_composite(image.convert("RGBA"))
        return canvas.convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def resize_shorter_side(image: Image.Image, size: int) -> Image.Image:
    """Scales so the shorter side is ``size`` (bicubic), keeping the aspect
    ratio; the longer side is truncated like torchvision's Resize."""
    target = _shorter_side_size(image.size, size)
    return image if target == image.size else image.resize(target, Image.Resampling.BICUBIC)


def _shorter_side_size(size: tuple[int, int], shorter: int) -> tuple[int, int]:
    width, height = size
    if width <= height:
        return (shorter, max(1, int(shorter * height / width)))
    return (max(1, int(shorter * width / height)), shorter)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """The central ``size`` x ``size`` square (the image must be at least that big)."""
    left, top = _crop_corner(image.size, size)
    return image.crop((left, top, left + size, top + size))


def _crop_corner(size: tuple[int, int], crop: int) -> tuple[int, int]:
    """The top-left corner of the central ``crop`` square of an image of ``size``."""
    return round((size[0] - crop) / 2), round((size[1] - crop) / 2)


def resize_shorter_side_and_crop(image: Image.Image, size: int, crop: int) -> np.ndarray:
    """:func:`resize_shorter_side` then :func:`center_crop`, as an HWC uint8
    array. An RGB image is resized by torch's antialiased bicubic filter on
    uint8 pixels, which follows Pillow's (the same kernel, a = -0.5, widened
    when shrinking; pixels within a grey level or two) in about a third of the
    time on a small CPU; on the calling thread only (see
    :mod:`.torch_threads`)."""
    target = _shorter_side_size(image.size, size)
    if image.mode != "RGB" or target == image.size or min(target) < crop:
        return np.asarray(center_crop(resize_shorter_side(image, size), crop))
    use_torch_threads(1)
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1).unsqueeze(0)  # channels-last in memory
    resized = F.interpolate(pixels, size=target[::-1], mode="bicubic", antialias=True, align_corners=False)
    left, top = _crop_corner(target, crop)
    return resized[0, :, top : top + crop, left : left + crop].permute(1, 2, 0).numpy()


def pad_to_square(image: Image.Image) -> Image.Image:
    """Centres the image on a white square whose side is its longer side."""
    width, height = image.size
    side = max(width, height)
    if width == height:
        return image
    canvas = Image.new("RGB", (side, side), WHITE)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas
