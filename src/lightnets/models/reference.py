"""The heavy reference models the light-weight papers compare against.

AlexNet, VGG16, GoogLeNet, ResNet-50 and Inception v3, each from its paper's table, with
the same :class:`~lightnets.models.base.Classifier` interface as the light models so the
cost analyser and the benchmarks treat both alike. Auxiliary classifiers are left out:
they only help training and cost nothing at inference.

Rows shared by the tables below (appended to the feature stack by :func:`add_rows`):

* ``(out, kernel, stride, padding)`` or ``(..., groups)``: convolution + ReLU (with
  BatchNorm in the models that have it, with a bias in those that do not);
* an integer ``c``: VGG's "conv3-c", a 3x3 convolution at stride 1 with padding 1;
* ``("max", kernel, stride, padding)``: a max pool;
* ``("lrn", size, alpha, beta, k)``: local response normalisation, in PyTorch's (and
  Caffe's) convention, which divides ``alpha`` by ``size``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..layers import Add, ConvBNAct
from .base import Classifier, ClassifierHead, FeatureStack, LinearClassifier, check_dropout
from .registry import register_model

# AlexNet (Krizhevsky et al., 2012, Figure 2 and Section 3): the two-GPU network. conv2,
# conv4 and conv5 see only the kernel maps on their own GPU, hence groups=2; conv3
# reads both. The paper's LRN is b = a / (k + alpha * sum a^2)^beta with k=2, n=5,
# alpha=1e-4, beta=0.75, i.e. alpha = 5 * 1e-4 in PyTorch's convention. The pools
# overlap (3x3 at stride 2, Section 3.4). At 227x227 the maps are 55, 27, 13 and 6.
ALEXNET_LRN = ("lrn", 5, 5e-4, 0.75, 2.0)
ALEXNET = (
    (96, 11, 4, 0),
    ALEXNET_LRN,
    ("max", 3, 2, 0),
    (256, 5, 1, 2, 2),
    ALEXNET_LRN,
    ("max", 3, 2, 0),
    (384, 3, 1, 1),
    (384, 3, 1, 1, 2),
    (256, 3, 1, 1, 2),
    ("max", 3, 2, 0),
)
ALEXNET_FC = (6, 4096)  # the first FC layer reads a 6x6 map; hidden layers of 4096
ALEXNET_MIN_INPUT = 67  # 67 -> 15 -> 7 -> 7 -> 3 -> 3 -> 1; 66 leaves no pixel

# VGG configuration D (Simonyan & Zisserman, 2015, Table 1), column for column.
VGG_MAX = ("max", 2, 2, 0)
VGG16 = (
    64, 64, VGG_MAX,
    128, 128, VGG_MAX,
    256, 256, 256, VGG_MAX,
    512, 512, 512, VGG_MAX,
    512, 512, 512, VGG_MAX,
)  # fmt: skip
VGG_FC = (7, 4096)

# GoogLeNet (Szegedy et al., 2015, Table 1). The stem: conv 7x7/2, max pool, LRN, the
# 1x1 "3x3 reduce" and the 3x3 conv (the table's "depth 2" row), LRN, max pool. LRN and
# pool order and the LRN constants follow the authors' Caffe model (bvlc_googlenet).
GOOGLENET_LRN = ("lrn", 5, 1e-4, 0.75, 1.0)
GOOGLENET_MAX = ("max", 3, 2, 0)
GOOGLENET_STEM = (
    (64, 7, 2, 3),
    GOOGLENET_MAX,
    GOOGLENET_LRN,
    (64, 1, 1, 0),
    (192, 3, 1, 1),
    GOOGLENET_LRN,
    GOOGLENET_MAX,
)
# Inception rows: (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj).
GOOGLENET_BODY = (
    (64, 96, 128, 16, 32, 32),  # 3a
    (128, 128, 192, 32, 96, 64),  # 3b
    GOOGLENET_MAX,
    (192, 96, 208, 16, 48, 64),  # 4a
    (160, 112, 224, 24, 64, 64),  # 4b
    (128, 128, 256, 24, 64, 64),  # 4c
    (112, 144, 288, 32, 64, 64),  # 4d
    (256, 160, 320, 32, 128, 128),  # 4e
    GOOGLENET_MAX,
    (256, 160, 320, 32, 128, 128),  # 5a
    (384, 192, 384, 48, 128, 128),  # 5b
)

# ResNet-50 (He et al., 2016, Table 1): conv1 7x7/2 and a 3x3/2 max pool, then the
# stages conv2_x..conv5_x as (blocks, bottleneck width, stride of the first block);
# each block outputs 4 x width channels.
RESNET50_STEM = ((64, 7, 2, 3), ("max", 3, 2, 1))
RESNET50_STAGES = ((3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2))
BOTTLENECK_EXPANSION = 4


# Inception v3 (Szegedy et al., 2016) as released (TF-slim, torchvision): the paper's
# Table 1 gives only the outline; the filter counts are the release's. An Inception
# module is a list of parallel branches; a branch is a list of layers applied in turn:
#   (out, kernel[, stride])  conv + BN + ReLU, "same" padding at stride 1, none at 2;
#   "avg" / "max"            a 3x3 pool at stride 1 with padding 1;
#   "max/2"                  a 3x3/2 max pool without padding;
#   ("split", c)             a 1x3 and a 3x1 conv side by side on the same input
#                            (Figure 7's expanded filter bank), 2c channels.
def inception_a(pool_proj: int) -> list:
    """Figure 5 as released: one branch keeps a 5x5 instead of two 3x3."""
    return [[(64, 1)], [(48, 1), (64, 5)], [(64, 1), (96, 3), (96, 3)], ["avg", (pool_proj, 1)]]


def inception_c(c7: int) -> list:
    """Figure 6 with n=7: 7x7 convolutions factorised into 1x7 and 7x1."""
    return [
        [(192, 1)],
        [(c7, 1), (c7, (1, 7)), (192, (7, 1))],
        [(c7, 1), (c7, (7, 1)), (c7, (1, 7)), (c7, (7, 1)), (192, (1, 7))],
        ["avg", (192, 1)],
    ]


# Grid-size reductions (Figure 10): stride-2 branches next to a stride-2 max pool.
INCEPTION_B = [[(384, 3, 2)], [(64, 1), (96, 3), (96, 3, 2)], ["max/2"]]  # 35 -> 17
INCEPTION_D = [[(192, 1), (320, 3, 2)], [(192, 1), (192, (1, 7)), (192, (7, 1)), (192, 3, 2)], ["max/2"]]
INCEPTION_E = [  # Figure 7: the 8x8 modules widen with split 1x3 / 3x1 convolutions
    [(320, 1)],
    [(384, 1), ("split", 384)],
    [(448, 1), (384, 3), ("split", 384)],
    ["avg", (192, 1)],
]

INCEPTION_V3_STEM = (
    (32, 3, 2, 0),  # 299 -> 149
    (32, 3, 1, 0),  # 147
    (64, 3, 1, 1),  # 147
    ("max", 3, 2, 0),  # 73
    (80, 1, 1, 0),  # 73
    (192, 3, 1, 0),  # 71
    ("max", 3, 2, 0),  # 35
)
INCEPTION_V3_BODY = (
    inception_a(32),  # Mixed_5b, 35x35x256
    inception_a(64),  # Mixed_5c, 288
    inception_a(64),  # Mixed_5d, 288
    INCEPTION_B,  # Mixed_6a, 17x17x768
    inception_c(128),  # Mixed_6b
    inception_c(160),  # Mixed_6c
    inception_c(160),  # Mixed_6d
    inception_c(192),  # Mixed_6e
    INCEPTION_D,  # Mixed_7a, 8x8x1280
    INCEPTION_E,  # Mixed_7b, 2048
    INCEPTION_E,  # Mixed_7c, 2048
)
INCEPTION_V3_MIN_INPUT = 75  # 75 -> 37 -> 35 -> 17 -> 15 -> 7 -> 3 -> 1, as torchvision checks


def add_rows(stack: FeatureStack, rows: tuple, norm: bool, ceil_mode: bool = False) -> None:
    """Append table rows (see the module docstring) to ``stack``."""
    for row in rows:
        if isinstance(row, int):
            row = (row, 3, 1, 1)
        if row[0] == "lrn":
            _, size, alpha, beta, k = row
            stack.add(nn.LocalResponseNorm(size, alpha, beta, k), stack.channels)
        elif row[0] == "max":
            _, kernel, stride, padding = row
            stack.add(nn.MaxPool2d(kernel, stride, padding, ceil_mode=ceil_mode), stack.channels, stride)
        else:
            out, kernel, stride, padding, *rest = row
            groups = rest[0] if rest else 1
            conv = ConvBNAct(stack.channels, out, kernel, stride, groups, norm=norm, padding=padding)
            stack.add(conv, out, stride)


class Inception(nn.Module):
    """Parallel branches on one input, their outputs concatenated along the channels.

    GoogLeNet's module (its Figure 2b) and every Inception v3 module, including the
    grid reductions, are this with different branches; see :func:`inception_a` for the
    branch notation. All branches must reduce the grid by the same ``stride``.
    """

    def __init__(self, in_channels: int, branches: list, norm: bool = True) -> None:
        super().__init__()
        self.branches = nn.ModuleList()
        widths, strides = [], set()
        for spec in branches:
            layers, channels, stride = [], in_channels, 1
            for layer in spec:
                module, channels, layer_stride = _branch_layer(channels, layer, norm)
                layers.append(module)
                stride *= layer_stride
            self.branches.append(nn.Sequential(*layers))
            widths.append(channels)
            strides.add(stride)
        if len(strides) != 1:
            raise ValueError(f"Inception branches must share one stride, got {sorted(strides)}")
        self.in_channels = in_channels
        self.out_channels = sum(widths)
        self.stride = strides.pop()

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


def _branch_layer(in_channels: int, layer: object, norm: bool) -> tuple[nn.Module, int, int]:
    """One layer of an Inception branch: (module, output channels, stride)."""
    if layer == "avg":
        return nn.AvgPool2d(3, 1, 1), in_channels, 1
    if layer == "max":
        return nn.MaxPool2d(3, 1, 1), in_channels, 1
    if layer == "max/2":
        return nn.MaxPool2d(3, 2), in_channels, 2
    assert isinstance(layer, tuple)
    if layer[0] == "split":
        split = Inception(in_channels, [[(layer[1], (1, 3))], [(layer[1], (3, 1))]], norm)
        return split, split.out_channels, 1
    out, kernel, *rest = layer
    stride = rest[0] if rest else 1
    kh, kw = kernel if isinstance(kernel, tuple) else (kernel, kernel)
    padding = (kh // 2, kw // 2) if stride == 1 else (0, 0)
    conv = ConvBNAct(in_channels, out, (kh, kw), stride, norm=norm, padding=padding)
    return conv, out, stride


def googlenet_branches(c1: int, c3r: int, c3: int, c5r: int, c5: int, pool_proj: int) -> list:
    """A GoogLeNet Table 1 row as Inception branches (Figure 2b): real 5x5 convolutions."""
    return [[(c1, 1)], [(c3r, 1), (c3, 3)], [(c5r, 1), (c5, 5)], ["max", (pool_proj, 1)]]


class Bottleneck(nn.Module):
    """ResNet's bottleneck block (He et al., Figure 5 right), version 1.

    1x1 reduce to ``width``, 3x3, 1x1 expand to ``4 * width`` without ReLU, added to
    the shortcut, then ReLU. As in the paper (v1), the stride sits on the first 1x1;
    torchvision's "v1.5" moves it to the 3x3, which costs more multiply-adds for the
    same parameters. Where the shape changes the shortcut is a 1x1 projection with
    BatchNorm (the paper's option B), elsewhere the identity.
    """

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * BOTTLENECK_EXPANSION
        self.reduce = ConvBNAct(in_channels, width, 1, stride)
        self.conv = ConvBNAct(width, width, 3)
        self.expand = ConvBNAct(width, out_channels, 1, act=None)
        projection = stride != 1 or in_channels != out_channels
        self.shortcut: nn.Module = (
            ConvBNAct(in_channels, out_channels, 1, stride, act=None) if projection else nn.Identity()
        )
        self.add = Add()
        self.act = nn.ReLU(inplace=True)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        out = self.expand(self.conv(self.reduce(x)))
        return self.act(self.add(out, self.shortcut(x)))


class FullyConnectedHead(LinearClassifier):
    """AlexNet's and VGG's classifier: two hidden FC layers with ReLU and dropout, then FC.

    The map is first average-pooled to the ``pool_size`` the first FC layer was
    designed for. At the paper's input size that is an identity (no cost); at others
    it keeps the layer's shape, as torchvision does. ``pre_logits`` gives the second
    hidden layer's output (``num_features`` = ``hidden``).
    """

    def __init__(
        self, in_channels: int, pool_size: int, hidden: int, num_classes: int, dropout: float = 0.5
    ) -> None:
        super().__init__()
        check_dropout(dropout)
        self.num_features = hidden
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.flatten = nn.Flatten(1)
        self.hidden = nn.Sequential(
            nn.Linear(in_channels * pool_size * pool_size, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )
        self.fc: nn.Module = nn.Identity()
        self.reset(num_classes)

    def forward(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.hidden(self.flatten(self.pool(x)))
        return x if pre_logits else self.fc(x)


class PlainNet(Classifier):
    """AlexNet and VGG: a plain stack of table rows, then the fully connected head."""

    def __init__(
        self,
        rows: tuple,
        fc: tuple[int, int],
        num_classes: int = 1000,
        dropout: float = 0.5,
        in_channels: int = 3,
        min_input_size: int | None = None,
    ) -> None:
        stack = FeatureStack(in_channels)
        add_rows(stack, rows, norm=False)
        pool_size, hidden = fc
        head = FullyConnectedHead(stack.channels, pool_size, hidden, num_classes, dropout)
        super().__init__(stack, head, min_input_size)


class GoogLeNet(Classifier):
    """GoogLeNet (Inception v1): stem, nine Inception modules, average pool, dropout, FC."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.4, in_channels: int = 3) -> None:
        stack = FeatureStack(in_channels)
        # Caffe rounds pooled sizes up; at 224 the maps are 112, 56, 28, 14 and 7.
        add_rows(stack, GOOGLENET_STEM, norm=False, ceil_mode=True)
        for row in GOOGLENET_BODY:
            if row == GOOGLENET_MAX:
                add_rows(stack, (row,), norm=False, ceil_mode=True)
            else:
                module = Inception(stack.channels, googlenet_branches(*row), norm=False)
                stack.add(module, module.out_channels)
        super().__init__(stack, ClassifierHead(stack.channels, num_classes, dropout))


class ResNet(Classifier):
    """ResNet v1 with bottleneck blocks: stem, four stages, average pool, FC."""

    def __init__(
        self,
        stages: tuple = RESNET50_STAGES,
        num_classes: int = 1000,
        dropout: float = 0.0,
        in_channels: int = 3,
    ) -> None:
        stack = FeatureStack(in_channels)
        add_rows(stack, RESNET50_STEM, norm=True)
        for blocks, width, stride in stages:
            for i in range(blocks):
                block = Bottleneck(stack.channels, width, stride if i == 0 else 1)
                stack.add(block, block.out_channels, block.stride)
        super().__init__(stack, ClassifierHead(stack.channels, num_classes, dropout))


class InceptionV3(Classifier):
    """Inception v3 without its auxiliary classifier: stem, eleven modules, pool, FC."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5, in_channels: int = 3) -> None:
        stack = FeatureStack(in_channels)
        add_rows(stack, INCEPTION_V3_STEM, norm=True)
        for branches in INCEPTION_V3_BODY:
            module = Inception(stack.channels, branches)
            stack.add(module, module.out_channels, module.stride)
        super().__init__(stack, ClassifierHead(stack.channels, num_classes, dropout), INCEPTION_V3_MIN_INPUT)
        # The released weights were trained with TensorFlow's BatchNorm epsilon.
        for layer in self.modules():
            if isinstance(layer, nn.BatchNorm2d):
                layer.eps = 1e-3


@register_model(family="reference")
def alexnet(num_classes: int = 1000, dropout: float = 0.5, in_channels: int = 3) -> PlainNet:
    """AlexNet (Krizhevsky et al., 2012), the two-GPU grouped network; 227x227 input."""
    return PlainNet(ALEXNET, ALEXNET_FC, num_classes, dropout, in_channels, ALEXNET_MIN_INPUT)


@register_model(family="reference")
def vgg16(num_classes: int = 1000, dropout: float = 0.5, in_channels: int = 3) -> PlainNet:
    """VGG16 (Simonyan & Zisserman, 2015), configuration D."""
    return PlainNet(VGG16, VGG_FC, num_classes, dropout, in_channels)


@register_model(family="reference")
def googlenet(num_classes: int = 1000, dropout: float = 0.4, in_channels: int = 3) -> GoogLeNet:
    """GoogLeNet (Szegedy et al., 2015), Inception v1 with 5x5 branches, no aux heads."""
    return GoogLeNet(num_classes, dropout, in_channels)


@register_model(family="reference")
def resnet50(num_classes: int = 1000, dropout: float = 0.0, in_channels: int = 3) -> ResNet:
    """ResNet-50 v1 (He et al., 2016): the stride on the bottleneck's first 1x1."""
    return ResNet(RESNET50_STAGES, num_classes, dropout, in_channels)


@register_model(family="reference")
def inception_v3(num_classes: int = 1000, dropout: float = 0.5, in_channels: int = 3) -> InceptionV3:
    """Inception v3 (Szegedy et al., 2016) as released, without the aux classifier; 299 input."""
    return InceptionV3(num_classes, dropout, in_channels)
