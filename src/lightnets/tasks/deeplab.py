"""DeepLabv3 (Chen et al., 2017) on the lightnets backbones, as MobileNetV2's Table 7 has it.

The network: an atrous backbone (:func:`~lightnets.tasks.atrous.dilate`) at output
stride 16 or 8, then the DeepLabv3 head on one of its feature maps:

* **ASPP** (atrous spatial pyramid pooling), parallel branches on the feature map: a
  1x1 convolution, three 3x3 convolutions at atrous rates (6, 12, 18) at output stride
  16, doubled at 8, and *image pooling* (global average pool, 1x1 convolution, bilinear
  upsampling back to the map); each branch has 256 channels, BatchNorm and ReLU;
* ``aspp=False``: the 1x1 branch and image pooling only, MobileNetV2's mobile
  configuration (Table 7's 2.11 M / 2.75 B row, 75.32 mIOU on PASCAL VOC 2012 val);
* the branches concatenated, projected by a 1x1 convolution (256, BN, ReLU), dropout
  0.1, a 1x1 convolution to the classes (with bias), bilinear upsampling to the input.

Every branch is a full convolution, as in the official DeepLab code at the defaults the
paper's parameter counts imply: with separable ASPP convolutions MNet V2* with ASPP
would have 2.5 M parameters, not 4.52 M.

**MNet V2\\*** ("second last feature map is used for DeepLabv3 heads", Table 7's note)
is the official DeepLab code's ``_MOBILENET_V2_FINAL_ENDPOINT = 'layer_18'`` in
``research/deeplab/core/feature_extractor.py``: TF-slim numbers MobileNetV2's layers
from one, ``layer_1`` the 3x3 stem, ``layer_2`` .. ``layer_18`` the 17 bottlenecks,
``layer_19`` the 1x1 convolution to 1280 channels. The head therefore takes the output
of the last bottleneck (320 channels, ``features.17`` here), and the 1x1 convolution to
1280 is not part of the network. ``head_input="last"`` keeps it (the head then reads
1280 channels).

The loss (:func:`segmentation_loss`) is cross-entropy that ignores the void label
:data:`VOID` (255, as PASCAL VOC marks object borders).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..layers import ConvBNAct
from ..models import register_model
from ..models.base import Classifier, check_num_classes
from .atrous import dilate, truncate
from .task_model import TaskModel, backbone_for

VOID = 255
ASPP_RATES = (6, 12, 18)  # at output stride 16; doubled at 8, halved at 32
HEAD_CHANNELS = 256
FAMILY = "deeplabv3"


class ImagePooling(nn.Module):
    """ASPP's image-level branch: global average pool, 1x1 conv + BN + ReLU, upsample."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = ConvBNAct(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.conv(self.pool(x))
        return F.interpolate(pooled, size=x.shape[-2:], mode="bilinear", align_corners=False)


class DeepLabV3Head(nn.Module):
    """ASPP (or, with no ``rates``, the 1x1 branch and image pooling), projection, classifier."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        rates: tuple[int, ...] = ASPP_RATES,
        channels: int = HEAD_CHANNELS,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.channels = channels
        self.rates = tuple(rates)
        branches: list[nn.Module] = [ConvBNAct(in_channels, channels, 1)]
        branches += [ConvBNAct(in_channels, channels, 3, dilation=rate) for rate in self.rates]
        branches.append(ImagePooling(in_channels, channels))
        self.branches = nn.ModuleList(branches)
        self.project = ConvBNAct(channels * len(branches), channels, 1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(channels, check_num_classes(num_classes) or 1, 1)
        self.num_classes = num_classes

    def reset(self, num_classes: int) -> None:
        if check_num_classes(num_classes) == 0:
            raise ValueError("a segmentation head needs num_classes >= 1")
        self.num_classes = num_classes
        device = next(self.project.parameters()).device
        self.classifier = nn.Conv2d(self.channels, num_classes, 1).to(device)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.cat([branch(x) for branch in self.branches], dim=1)
        return self.classifier(self.dropout(self.project(x)))


class DeepLabV3(TaskModel):
    """An atrous backbone and the DeepLabv3 head; ``forward`` gives class scores per pixel.

    ``backbone`` is a lightnets model already dilated and truncated (its ``features``
    end at the map the head reads); the output is ``(N, num_classes, H, W)`` at the
    input's size. ``cost_parts`` names the children a cost report totals apart.
    """

    cost_parts = ("backbone", "head")

    def __init__(self, backbone: Classifier, num_classes: int, aspp: bool, output_stride: int) -> None:
        super().__init__(backbone)
        if num_classes < 1:
            raise ValueError(f"num_classes must be an integer >= 1 for segmentation, got {num_classes!r}")
        rates = tuple(r * 16 // output_stride for r in ASPP_RATES) if aspp else ()
        self.head = DeepLabV3Head(backbone.layer_info[-1].num_chs, num_classes, rates)
        self.output_stride = output_stride
        self.aspp = aspp

    def forward_features(self, x: Tensor) -> Tensor:
        return self.backbone.forward_features(x)

    def forward(self, x: Tensor) -> Tensor:
        scores = self.head(self.forward_features(x))
        return F.interpolate(scores, size=x.shape[-2:], mode="bilinear", align_corners=False)


def segmentation_loss(scores: Tensor, target: Tensor, ignore_index: int = VOID) -> Tensor:
    """Mean cross-entropy over the pixels of ``target`` (N, H, W) that are not ``ignore_index``."""
    return F.cross_entropy(scores, target.long(), ignore_index=ignore_index)


def _deeplab(
    backbone_name: str,
    last: int,
    num_classes: int,
    output_stride: int,
    aspp: bool,
    backbone_weights: str | None,
    backbone_kwargs: dict[str, Any],
) -> DeepLabV3:
    backbone = backbone_for(backbone_name, backbone_weights, backbone_kwargs)
    return DeepLabV3(truncate(dilate(backbone, output_stride), last), num_classes, aspp, output_stride)


_COMMON_ARGS = """
        num_classes: classes of the segmentation, an integer >= 1 (21: PASCAL VOC's 20 and background).
        output_stride: total stride of the backbone (8, 16 or 32); the later strides become atrous (dilated) convolutions.
        aspp: the ASPP branches (three atrous 3x3 convolutions) beside the 1x1 convolution and image pooling; off gives MobileNetV2's mobile head.
        backbone_weights: a weight tag or file for the backbone (its ImageNet classifier is dropped), e.g. mobilenet_v2_100_224.tflite_uint8.
        padding: padding of the backbone's strided convolutions; set by backbone_weights."""


@register_model(family=FAMILY)
def deeplabv3_mobilenet_v2(
    num_classes: int = 21,
    output_stride: Literal[8, 16, 32] = 16,
    aspp: bool = False,
    head_input: Literal["second_last", "last"] = "second_last",
    width: float = 1.0,
    expansion: float = 6.0,
    backbone_weights: str | None = None,
    padding: Literal["symmetric", "tf_same"] = "symmetric",
) -> DeepLabV3:
    """DeepLabv3 on MobileNetV2, MNet V2* of MobileNetV2's Table 7 (the head on the second-last feature map).

    Args:
        head_input: the map the head reads: 'second_last' (the last bottleneck, 320 channels: MNet V2*, as the official DeepLab code) or 'last' (after the 1x1 convolution to 1280).
        width: width multiplier (alpha) of the backbone.
        expansion: expansion factor t of the backbone's bottlenecks.
    """
    last = -2 if head_input == "second_last" else -1
    kwargs: dict[str, Any] = {"width": width, "expansion": expansion}
    if not backbone_weights:
        kwargs["padding"] = padding
    return _deeplab("mobilenet_v2", last, num_classes, output_stride, aspp, backbone_weights, kwargs)


@register_model(family=FAMILY)
def deeplabv3_mobilenet_v1(
    num_classes: int = 21,
    output_stride: Literal[8, 16, 32] = 16,
    aspp: bool = True,
    width: float = 1.0,
    backbone_weights: str | None = None,
    padding: Literal["symmetric", "tf_same"] = "symmetric",
) -> DeepLabV3:
    """DeepLabv3 on MobileNet v1, MNet V1 of MobileNetV2's Table 7 (with ASPP by default).

    Args:
        width: width multiplier (alpha) of the backbone.
    """
    kwargs: dict[str, Any] = {"width": width}
    if not backbone_weights:
        kwargs["padding"] = padding
    return _deeplab("mobilenet_v1", -1, num_classes, output_stride, aspp, backbone_weights, kwargs)


@register_model(family=FAMILY)
def deeplabv3_shufflenet_v1(
    num_classes: int = 21,
    output_stride: Literal[8, 16, 32] = 16,
    aspp: bool = False,
    groups: Literal[1, 2, 3, 4, 8] = 3,
    scale: float = 1.0,
) -> DeepLabV3:
    """DeepLabv3 on ShuffleNet v1 (the head on stage 4's output).

    Args:
        groups: number of groups g of the backbone's 1x1 group convolutions.
        scale: scale factor s of the backbone's channels.
    """
    kwargs: dict[str, Any] = {"groups": groups, "scale": scale}
    return _deeplab("shufflenet_v1", -1, num_classes, output_stride, aspp, None, kwargs)


@register_model(family=FAMILY)
def deeplabv3_squeezenet1_1(
    num_classes: int = 21,
    output_stride: Literal[8, 16] = 16,
    aspp: bool = False,
    backbone_weights: str | None = None,
) -> DeepLabV3:
    """DeepLabv3 on SqueezeNet 1.1 (the head on fire9; SqueezeNet 1.1's total stride is 16)."""
    return _deeplab("squeezenet1_1", -1, num_classes, output_stride, aspp, backbone_weights, {})


for _builder in (deeplabv3_mobilenet_v2, deeplabv3_mobilenet_v1):
    _builder.__doc__ = (_builder.__doc__ or "").rstrip() + "\n" + _COMMON_ARGS.rstrip("\n")
