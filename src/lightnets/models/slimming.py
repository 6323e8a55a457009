"""Narrower blocks: inner channels removed, leaving a smaller dense model.

A block's inner tensor (the expansion of MobileNetV2's inverted residual, the squeeze of
SqueezeNet's Fire module) is made by one 1x1 convolution and read by the layers after
it. Removing one of its channels removes one filter of that pointwise convolution (and
its BatchNorm entry), the channel of the depthwise convolution between (MobileNetV2) and
one input channel of each reader. The block's input and output keep their channels, so
every block can be narrowed on its own and the model stays a plain dense network that
``profile``, ``export`` and ``bench`` see as smaller.

Blocks whose inner tensor is their input (MobileNetV2's first block, t = 1; MobileNet
v1's depthwise-separable blocks) or is split into groups and shuffled (ShuffleNet) are
not narrowable here. A model's inner widths (:func:`inner_widths`) are stored with its
weights, and :func:`narrow_to` rebuilds the same shapes before the weights are loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeGuard, cast

import torch
from torch import Tensor, nn

from ..layers import ConvBNAct, Fire, InvertedResidual

__all__ = [
    "inner_layers",
    "inner_widths",
    "keep_inner_channels",
    "narrow_to",
    "narrowable_blocks",
    "narrowed_widths",
]


Narrowable = InvertedResidual | Fire


def _is_narrowable(module: nn.Module) -> TypeGuard[Narrowable]:
    if isinstance(module, InvertedResidual):
        return isinstance(module.expand, ConvBNAct)
    return isinstance(module, Fire)


def narrowable_blocks(model: nn.Module) -> dict[str, Narrowable]:
    """The blocks whose inner channels can be removed, by module name, in order."""
    return {name: m for name, m in model.named_modules() if _is_narrowable(m)}


def inner_widths(model: nn.Module) -> dict[str, int]:
    """Each narrowable block's inner channel count."""
    return {name: int(block.inner_channels) for name, block in narrowable_blocks(model).items()}


def narrowed_widths(model: nn.Module) -> dict[str, int]:
    """The inner widths of the blocks that were narrowed (what a weights file records)."""
    return {
        name: int(block.inner_channels) for name, block in narrowable_blocks(model).items() if block.narrowed
    }


def inner_layers(block: nn.Module) -> tuple[ConvBNAct, ConvBNAct | None, list[ConvBNAct]]:
    """The pointwise layer that makes a block's inner tensor, the depthwise layer on it
    (or None) and the layers that read it; ``ValueError`` for a block that is not narrowable."""
    if not _is_narrowable(block):
        raise ValueError(f"{type(block).__name__} has no inner channels that can be removed on their own")
    if isinstance(block, InvertedResidual):
        return cast(ConvBNAct, block.expand), block.depthwise, [block.project]
    readers = [e for e in (block.expand1x1, block.expand3x3) if e is not None]
    return block.squeeze, None, readers


def _conv(unit: ConvBNAct) -> nn.Conv2d:
    conv = unit.conv
    assert isinstance(conv, nn.Conv2d)
    return conv


def _new_conv(old: nn.Conv2d, weight: Tensor, bias: Tensor | None, groups: int) -> nn.Conv2d:
    conv = nn.Conv2d(
        weight.shape[1] * groups,
        weight.shape[0],
        cast(tuple[int, int], old.kernel_size),
        stride=cast(tuple[int, int], old.stride),
        padding=cast(str | tuple[int, int], old.padding),
        dilation=cast(tuple[int, int], old.dilation),
        groups=groups,
        bias=bias is not None,
    ).to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None and conv.bias is not None:
            conv.bias.copy_(bias)
    return conv.train(old.training)


def _keep_outputs(unit: ConvBNAct, keep: Tensor, depthwise: bool = False) -> None:
    """Keep the output channels ``keep`` of ``unit`` (and so its input ones if depthwise)."""
    old = _conv(unit)
    bias = old.bias.detach()[keep] if old.bias is not None else None
    unit.conv = _new_conv(old, old.weight.detach()[keep], bias, len(keep) if depthwise else 1)
    norm = getattr(unit, "bn", None)
    if isinstance(norm, nn.BatchNorm2d):
        new = nn.BatchNorm2d(len(keep), norm.eps, norm.momentum, norm.affine, norm.track_running_stats)
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                source = getattr(norm, name)
                if source is not None:
                    getattr(new, name).copy_(source.detach()[keep])
            if norm.num_batches_tracked is not None and new.num_batches_tracked is not None:
                new.num_batches_tracked.copy_(norm.num_batches_tracked)
        like = norm.running_mean if norm.running_mean is not None else norm.weight  # device and dtype
        if like is not None:
            new = new.to(device=like.device, dtype=like.dtype)
        unit.bn = new.train(norm.training)
    unit.out_channels = len(keep)
    if depthwise:
        unit.in_channels = len(keep)


def _keep_inputs(unit: ConvBNAct, keep: Tensor) -> None:
    old = _conv(unit)
    bias = old.bias.detach() if old.bias is not None else None
    unit.conv = _new_conv(old, old.weight.detach()[:, keep], bias, 1)
    unit.in_channels = len(keep)


def keep_inner_channels(block: Narrowable, keep: Tensor | list[int]) -> None:
    """Narrow ``block`` in place to the inner channels ``keep`` (indices, in the order given)."""
    producer, depthwise, readers = inner_layers(block)
    keep = torch.as_tensor(keep, dtype=torch.long)
    width = int(block.inner_channels)
    if keep.dim() != 1 or len(keep) == 0 or len(set(keep.tolist())) != len(keep):
        raise ValueError(f"keep must list distinct channel indices, at least one, got {keep.tolist()}")
    if int(keep.min()) < 0 or int(keep.max()) >= width:
        raise ValueError(f"channel indices must be in [0, {width}), got {keep.tolist()}")
    _keep_outputs(producer, keep)
    if depthwise is not None:
        _keep_outputs(depthwise, keep, depthwise=True)
    for reader in readers:
        _keep_inputs(reader, keep)
    block.inner_channels = len(keep)
    block.narrowed = True
    if isinstance(block, InvertedResidual):
        block.hidden_channels = len(keep)


def narrow_to(model: nn.Module, widths: Mapping[str, int]) -> nn.Module:
    """Give the named blocks of ``model`` the inner widths ``widths`` (their first
    channels kept: the shapes a narrowed model's weights are loaded into)."""
    blocks = narrowable_blocks(model)
    unknown = sorted(set(widths) - set(blocks))
    if unknown:
        raise ValueError(
            f"no narrowable block named {', '.join(unknown)} in {type(model).__name__} "
            f"(its narrowable blocks: {', '.join(blocks) or 'none'})"
        )
    for name, width in widths.items():
        block = blocks[name]
        if isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= block.inner_channels:
            raise ValueError(
                f"inner width of {name} must be a whole number in 1..{block.inner_channels}, got {width!r}"
            )
        if width != block.inner_channels:
            keep_inner_channels(block, list(range(width)))
    refresh_levels(model)
    return model


def refresh_levels(model: nn.Module) -> None:
    """Bring a narrowed model's ``feature_info`` up to date (an expansion level's channels)."""
    refresh = getattr(model, "refresh_feature_info", None)
    if refresh is not None:
        refresh()
