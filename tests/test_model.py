import pytest
import torch
import torchvision

from binwise.model.network import (DEFAULT_INVERTED_RESIDUAL_SETTING, InvertedResidual, MobileNetV2, MobileNetV2Config, TFSameConv2d, make_divisible)


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_parameter_count_matches_torchvision():
    model = MobileNetV2(num_classes=1000)
    assert n_params(model) == 3_504_872
    assert n_params(model) == n_params(torchvision.models.mobilenet_v2())


@pytest.mark.parametrize("width", [0.35, 0.5, 0.75, 1.0, 1.4])
def test_widths_build_and_run(width):
    model = MobileNetV2(num_classes=26, width_mult=width).eval()
    assert n_params(model) == n_params(torchvision.models.mobilenet_v2(num_classes=26, width_mult=width))
    with torch.no_grad():
        features = model.backbone(torch.randn(2, 3, 224, 224))
        logits = model.head(features)
    assert features.shape == (2, model.backbone.out_channels, 7, 7)
    assert model.backbone.out_channels == (1792 if width == 1.4 else 1280)
    assert logits.shape == (2, 26)


def test_make_divisible():
    assert make_divisible(32 * 0.35, 8) == 16  # never below the divisor
    assert make_divisible(24 * 0.75, 8) == 24  # 18 rounds up to stay within 10%
    assert make_divisible(1280 * 1.4, 8) == 1792
    assert make_divisible(37, 8) == 40


def test_residual_only_where_shape_is_kept():
    model = MobileNetV2()
    blocks = [m for m in model.backbone.features if isinstance(m, InvertedResidual)]
    expected = []
    for t, c, n, s in DEFAULT_INVERTED_RESIDUAL_SETTING:
        expected += [False] + [True] * (n - 1)
    # the very first block (t=1, 32 -> 16) changes channels, so no residual even at stride 1
    assert [b.use_residual for b in blocks] == expected
    assert len(blocks) == 17


def test_residual_adds_input():
    block = InvertedResidual(16, 16, 1, 6).eval()
    x = torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        assert torch.allclose(block(x), x + block.conv(x))


@pytest.mark.parametrize("size", [224, 225, 193])
def test_tf_same_padding_keeps_ceil_size_and_pads_after(size):
    conv = TFSameConv2d(1, 1, 3, 2, 0, bias=False)
    torch.nn.init.ones_(conv.weight)
    x = torch.ones(1, 1, size, size)
    out = conv(x)
    assert out.shape[-1] == -(-size // 2)
    if size % 2 == 0:
        # 0 before, 1 after: the first output sees a full 3x3 window, the last one a 2x2
        assert out[0, 0, 0, 0] == 9 and out[0, 0, -1, -1] == 4
    else:
        assert out[0, 0, 0, 0] == 4 and out[0, 0, -1, -1] == 4


def test_padding_modes_differ_only_in_stride2_convs():
    sym = MobileNetV2(padding="symmetric")
    tf = MobileNetV2(padding="tf_same")
    tf.load_state_dict(sym.state_dict())
    n_tf = sum(isinstance(m, TFSameConv2d) for m in tf.modules())
    assert n_tf == 1 + 4  # stem + the 4 stride-2 depthwise convs
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        a, b = sym.eval().backbone(x), tf.eval().backbone(x)
        assert (a - b).abs().max() > 1e-3 * a.abs().max()


def test_init_follows_the_tutorial():
    torch.manual_seed(0)
    model = MobileNetV2(num_classes=26)
    conv = model.backbone.features[-1][0]
    fan_out = conv.weight.shape[0] * conv.weight.shape[2] * conv.weight.shape[3]
    assert abs(conv.weight.std().item() - (2 / fan_out) ** 0.5) < 0.05 * (2 / fan_out) ** 0.5
    assert abs(model.head.classifier.weight.std().item() - 0.01) < 0.001
    assert torch.all(model.head.classifier.bias == 0)
    bn = model.backbone.features[0][1]
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


def test_head_takes_a_feature_map_or_pooled_features():
    model = MobileNetV2(num_classes=5).eval()
    with torch.no_grad():
        features = model.backbone(torch.randn(3, 3, 96, 96))
        logits = model.head(features)
        assert logits.shape == (3, 5)
        assert torch.allclose(model.head(features.mean((2, 3))), logits)


def test_config_round_trip_and_rejects_unknown():
    config = MobileNetV2Config(num_classes=7, width_mult=0.5, padding="tf_same", dropout=0.2)
    assert MobileNetV2Config.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown architecture fields"):
        MobileNetV2Config.from_dict({"num_clases": 3})
    with pytest.raises(ValueError, match="padding"):
        MobileNetV2(padding="same")


def test_config_reads_files_that_name_a_null_head_activation():
    config = MobileNetV2Config.from_dict({**MobileNetV2Config(num_classes=3).to_dict(), "activation": None})
    assert config == MobileNetV2Config(num_classes=3)
    with pytest.raises(ValueError, match="activation"):
        MobileNetV2Config.from_dict({**config.to_dict(), "activation": "softmax"})
