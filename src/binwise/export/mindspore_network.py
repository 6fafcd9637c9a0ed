"""The MindSpore tutorial's MobileNetV2, rebuilt from its description: the network of the MINDIR
export (``mindir_worker``) and of the checkpoint cross-check tests.

Runs only in a Python with MindSpore (scripts/setup-mindspore.sh makes .venv-mindspore); binwise
itself never imports it. The attribute names are what matter: they give the checkpoint parameter
names the tutorial's code saves and loads.
"""

import mindspore.nn as nn
from mindspore import ops

# t (expansion), c (output channels), n (repeats), s (stride of the first repeat)
SETTING = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2],
           [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]


def make_divisible(value, divisor=8):
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def conv(cin, cout, kernel_size, stride, groups, pad_mode):
    """The tutorial pads symmetrically ("pad"); "same" is TensorFlow's padding, for TFLite weights."""
    if pad_mode == "same":
        return nn.Conv2d(cin, cout, kernel_size, stride, pad_mode="same", group=groups)
    return nn.Conv2d(cin, cout, kernel_size, stride, pad_mode="pad", padding=(kernel_size - 1) // 2,
                     group=groups)


class ConvBNReLU(nn.Cell):
    def __init__(self, cin, cout, kernel_size=3, stride=1, groups=1, pad_mode="pad"):
        super().__init__()
        conv_layer = conv(cin, cout, kernel_size, stride, groups, pad_mode)
        self.features = nn.SequentialCell([conv_layer, nn.BatchNorm2d(cout), nn.ReLU6()])

    def construct(self, x):
        return self.features(x)


class InvertedResidual(nn.Cell):
    def __init__(self, cin, cout, stride, expand_ratio, pad_mode):
        super().__init__()
        hidden = int(round(cin * expand_ratio))
        self.residual = stride == 1 and cin == cout
        layers = [ConvBNReLU(cin, hidden, kernel_size=1)] if expand_ratio != 1 else []
        layers += [ConvBNReLU(hidden, hidden, stride=stride, groups=hidden, pad_mode=pad_mode),
                   nn.Conv2d(hidden, cout, 1, has_bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.SequentialCell(layers)

    def construct(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class Backbone(nn.Cell):
    def __init__(self, width_mult=1.0, pad_mode="pad"):
        super().__init__()
        channels = make_divisible(32 * width_mult)
        self.out_channels = make_divisible(1280 * max(1.0, width_mult))
        layers = [ConvBNReLU(3, channels, stride=2, pad_mode=pad_mode)]
        for t, c, n, s in SETTING:
            out = make_divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(channels, out, s if i == 0 else 1, t, pad_mode))
                channels = out
        layers.append(ConvBNReLU(channels, self.out_channels, kernel_size=1))
        self.features = nn.SequentialCell(layers)

    def construct(self, x):
        return self.features(x)


class GlobalAvgPooling(nn.Cell):
    def construct(self, x):
        return ops.mean(x, (2, 3))


class Head(nn.Cell):
    def __init__(self, in_channels, num_classes):
        super().__init__()
        self.head = nn.SequentialCell([GlobalAvgPooling(), nn.Dense(in_channels, num_classes)])

    def construct(self, x):
        return self.head(x)


class Combine(nn.Cell):
    """Backbone then head; like the tutorial, without adding its own prefix to parameter names."""

    def __init__(self, backbone, head):
        super().__init__(auto_prefix=False)
        self.backbone = backbone
        self.head = head

    def construct(self, x):
        return self.head(self.backbone(x))


def tutorial_network(num_classes, width_mult=1.0, pad_mode="pad"):
    backbone = Backbone(width_mult, pad_mode)
    return Combine(backbone, Head(backbone.out_channels, num_classes))
