"""MobileNetV2 (Sandler et al., 2018), built from the paper's Table 2.

Channels follow the official release (TF-slim ``mobilenet_v2``): every width is rounded
with :func:`make_divisible` to a multiple of 8, the expanded width of a block is
``make_divisible(t * input channels)``, and the last 1280-channel layer is never
shrunk (for width < 1) but grows for width > 1. ``padding="tf_same"`` pads strided
convolutions as TensorFlow does (needed by weights trained there).
"""

from __future__ import annotations

from typing import Literal

from ..layers import PADDINGS, ConvBNAct, ExpansionShortcut, InvertedResidual, make_divisible
from .base import Classifier, ClassifierHead, FeatureStack
from .registry import register_model

# Table 2: the stem conv, then bottleneck sequences (t, c, n, s): expansion factor,
# output channels, repeats, stride of the first repeat.
STEM_CHANNELS = 32
BOTTLENECKS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
HEAD_CHANNELS = 1280
BOTTLENECK_KINDS = ("linear", "relu6")
SHORTCUT_KINDS = ("bottleneck", "expansion", "none")


class MobileNetV2(Classifier):
    """MobileNetV2: stem conv, 17 inverted residual blocks, 1x1 conv to 1280, pool, FC.

    ``expansion`` replaces every t = 6 of Table 2 (the paper's ablations vary it); the
    first block keeps t = 1. ``bottleneck="relu6"`` ends every block's projection with a
    ReLU6, the non-linear bottleneck the paper's Figure 6a compares with its linear one.
    ``shortcut`` places the residual connections as Figure 6b compares them: between the
    bottlenecks (the design), between the expansions (the same layers regrouped by
    :class:`~lightnets.layers.ExpansionShortcut`; the additions fall where the bottleneck
    ones do, on the wide tensors instead) or nowhere.
    """

    def __init__(
        self,
        width: float = 1.0,
        expansion: float = 6.0,
        num_classes: int = 1000,
        dropout: float = 0.2,
        in_channels: int = 3,
        padding: str = "symmetric",
        bottleneck: str = "linear",
        shortcut: str = "bottleneck",
    ) -> None:
        if not 0 < width <= 2:
            raise ValueError(f"MobileNetV2 width must be in (0, 2], got {width!r}")
        if padding not in PADDINGS:
            raise ValueError(f"unknown padding {padding!r}; expected one of {PADDINGS}")
        if bottleneck not in BOTTLENECK_KINDS:
            raise ValueError(f"unknown bottleneck {bottleneck!r}; expected one of {BOTTLENECK_KINDS}")
        project_act = None if bottleneck == "linear" else "relu6"
        if shortcut not in SHORTCUT_KINDS:
            raise ValueError(f"unknown shortcut {shortcut!r}; expected one of {SHORTCUT_KINDS}")
        if not expansion >= 1:
            raise ValueError(f"MobileNetV2 expansion factor t must be >= 1, got {expansion!r}")
        stack = FeatureStack(in_channels)
        stem = make_divisible(STEM_CHANNELS * width)
        stack.add(ConvBNAct(in_channels, stem, 3, 2, act="relu6", padding=padding), stem, 2)
        blocks: list[tuple[InvertedResidual, int]] = []  # and its stride
        channels = stem
        for t, c, n, s in BOTTLENECKS:
            factor = expansion if t != 1 else 1
            out = make_divisible(c * width)
            for i in range(n):
                stride = s if i == 0 else 1
                hidden = make_divisible(channels * factor) if factor != 1 else channels
                block = InvertedResidual(
                    channels,
                    out,
                    stride,
                    hidden,
                    padding=padding,
                    project_act=project_act,
                    shortcut=shortcut == "bottleneck",
                )
                blocks.append((block, stride))
                channels = out
        head = make_divisible(HEAD_CHANNELS * width) if width > 1.0 else HEAD_CHANNELS
        head_conv = ConvBNAct(channels, head, 1, act="relu6")
        if shortcut == "expansion":
            if blocks[0][0].hidden_channels != stem:  # the first block's t = 1: nothing to expand
                stack.add(blocks[0][0].expand, blocks[0][0].hidden_channels)
            for k, (block, stride) in enumerate(blocks):
                following = blocks[k + 1][0].expand if k + 1 < len(blocks) else head_conv
                unit = ExpansionShortcut(block.depthwise, block.project, following)
                stack.add(unit, unit.out_channels, stride)
        else:
            for block, stride in blocks:
                stack.add(block, block.out_channels, stride)
            stack.add(head_conv, head)
        super().__init__(stack, ClassifierHead(head, num_classes, dropout))
        self.width = width
        self.expansion = expansion
        self.padding = padding
        self.bottleneck = bottleneck
        self.shortcut = shortcut


@register_model(
    presets={
        "mobilenet_v2_035": {"width": 0.35},
        "mobilenet_v2_050": {"width": 0.5},
        "mobilenet_v2_075": {"width": 0.75},
        "mobilenet_v2_100": {"width": 1.0},
        "mobilenet_v2_140": {"width": 1.4},
    },
    family="mobilenet_v2",
)
def mobilenet_v2(
    width: float = 1.0,
    expansion: float = 6.0,
    num_classes: int = 1000,
    dropout: float = 0.2,
    in_channels: int = 3,
    padding: Literal["symmetric", "tf_same"] = "symmetric",
    bottleneck: Literal["linear", "relu6"] = "linear",
    shortcut: Literal["bottleneck", "expansion", "none"] = "bottleneck",
) -> MobileNetV2:
    """MobileNetV2 (Sandler et al., 2018), the paper's Table 2.

    Args:
        width: width multiplier alpha, scales every layer's channels (rounded to a multiple of 8), in (0, 2]; the paper uses 0.35 to 1.4, and the last 1280-channel layer only grows.
        expansion: expansion factor t of every inverted residual block but the first (which keeps t = 1), a number >= 1; Table 2 uses 6.
        padding: padding of the strided convolutions, 'symmetric' (PyTorch's) or 'tf_same' (TensorFlow's, for weights trained there).
        bottleneck: 'linear' (the paper's design) or 'relu6' (a ReLU6 after every projection, the ablation of Figure 6a).
        shortcut: 'bottleneck' (the paper's design: shortcuts between the bottlenecks), 'expansion' (the same layers with the shortcuts between the expanded tensors) or 'none' (no residual connections); the ablation of Figure 6b.
    """
    return MobileNetV2(width, expansion, num_classes, dropout, in_channels, padding, bottleneck, shortcut)
