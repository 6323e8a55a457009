"""ShuffleNet v1 (Zhang et al., 2018), built from the paper's Table 1.

conv1 3x3/2 (24 channels), max pool 3x3/2, three stages of ShuffleNet units whose first
unit has stride 2, global pool, FC. The output channels of the stages depend on the
number of groups g so that all g have about the same cost; the bottleneck of every unit
is a quarter of its output. The scale factor s multiplies every channel count.
"""

from __future__ import annotations

from typing import Literal

from torch import nn

from ..layers import ConvBNAct, ShuffleUnit, make_divisible
from .base import Classifier, ClassifierHead, FeatureStack
from .registry import register_model

# Table 1 at 1x: output channels of stage 2 per group count (stages 3 and 4 double it).
STAGE2_CHANNELS = {1: 144, 2: 200, 3: 240, 4: 272, 8: 384}
STEM_CHANNELS = 24
# Units per stage (the first of each has stride 2): Table 1's "repeat" column, 1 + 3,
# 1 + 7, 1 + 3.
STAGE_REPEATS = (4, 8, 4)
BOTTLENECK_RATIO = 4


def stage_channels(groups: int, scale: float) -> tuple[int, list[tuple[int, int]]]:
    """Stem channels and (output, bottleneck) channels of each stage.

    At 1x these are Table 1's numbers. The scale factor multiplies every channel count;
    each is then rounded to a multiple of ``g`` so every group convolution divides evenly
    (the bottleneck, a quarter of the output, is rounded on its own: 0.5x g=4 has 136
    output channels and a 36-channel bottleneck).
    """
    if groups not in STAGE2_CHANNELS:
        raise ValueError(
            f"ShuffleNet v1 groups must be one of {sorted(STAGE2_CHANNELS)} (Table 1), got {groups!r}"
        )
    if not 0 < scale <= 2:
        raise ValueError(f"ShuffleNet v1 scale must be in (0, 2] (the paper uses 0.25-2), got {scale!r}")
    stem = make_divisible(STEM_CHANNELS * scale, groups)
    stages = []
    for i in range(len(STAGE_REPEATS)):
        out = make_divisible(STAGE2_CHANNELS[groups] * 2**i * scale, groups)
        stages.append((out, make_divisible(out / BOTTLENECK_RATIO, groups)))
    return stem, stages


class ShuffleNetV1(Classifier):
    """ShuffleNet v1 with g groups, scale factor s and channel shuffle on or off."""

    def __init__(
        self,
        groups: int = 3,
        scale: float = 1.0,
        shuffle: bool = True,
        num_classes: int = 1000,
        dropout: float = 0.0,
        in_channels: int = 3,
    ) -> None:
        stem, stages = stage_channels(groups, scale)
        stack = FeatureStack(in_channels)
        stack.add(ConvBNAct(in_channels, stem, 3, 2), stem, 2)
        stack.add(nn.MaxPool2d(3, 2, padding=1), stem, 2)
        for stage, ((out, bottleneck), repeats) in enumerate(zip(stages, STAGE_REPEATS, strict=True)):
            for i in range(repeats):
                stride = 2 if i == 0 else 1
                # The first unit of stage 2 sees only the stem's few channels: its first
                # pointwise layer is not grouped (Table 1's note).
                first_groups = 1 if stage == 0 and i == 0 else groups
                unit = ShuffleUnit(
                    stack.channels,
                    out,
                    stride,
                    groups,
                    bottleneck,
                    first_groups=first_groups,
                    shuffle=shuffle,
                )
                stack.add(unit, out, stride)
        super().__init__(stack, ClassifierHead(stack.channels, num_classes, dropout))
        self.groups = groups
        self.scale = scale
        self.shuffle = shuffle


# Table 1 at 1x for every g, and the scaled models the paper reports.
_PRESETS = {f"shufflenet_v1_g{g}": {"groups": g} for g in STAGE2_CHANNELS} | {
    f"shufflenet_v1_g{g}_{round(s * 100):03d}": {"groups": g, "scale": s}
    for g, s in ((8, 0.25), (4, 0.5), (3, 0.5), (3, 1.5), (3, 2.0), (8, 0.5), (8, 1.5), (8, 2.0))
}


@register_model(presets=_PRESETS, family="shufflenet_v1")
def shufflenet_v1(
    groups: Literal[1, 2, 3, 4, 8] = 3,
    scale: float = 1.0,
    shuffle: bool = True,
    num_classes: int = 1000,
    dropout: float = 0.0,
    in_channels: int = 3,
) -> ShuffleNetV1:
    """ShuffleNet v1 (Zhang et al., 2018), the paper's Table 1.

    Args:
        groups: number of groups g of the 1x1 group convolutions, one of 1, 2, 3, 4 and 8 (Table 1's columns).
        scale: scale factor s, multiplies every channel count (rounded to a multiple of g), in (0, 2]; the paper uses 0.25, 0.5, 1, 1.5 and 2.
        shuffle: channel shuffle after the first 1x1 group convolution of every unit; off gives the paper's ablation (Table 3).
    """
    return ShuffleNetV1(groups, scale, shuffle, num_classes, dropout, in_channels)
