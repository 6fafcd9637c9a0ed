"""MobileNetV2 (Sandler et al., 2018) as the MindSpore tutorial defines it, in plain PyTorch.

The network is split into a backbone (convolutional features) and a head (pooling + linear), so the
backbone can be frozen and its features cached while only the head trains.

Parameter names follow torchvision's layout under ``backbone.`` and ``head.``; the weight
importers in ``binwise.weights`` translate to and from MindSpore, TFLite and torchvision names.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

# t (expansion), c (output channels), n (repeats), s (stride of the first repeat)
DEFAULT_INVERTED_RESIDUAL_SETTING: list[list[int]] = [
    [1, 16, 1, 1],
    [6, 24, 2, 2],
    [6, 32, 3, 2],
    [6, 64, 4, 2],
    [6, 96, 3, 1],
    [6, 160, 3, 2],
    [6, 320, 1, 1],
]

PADDING_MODES = ("symmetric", "tf_same")


def make_divisible(value: float, divisor: int, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never going more than 10% below it."""
    if min_value is None:
        min_value = divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class TFSameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's 'SAME' padding, computed from the input size at run time.

    For a stride-2 3x3 conv on an even size this pads 0 before and 1 after, which symmetric
    PyTorch padding cannot express; weights trained in TensorFlow need it to reproduce their outputs.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, kernel, stride in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max(kernel - (stride if size % stride == 0 else size % stride), 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def conv2d(in_channels: int, out_channels: int, kernel_size: int, stride: int, groups: int, padding: str) -> nn.Conv2d:
    """A bias-free conv whose output keeps ceil(size / stride) under either padding mode."""
    if padding == "tf_same" and stride > 1:
        return TFSameConv2d(in_channels, out_channels, kernel_size, stride, 0, groups=groups, bias=False)
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False)


class ConvBNReLU(nn.Sequential):
    """Convolution, batch norm, ReLU6."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, padding: str = "symmetric"):
        super().__init__(
            conv2d(in_channels, out_channels, kernel_size, stride, groups, padding),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """Expand (1x1), depthwise (3x3), project (1x1, linear); residual when the shape is kept."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int,
                 padding: str = "symmetric"):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = int(round(in_channels * expand_ratio))
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU(in_channels, hidden, kernel_size=1, padding=padding))
        layers += [
            ConvBNReLU(hidden, hidden, stride=stride, groups=hidden, padding=padding),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_residual:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2Backbone(nn.Module):
    """The convolutional part: stem, inverted residual blocks, 1x1 conv to ``out_channels``."""

    def __init__(self, width_mult: float = 1.0, inverted_residual_setting: list[list[int]] | None = None,
                 round_nearest: int = 8, input_channel: int = 32, last_channel: int = 1280,
                 padding: str = "symmetric"):
        super().__init__()
        if padding not in PADDING_MODES:
            raise ValueError(f"padding must be one of {PADDING_MODES}, got {padding!r}")
        setting = inverted_residual_setting or DEFAULT_INVERTED_RESIDUAL_SETTING
        if any(len(row) != 4 for row in setting):
            raise ValueError(f"inverted_residual_setting rows must be [t, c, n, s], got {setting}")
        channels = make_divisible(input_channel * width_mult, round_nearest)
        self.out_channels = make_divisible(last_channel * max(1.0, width_mult), round_nearest)
        layers: list[nn.Module] = [ConvBNReLU(3, channels, stride=2, padding=padding)]
        for expand_ratio, c, repeats, first_stride in setting:
            out = make_divisible(c * width_mult, round_nearest)
            for i in range(repeats):
                stride = first_stride if i == 0 else 1
                layers.append(InvertedResidual(channels, out, stride, expand_ratio, padding=padding))
                channels = out
        layers.append(ConvBNReLU(channels, self.out_channels, kernel_size=1, padding=padding))
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class MobileNetV2Head(nn.Module):
    """Global average pooling, optional dropout, linear: logits (calibration turns them into probabilities)."""

    def __init__(self, in_channels: int = 1280, num_classes: int = 1000, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Accepts a feature map (N, C, H, W) or already pooled features (N, C)."""
        if x.dim() == 4:
            x = x.mean((2, 3))
        return self.classifier(self.dropout(x))


@dataclass
class MobileNetV2Config:
    """Everything needed to rebuild the architecture; saved in every model file."""

    num_classes: int = 1000
    width_mult: float = 1.0
    round_nearest: int = 8
    input_channel: int = 32
    last_channel: int = 1280
    dropout: float = 0.0
    padding: str = "symmetric"
    inverted_residual_setting: list[list[int]] = field(
        default_factory=lambda: [row[:] for row in DEFAULT_INVERTED_RESIDUAL_SETTING])

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "MobileNetV2Config":
        if "activation" in data and data["activation"] is None:  # files before 2026-12-08 name a head activation, null
            data = {k: v for k, v in data.items() if k != "activation"}
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown architecture fields: {sorted(unknown)}")
        return cls(**data)


class MobileNetV2(nn.Module):
    """Backbone + head, kept as separate submodules so either can be used alone."""

    def __init__(self, config: MobileNetV2Config | None = None, **overrides):
        super().__init__()
        config = config or MobileNetV2Config(**overrides)
        self.config = config
        self.backbone = MobileNetV2Backbone(config.width_mult, config.inverted_residual_setting,
                                            config.round_nearest, config.input_channel,
                                            config.last_channel, config.padding)
        self.head = MobileNetV2Head(self.backbone.out_channels, config.num_classes, config.dropout)
        initialize_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def reset_head(self) -> None:
        """The tutorial's head init (N(0, 0.01) weights, zero bias), drawn from torch's generator."""
        nn.init.normal_(self.head.classifier.weight, 0, 0.01)
        nn.init.zeros_(self.head.classifier.bias)


def initialize_weights(module: nn.Module) -> None:
    """The tutorial's init: conv He-normal (fan_out), BN weight 1 / bias 0, linear N(0, 0.01) / bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
