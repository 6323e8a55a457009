"""SSD and SSDLite detectors on the lightnets backbones.

MobileNet v1 reports SSD300 on COCO (Table 13) and MobileNetV2 introduces SSDLite
(Section 6.2, Table 6). The layout here is the one the TensorFlow Object Detection API
builds for the papers' models (its ``ssd_mobilenet_v1_coco`` and
``ssdlite_mobilenet_v2_coco`` configurations), which the papers' counts imply:

* **six feature maps**: two from the backbone (:data:`BACKBONE_MAPS`), then
  :data:`EXTRA_DEPTHS` extra layers, each a 1x1 convolution to half its depth and a
  stride-2 3x3 convolution to its depth (regular in SSD; in SSDLite a 3x3 depthwise
  convolution and a 1x1 one, each with BatchNorm and ReLU6);
* **a box and a class predictor per map**: in SSD a 1x1 convolution (the configuration's
  ``kernel_size: 1``; 3x3 ones would give about 12 M parameters where Table 13 has
  6.8 M), in SSDLite a 3x3 depthwise convolution (BatchNorm, ReLU6) and then the 1x1,
  MobileNetV2's "replace all the regular convolutions with separable convolutions in
  SSD prediction layers". The predictors give 4 box offsets and ``num_classes`` scores
  per anchor, the anchors of :mod:`.anchors` (3 per position on the first map, 6 on the
  others);
* ``num_classes`` counts the background: 91 for the papers' COCO models (90 classes).

``forward`` returns the raw outputs, ``(boxes, scores)`` of shapes ``(N, A, 4)`` and
``(N, A, num_classes)``, the anchors in the order of :func:`.anchors.ssd_anchors`
(map by map, row by row, anchor by anchor): what the cost tables count (no decoding,
no non-maximum suppression).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..layers import ConvBNAct
from ..models import register_model
from ..models.base import Classifier, check_num_classes
from .anchors import anchors_per_position
from .task_model import TaskModel, backbone_for

FAMILY = "ssd"
EXTRA_DEPTHS = (512, 256, 256, 128)  # the extra layers' channels (the configurations' layer_depth)
COCO_CLASSES = 91  # 90 classes and background, as the papers' COCO models count

# Where each family's two backbone maps come from: the feature_info levels (by output
# stride) and which tensor of them (``Classifier.feature_location``).
BACKBONE_MAPS: dict[str, tuple[tuple[int, int], str]] = {
    # The expansion of the first block at stride 32 ("layer 15" in the paper, 576
    # channels at width 1) and the last layer (the 1x1 convolution to 1280).
    "mobilenet_v2": ((16, 32), "expansion"),
    # Conv 11 (512 channels, stride 16) and conv 13 (1024, stride 32).
    "mobilenet_v1": ((16, 32), "output"),
    # The outputs of stages 3 and 4.
    "shufflenet_v1": ((16, 32), "output"),
    # SqueezeNet 1.1 ends at stride 16: fire5 (stride 8) and fire9 (stride 16); the
    # extra layers then go down to stride 256.
    "squeezenet1_1": ((8, 16), "output"),
}


def extra_layer(in_channels: int, depth: int, separable: bool) -> nn.Sequential:
    """A 1x1 convolution to ``depth // 2``, then a stride-2 3x3 one to ``depth``."""
    middle = depth // 2
    squeeze = ConvBNAct(in_channels, middle, 1, act="relu6")
    if separable:
        return nn.Sequential(
            squeeze,
            ConvBNAct(middle, middle, 3, stride=2, groups=middle, act="relu6"),
            ConvBNAct(middle, depth, 1, act="relu6"),
        )
    return nn.Sequential(squeeze, ConvBNAct(middle, depth, 3, stride=2, act="relu6"))


def predictor(in_channels: int, outputs: int, separable: bool) -> nn.Module:
    """A map's predictor: a 1x1 convolution, after a 3x3 depthwise one in SSDLite."""
    conv = nn.Conv2d(in_channels, outputs, 1)
    if not separable:
        return conv
    return nn.Sequential(ConvBNAct(in_channels, in_channels, 3, groups=in_channels, act="relu6"), conv)


class SSDHead(nn.Module):
    """The box and class predictors of every map; outputs flattened in anchor order."""

    def __init__(self, channels: list[int], anchors: list[int], num_classes: int, separable: bool) -> None:
        super().__init__()
        self.channels, self.anchors, self.separable = list(channels), list(anchors), separable
        self.boxes = nn.ModuleList(
            predictor(c, a * 4, separable) for c, a in zip(channels, anchors, strict=True)
        )
        self.num_classes = 0
        self.reset(num_classes)

    def reset(self, num_classes: int) -> None:
        if check_num_classes(num_classes) < 2:
            raise ValueError(
                f"a detector needs num_classes >= 2 (the background and a class), got {num_classes}"
            )
        self.num_classes = num_classes
        device = next(self.boxes.parameters()).device
        classes = nn.ModuleList(
            predictor(c, a * num_classes, self.separable)
            for c, a in zip(self.channels, self.anchors, strict=True)
        )
        # New modules start in training mode: give them the head's.
        self.classes = classes.to(device).train(self.training)

    @staticmethod
    def _flatten(output: Tensor, per_anchor: int) -> Tensor:
        n = output.shape[0]
        return output.permute(0, 2, 3, 1).reshape(n, -1, per_anchor)

    def forward(self, maps: list[Tensor]) -> tuple[Tensor, Tensor]:
        boxes = [self._flatten(p(x), 4) for p, x in zip(self.boxes, maps, strict=True)]
        scores = [self._flatten(p(x), self.num_classes) for p, x in zip(self.classes, maps, strict=True)]
        return torch.cat(boxes, dim=1), torch.cat(scores, dim=1)


class SSD(TaskModel):
    """A backbone's two maps, the extra layers, and the predictors of all six maps.

    ``cost_parts`` names the children a cost report totals apart; ``default_input_size``
    is the side the papers report the model at (300 for SSD, 320 for SSDLite).
    """

    cost_parts = ("backbone", "extras", "head")
    output_names = ("boxes", "scores")  # of an ONNX export

    def __init__(
        self,
        backbone: Classifier,
        levels: list[int],
        num_classes: int,
        separable: bool,
        input_size: int,
    ) -> None:
        super().__init__(backbone)
        self.levels = list(levels)
        channels = [backbone.feature_info[i].num_chs for i in self.levels]
        extras = []
        for depth in EXTRA_DEPTHS:
            extras.append(extra_layer(channels[-1], depth, separable))
            channels.append(depth)
        self.extras = nn.ModuleList(extras)
        self.head = SSDHead(channels, anchors_per_position(len(channels)), num_classes, separable)
        self.separable = separable
        self.default_input_size = input_size

    def feature_maps(self, x: Tensor) -> list[Tensor]:
        """The six maps the predictors read, largest first."""
        maps = self.backbone.forward_intermediates(
            x, indices=self.levels, stop_early=True, intermediates_only=True
        )
        assert isinstance(maps, list)
        for layer in self.extras:
            x = maps[-1]
            if x.shape[-2:] == (1, 1) and torch.is_autocast_enabled("cpu"):
                # PyTorch 2.13's bfloat16 weight gradient of a channels-last, stride-2
                # depthwise convolution on a 1 x 1 map leaves the taps that see only padding
                # uninitialised (NaN at random): such a map (small inputs) stays float32.
                with torch.autocast("cpu", enabled=False):
                    maps.append(layer(x.float()))
            else:
                maps.append(layer(x))
        return maps

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.head(self.feature_maps(x))


def _ssd(
    family: str,
    backbone_kwargs: dict[str, Any],
    num_classes: int,
    separable: bool,
    input_size: int,
    backbone_weights: str | None,
) -> SSD:
    backbone = backbone_for(family, backbone_weights, backbone_kwargs)
    strides, location = BACKBONE_MAPS[family]
    backbone.feature_location = location
    levels = [next(i for i, info in enumerate(backbone.feature_info) if info.reduction == s) for s in strides]
    backbone.reset_classifier(0)
    return SSD(backbone, levels, num_classes, separable, input_size)


_COMMON_ARGS = """
        num_classes: outputs per anchor, the background included, an integer >= 2 (91: COCO's 90 classes and background, as the papers count).
        backbone_weights: a weight tag or file for the backbone (its ImageNet classifier is dropped), e.g. mobilenet_v2_100_224.tflite_uint8.
        padding: padding of the backbone's strided convolutions; set by backbone_weights."""


def _padding(backbone_weights: str | None, padding: str) -> dict[str, Any]:
    return {} if backbone_weights else {"padding": padding}


@register_model(family=FAMILY)
def ssdlite_mobilenet_v2(
    num_classes: int = COCO_CLASSES,
    width: float = 1.0,
    expansion: float = 6.0,
    backbone_weights: str | None = None,
    padding: Literal["symmetric", "tf_same"] = "symmetric",
) -> SSD:
    """SSDLite on MobileNetV2 (MobileNetV2, Table 6: 4.3 M parameters, 0.8 B multiply-adds at 320x320).

    Args:
        width: width multiplier (alpha) of the backbone.
        expansion: expansion factor t of the backbone's bottlenecks.
    """
    kwargs = {"width": width, "expansion": expansion, **_padding(backbone_weights, padding)}
    return _ssd("mobilenet_v2", kwargs, num_classes, True, 320, backbone_weights)


def _on_mobilenet_v1(name: str, separable: bool, side: int, summary: str) -> Callable[..., SSD]:
    """The builder ``name`` of a detector on MobileNet v1: SSD300 and SSDLite differ only
    in their extra layers' and predictors' convolutions and the side they are reported at."""

    def builder(
        num_classes: int = COCO_CLASSES,
        width: float = 1.0,
        backbone_weights: str | None = None,
        padding: Literal["symmetric", "tf_same"] = "symmetric",
    ) -> SSD:
        kwargs = {"width": width, **_padding(backbone_weights, padding)}
        return _ssd("mobilenet_v1", kwargs, num_classes, separable, side, backbone_weights)

    builder.__name__ = builder.__qualname__ = name  # weights files name the model by its builder
    builder.__doc__ = f"{summary}\n\n    Args:\n        width: width multiplier (alpha) of the backbone."
    return builder


ssdlite_mobilenet_v1 = register_model("ssdlite_mobilenet_v1", family=FAMILY)(
    _on_mobilenet_v1(
        "ssdlite_mobilenet_v1",
        True,
        320,
        "SSDLite on MobileNet v1 (MobileNetV2, Table 6: 5.1 M parameters, 1.3 B multiply-adds at 320x320).",
    )
)
ssd300_mobilenet_v1 = register_model("ssd300_mobilenet_v1", family=FAMILY)(
    _on_mobilenet_v1(
        "ssd300_mobilenet_v1",
        False,
        300,
        "SSD300 on MobileNet v1 (MobileNet v1, Table 13: 6.8 M parameters, 1.2 B multiply-adds at 300x300).",
    )
)


@register_model(family=FAMILY)
def ssdlite_shufflenet_v1(
    num_classes: int = COCO_CLASSES,
    groups: Literal[1, 2, 3, 4, 8] = 3,
    scale: float = 1.0,
) -> SSD:
    """SSDLite on ShuffleNet v1 (the outputs of stages 3 and 4, at strides 16 and 32).

    Args:
        groups: number of groups g of the backbone's 1x1 group convolutions.
        scale: scale factor s of the backbone's channels.
        num_classes: outputs per anchor, the background included (91: COCO).
    """
    return _ssd("shufflenet_v1", {"groups": groups, "scale": scale}, num_classes, True, 320, None)


@register_model(family=FAMILY)
def ssdlite_squeezenet1_1(num_classes: int = COCO_CLASSES, backbone_weights: str | None = None) -> SSD:
    """SSDLite on SqueezeNet 1.1 (fire5 and fire9, at strides 8 and 16: its last map is at 16).

    Args:
        num_classes: outputs per anchor, the background included (91: COCO).
        backbone_weights: a weight tag or file for the backbone, e.g. squeezenet1_1.gluon_npy.
    """
    return _ssd("squeezenet1_1", {}, num_classes, True, 320, backbone_weights)


for _builder in (ssdlite_mobilenet_v2, ssdlite_mobilenet_v1, ssd300_mobilenet_v1):
    _builder.__doc__ = (_builder.__doc__ or "").rstrip() + "\n" + _COMMON_ARGS.rstrip("\n")
