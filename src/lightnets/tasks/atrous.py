"""Atrous backbones: a built classifier turned to a smaller output stride.

DeepLab (Chen et al., 2017) keeps the feature maps of a classification network larger
by replacing its later strides with dilation ("atrous convolution"): once the network
has reached the wanted *output stride* (16 or 8), each further stride-2 layer runs at
stride 1 and every 3x3 convolution after it has its dilation rate multiplied by 2, so
each filter still sees the field of view it was trained for. The rule is TF-slim's
(``mobilenet.py``'s ``output_stride``, as the official DeepLab code calls it): the
layer whose stride is removed keeps the rate before it, the layers after it get the
doubled rate.

:func:`dilate` does this to any model built on :class:`~lightnets.models.Classifier`
(every family), after it was built and after its weights were loaded, so the model
files keep their defaults and weights load unchanged. Pools in the dilated part keep
their size at stride 1 (padding ``k // 2``); a TensorFlow "SAME" pad before a strided
convolution is dropped, since at stride 1 "SAME" is the symmetric padding.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from ..layers import TFSamePad
from ..models.base import Classifier, ClassifierHead, feature_levels

OUTPUT_STRIDES = (8, 16, 32)


def _set_stride_one(module: nn.Module) -> None:
    """The module's own stride to 1, keeping its output size (``stride=2`` -> ``1``)."""
    if isinstance(module, nn.Conv2d):
        module.stride = (1, 1)
    elif isinstance(module, nn.MaxPool2d | nn.AvgPool2d):
        kernel = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
        module.stride = 1
        module.padding = kernel // 2
        module.ceil_mode = False


def _dilate_conv(conv: nn.Conv2d, rate: int) -> None:
    kernel = conv.kernel_size
    if kernel == (1, 1):
        return
    conv.dilation = (rate, rate)
    conv.padding = (rate * (kernel[0] - 1) // 2, rate * (kernel[1] - 1) // 2)


def _convert_layer(layer: nn.Module, rate: int, remove_stride: bool) -> None:
    """Give every convolution of ``layer`` dilation ``rate``; drop its strides if asked."""
    for parent in [layer, *layer.modules()]:
        for name, child in list(parent.named_children()):
            if remove_stride and isinstance(child, TFSamePad):
                setattr(parent, name, nn.Identity())
    for module in [layer, *layer.modules()]:
        if remove_stride:
            _set_stride_one(module)
            # The blocks record their stride (ConvBNAct.stride, InvertedResidual.stride,
            # DepthwiseSeparable.inner_stride ...); keep them true to the modules.
            for attribute in ("stride", "inner_stride"):
                value = getattr(module, attribute, None)
                if isinstance(value, int) and not isinstance(module, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d):
                    if value > 1:
                        object.__setattr__(module, attribute, 1)
        if isinstance(module, nn.Conv2d):
            if remove_stride:
                # A strided conv after a dropped "SAME" pad had padding 0.
                module.padding = ((module.kernel_size[0] - 1) // 2, (module.kernel_size[1] - 1) // 2)
            _dilate_conv(module, rate)


def dilate(model: Classifier, output_stride: int) -> Classifier:
    """Turn ``model`` (in place) into an atrous network of total stride ``output_stride``.

    ``output_stride`` is 8, 16 or 32; at or above the model's own total stride nothing
    changes. ``layer_info``, ``feature_info`` (levels now share strides: one level per
    stride, the last map at it), ``total_stride`` and ``output_stride`` describe the
    result; the parameters are untouched, so loaded weights stay valid. Returns ``model``.
    """
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}")
    if not isinstance(model, Classifier):
        raise TypeError(f"dilate needs a lightnets model (Classifier), got {type(model).__name__}")
    current, rate, previous = 1, 1, 1
    info = []
    for entry, layer in zip(model.layer_info, model.features, strict=True):
        stride = entry.reduction // previous
        previous = entry.reduction
        if stride > 1 and current * stride > output_stride:
            _convert_layer(layer, rate, remove_stride=True)
            rate *= stride
        else:
            if rate > 1:
                _convert_layer(layer, rate, remove_stride=False)
            current *= stride
        info.append(dataclasses.replace(entry, reduction=current))
    model.layer_info = info
    model._levels = {loc: feature_levels(model.features, info, loc) for loc in model._levels}
    model.feature_info = model._levels[model.feature_location]
    model.total_stride = current
    setattr(model, "output_stride", current)  # noqa: B010  (a plain attribute, not a submodule)
    return model


def truncate(model: Classifier, last: int) -> Classifier:
    """Keep ``features[: last + 1]`` of ``model`` and no classifier (in place).

    For dense heads that attach before the end (MobileNetV2's second-last feature map).
    Negative ``last`` counts from the end. Returns ``model``.
    """
    count = len(model.features)
    index = last + count if last < 0 else last
    if not 0 <= index < count:
        raise ValueError(f"layer {last} is out of range: {type(model).__name__} has {count} layers")
    model.features = nn.Sequential(*list(model.features)[: index + 1])
    model.layer_info = model.layer_info[: index + 1]
    model.head = ClassifierHead(model.layer_info[-1].num_chs, 0)  # global pooling, no parameters
    model.refresh_feature_info()
    model.total_stride = model.layer_info[-1].reduction
    return model
