"""Equal activation ranges for the two branches of a Fire module, before int8 TFLite.

TFLite's int8 concatenation takes one scale for all its inputs (the quantiser gives them
the output's, and XNNPACK requires it), so the Fire module's expand1x1 and expand3x3
outputs share the range of the wider one and the narrower branch loses up to a bit of
resolution (SqueezeNet 1.1's fire9: 342 against 604 on real images). ONNX Runtime keeps a
scale per input. The network can be changed to suit: a branch is a convolution followed
by ReLU, which commutes with a positive scale, so multiplying a branch's filters and bias
by ``a`` multiplies its output by ``a``, and dividing the input channels of the next
convolution that reads them by ``a`` gives the same network in float (the cross-layer
equalisation of Nagel et al., 2019, "Data-free quantization through weight equalization
and bias correction", applied where the concatenation forces the ranges together). Each
branch is scaled up to the range of the wider one, measured on the calibration images.

A Fire module is equalised only when the convolution that reads its output is known: the
next Fire module's squeeze (through max pooling, which commutes with the scale too) or a
SqueezeNet classifier's convolution; a bypass on either side (an addition) leaves it as
it is.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from ..layers import Fire
from ..models.base import ConvClassifierHead

__all__ = ["equalize_fire_branches"]


def _scalable(branch: nn.Module) -> bool:
    """Whether a positive scale of the branch's convolution scales its output: nothing
    after the convolution but ReLU (or a folded BatchNorm, now an identity)."""
    return isinstance(getattr(branch, "conv", None), nn.Conv2d) and all(
        isinstance(layer, nn.ReLU | nn.Identity) for name, layer in branch.named_children() if name != "conv"
    )


def _conv(module: nn.Module | None) -> nn.Conv2d | None:
    conv = getattr(module, "conv", None)
    return conv if isinstance(conv, nn.Conv2d) else None


def _reader(model: nn.Module, modules: list[nn.Module], index: int) -> nn.Conv2d | None:
    """The convolution that reads the output of ``modules[index]``, if it is known."""
    for module in modules[index + 1 :]:
        if isinstance(module, nn.MaxPool2d):
            continue
        if isinstance(module, Fire) and module.bypass is None:
            return _conv(module.squeeze)
        return None
    head = getattr(model, "head", None)
    return _conv(head.conv) if isinstance(head, ConvClassifierHead) else None


@torch.no_grad()
def equalize_fire_branches(model: nn.Module, images: Tensor, batch_size: int = 32) -> int:
    """Scale the branches of ``model``'s Fire modules (in place, float output unchanged)
    to equal peaks over ``images`` (N, C, H, W); returns how many modules were changed."""
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential):
        return 0
    modules = list(features)
    # Per Fire module: its two branches (ConvBNAct: convolution, ReLU) and the reader.
    found: list[tuple[nn.Module, nn.Module, nn.Conv2d]] = []
    for index, module in enumerate(modules):
        if not isinstance(module, Fire) or module.bypass is not None:
            continue
        branches = (module.expand1x1, module.expand3x3)
        reader = _reader(model, modules, index)
        if reader is not None and all(b is not None and _scalable(b) for b in branches):
            found.append((cast(nn.Module, module.expand1x1), cast(nn.Module, module.expand3x3), reader))
    peaks: dict[nn.Module, float] = {}

    def record(branch: nn.Module, _inputs: tuple, output: Tensor) -> None:
        peaks[branch] = max(peaks.get(branch, 0.0), float(output.max()))

    hooks = [branch.register_forward_hook(record) for *branches, _ in found for branch in branches]
    try:
        for batch in images.split(batch_size):
            model(batch)
    finally:
        for hook in hooks:
            hook.remove()
    changed = 0
    for first, second, reader in found:
        if min(peaks[first], peaks[second]) <= 0:
            continue  # a branch silent on every image: nothing to match
        top = max(peaks[first], peaks[second])
        start = 0
        for branch in (first, second):
            conv = _conv(branch)
            assert conv is not None  # checked by _scalable
            factor = top / peaks[branch]
            conv.weight.mul_(factor)
            if conv.bias is not None:
                conv.bias.mul_(factor)
            reader.weight[:, start : start + conv.out_channels].div_(factor)
            start += conv.out_channels
        changed += 1
    return changed
