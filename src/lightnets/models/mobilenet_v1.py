"""MobileNet v1 (Howard et al., 2017), built from the paper's Table 1.

Three multipliers, kept apart:

* ``width`` (the paper's alpha) scales every layer's channels;
* the resolution multiplier (rho) is simply the input size: the network is fully
  convolutional up to its global pool, so 224, 192, 160 or 128 inputs all work;
* the depthwise channel multiplier is 1 throughout, as in the paper.

``act`` is the paper's ReLU or the ReLU6 of the official release; ``padding="tf_same"``
pads strided convolutions as TensorFlow does (needed by weights trained there).

``variant`` selects the paper's ablations (its Tables 4 and 6): ``"full"`` ("Conv
MobileNet") makes every separable layer a full 3x3 convolution; ``"shallow"`` drops the
five separable layers at 14x14x512.
"""

from __future__ import annotations

from typing import Literal

from ..layers import PADDINGS, ConvBNAct, DepthwiseSeparable, make_divisible
from .base import Classifier, ClassifierHead, FeatureStack
from .registry import register_model

# Table 1, one row per layer after the stem: (kind, stride, output channels).
# "conv" is a full 3x3 conv + BN + ReLU; "separable" a 3x3 depthwise + 1x1 pointwise pair.
# The paper prints the last depthwise layer as "s2" although its input is already 7x7
# and its output stays 7x7: it is stride 1 in the paper's own sizes and in the release.
STEM = ("conv", 2, 32)
BODY = (
    ("separable", 1, 64),
    ("separable", 2, 128),
    ("separable", 1, 128),
    ("separable", 2, 256),
    ("separable", 1, 256),
    ("separable", 2, 512),
    ("separable", 1, 512),  # five 14x14x512 layers: the ones "shallow" removes
    ("separable", 1, 512),
    ("separable", 1, 512),
    ("separable", 1, 512),
    ("separable", 1, 512),
    ("separable", 2, 1024),
    ("separable", 1, 1024),
)
SHALLOW_REMOVED = range(6, 11)  # indices into BODY of the five 14x14x512 layers

VARIANTS = ("separable", "full", "shallow")


class MobileNetV1(Classifier):
    """MobileNet v1: a 3x3 conv stem, 13 depthwise-separable layers, pool, FC."""

    def __init__(
        self,
        width: float = 1.0,
        variant: str = "separable",
        num_classes: int = 1000,
        dropout: float = 0.001,
        in_channels: int = 3,
        act: str = "relu",
        padding: str = "symmetric",
    ) -> None:
        if not 0 < width <= 2:
            raise ValueError(f"MobileNet v1 width (alpha) must be in (0, 2], got {width!r}")
        if padding not in PADDINGS:
            raise ValueError(f"unknown padding {padding!r}; expected one of {PADDINGS}")
        if variant not in VARIANTS:
            raise ValueError(f"unknown MobileNet v1 variant {variant!r}; expected one of {VARIANTS}")
        rows = [row for i, row in enumerate(BODY) if not (variant == "shallow" and i in SHALLOW_REMOVED)]

        stack = FeatureStack(in_channels)
        _, stride, channels = STEM
        channels = make_divisible(channels * width)
        stack.add(ConvBNAct(in_channels, channels, 3, stride, act=act, padding=padding), channels, stride)
        for _, stride, channels in rows:
            channels = make_divisible(channels * width)
            layer: ConvBNAct | DepthwiseSeparable
            if variant == "full":
                layer = ConvBNAct(stack.channels, channels, 3, stride, act=act, padding=padding)
            else:
                layer = DepthwiseSeparable(stack.channels, channels, stride, act, padding)
            stack.add(layer, channels, stride)
        super().__init__(stack, ClassifierHead(stack.channels, num_classes, dropout))
        self.width = width
        self.variant = variant
        self.act = act
        self.padding = padding


@register_model(
    presets={
        "mobilenet_v1_025": {"width": 0.25},
        "mobilenet_v1_050": {"width": 0.5},
        "mobilenet_v1_075": {"width": 0.75},
        "mobilenet_v1_100": {"width": 1.0},
        "mobilenet_v1_conv": {"variant": "full"},
        "mobilenet_v1_shallow": {"variant": "shallow"},
    },
    family="mobilenet_v1",
)
def mobilenet_v1(
    width: float = 1.0,
    variant: Literal["separable", "full", "shallow"] = "separable",
    num_classes: int = 1000,
    dropout: float = 0.001,
    in_channels: int = 3,
    act: Literal["relu", "relu6"] = "relu",
    padding: Literal["symmetric", "tf_same"] = "symmetric",
) -> MobileNetV1:
    """MobileNet v1 (Howard et al., 2017), the paper's Table 1.

    Args:
        width: width multiplier alpha, scales every layer's channels (rounded to a multiple of 8), in (0, 2]; the paper uses 0.25, 0.5, 0.75 and 1.
        variant: 'separable' for the paper's network, 'full' for every separable layer a full 3x3 convolution (Table 4's Conv MobileNet), 'shallow' for the network without its five 14x14x512 layers (Table 6).
        act: activation after every convolution, 'relu' (the paper) or 'relu6' (the official release).
        padding: padding of the strided convolutions, 'symmetric' (PyTorch's) or 'tf_same' (TensorFlow's, for weights trained there).
    """
    return MobileNetV1(width, variant, num_classes, dropout, in_channels, act, padding)
