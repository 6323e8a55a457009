import pytest
import torch

from lightnets.layers import (
    ConvBNAct,
    DepthwiseSeparable,
    Fire,
    InvertedResidual,
    ShuffleUnit,
    channel_shuffle,
    make_divisible,
)


@pytest.mark.parametrize(
    "value, expected",
    [
        (32 * 1.4, 48),  # not 44: 44 is not a multiple of 8
        (32 * 0.35, 16),  # 11.2 -> 8 would lose more than 10%, so 16
        (16 * 0.35, 8),  # never below the divisor
        (1280 * 1.4, 1792),
        (24 * 0.5, 16),  # 12 rounds half up
        (96, 96),
    ],
)
def test_make_divisible(value, expected):
    assert make_divisible(value) == expected


def test_make_divisible_never_loses_more_than_ten_percent():
    for tenths in range(1, 400):
        value = tenths / 10 * 8
        rounded = make_divisible(value)
        assert rounded % 8 == 0 and rounded >= 0.9 * value


def test_channel_shuffle_is_the_papers_transpose():
    # 2 groups of 3 channels: (a0 a1 a2 | b0 b1 b2) -> (a0 b0 a1 b1 a2 b2)
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]
    x = torch.randn(2, 12, 5, 7)
    y = channel_shuffle(x, 3)
    assert torch.equal(y, x.view(2, 3, 4, 5, 7).transpose(1, 2).reshape(2, 12, 5, 7))
    # Shuffling with g then with n = C / g restores the order.
    assert torch.equal(channel_shuffle(y, 4), x)


def test_conv_bn_act_is_fusable_by_name():
    block = ConvBNAct(8, 16, 3, 2, act="relu6")
    assert [name for name, _ in block.named_children()] == ["conv", "bn", "act"]
    assert block.conv.bias is None
    plain = ConvBNAct(8, 16, 1, norm=False, act=None)
    assert [name for name, _ in plain.named_children()] == ["conv"] and plain.conv.bias is not None


def test_inverted_residual_shortcut_and_linear_projection():
    block = InvertedResidual(16, 16, 1, 96).eval()
    assert block.use_shortcut
    assert [name for name, _ in block.project.named_children()] == ["conv", "bn"]  # linear
    x = torch.randn(1, 16, 8, 8)
    # Zero the projection: the block must then be the identity (only the shortcut remains).
    torch.nn.init.zeros_(block.project.bn.weight)
    torch.nn.init.zeros_(block.project.bn.bias)
    assert torch.equal(block(x), x)
    assert not InvertedResidual(16, 24, 2, 96).use_shortcut
    assert InvertedResidual(32, 16, 1, 32).expand.__class__.__name__ == "Identity"  # t = 1


def test_depthwise_separable_layers():
    layer = DepthwiseSeparable(32, 64, 2)
    assert layer.depthwise.conv.groups == 32 and layer.pointwise.conv.kernel_size == (1, 1)
    assert layer(torch.randn(1, 32, 16, 16)).shape == (1, 64, 8, 8)


def test_fire_concatenates_expands_and_bypasses():
    fire = Fire(96, 16, 64, 64)
    assert fire(torch.randn(1, 96, 13, 13)).shape == (1, 128, 13, 13)
    assert Fire(128, 16, 64, 64, bypass="simple")(torch.randn(1, 128, 5, 5)).shape == (1, 128, 5, 5)
    assert Fire(96, 16, 64, 64, bypass="complex")(torch.randn(1, 96, 5, 5)).shape == (1, 128, 5, 5)
    with pytest.raises(ValueError, match="simple bypass needs equal channel counts"):
        Fire(96, 16, 64, 64, bypass="simple")
    with pytest.raises(ValueError, match="unknown bypass"):
        Fire(96, 16, 64, 64, bypass="fancy")


def test_shuffle_unit_stride_two_concatenates_pooled_input():
    unit = ShuffleUnit(24, 240, 2, 3, 60, first_groups=1)
    assert unit.expand.conv.out_channels == 216  # 240 - 24: the pooled input fills the rest
    assert unit(torch.randn(2, 24, 56, 56)).shape == (2, 240, 28, 28)
    assert not hasattr(unit.depthwise, "act")  # no ReLU after the depthwise conv
    unit = ShuffleUnit(240, 240, 1, 3, 60)
    assert unit(torch.randn(1, 240, 28, 28)).shape == (1, 240, 28, 28)


def test_shuffle_unit_rejects_channels_groups_cannot_split():
    with pytest.raises(
        ValueError, match=r"bottleneck channels \(34\) must be a positive multiple of groups=4"
    ):
        ShuffleUnit(136, 136, 1, 4, 34)
    with pytest.raises(ValueError, match="in and out channels must match"):
        ShuffleUnit(120, 240, 1, 3, 60)


@pytest.mark.parametrize(
    "block, in_channels, inner_channels, inner_stride",
    [
        (InvertedResidual(16, 24, 2, 96), 16, 96, 1),  # the expansion, before the stride
        (InvertedResidual(24, 24, 1, 144), 24, 144, 1),
        (ShuffleUnit(24, 240, 2, 3, 60, first_groups=1), 24, 60, 1),  # the bottleneck
        (ShuffleUnit(240, 240, 1, 3, 60), 240, 60, 1),
        (Fire(128, 16, 64, 64, bypass="simple"), 128, 16, 1),  # the squeeze
        (DepthwiseSeparable(32, 64, 2), 32, 32, 2),  # the depthwise output, after the stride
    ],
)
def test_forward_inner_gives_the_output_and_the_named_inner_tensor(
    block, in_channels, inner_channels, inner_stride
):
    block.eval()
    x = torch.randn(2, in_channels, 8, 8)
    captured = []
    getattr(block, block.inner_name).register_forward_hook(lambda _m, _i, out: captured.append(out.clone()))
    with torch.no_grad():
        out, inner = block.forward_inner(x)
        assert torch.allclose(out, block(x))
    assert (block.inner_channels, block.inner_stride) == (inner_channels, inner_stride)
    assert inner.shape == (2, inner_channels, 8 // inner_stride, 8 // inner_stride)
    assert torch.equal(inner, captured[0])
