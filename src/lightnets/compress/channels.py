"""Structured pruning: whole inner channels of the blocks removed, a smaller dense model.

Unstructured sparsity shrinks a file but not the work (a dense kernel multiplies the
zeros anyway); removing whole channels shrinks both. The channels are the inner tensor
of each narrowable block (:mod:`lightnets.models.slimming`): the outputs of the
pointwise convolution that opens MobileNetV2's inverted residual (its expansion) or
SqueezeNet's Fire module (its squeeze).

Criterion: a channel's score is the L1 norm of the pointwise filter that makes it, with
the BatchNorm scale ``|gamma| / sqrt(var + eps)`` that follows folded in, i.e. the
filter's size as the network computes it at inference (the L1 filter criterion of Li et
al., 2017, "Pruning filters for efficient ConvNets", which the BatchNorm scale makes
comparable across channels as in Liu et al., 2017, "network slimming"). Every block
keeps the same fraction of its channels, the highest-scoring ones, rounded to the nearest
multiple of ``divisor`` (8: what vectorised CPU kernels and the families' own
``make_divisible`` favour; halves to even, so small blocks keep a little more or less).

With calibration images the criterion is the channel's **variation** instead: once its
mean is compensated (below), what removing it costs the readers is its variance times the
squared norm of their weights on it, the expected squared error it adds to their outputs
(:func:`variation_scores`); a filter's size says little of that when BatchNorm has been
folded into it.

**Mean compensation** (with calibration images): a removed channel is not silent, it
carried a mean activation that the layers reading it turned into an offset of their
outputs. Measured on the images before anything is removed, each removed channel's mean
(the inner tensor as the readers see it, after the depthwise layer in MobileNetV2) times
the reader's filter is added to the reader's bias (or taken from its BatchNorm's running
mean), so the readers' outputs keep their mean; the channels' variation is what is lost.
(Without it, ``benchmarks/compress_channels.py`` measured MobileNetV2 and SqueezeNet
near 0 % top-1 after a quarter of the channels went, and recovery did not bring them back.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..deploy.fold import batchnorm_scale
from ..models.slimming import inner_layers, keep_inner_channels, narrowable_blocks, refresh_levels

CALIBRATION_IMAGES = 256  # images the channels' statistics are measured on
CRITERIA = ("l1", "variation")

__all__ = [
    "CALIBRATION_IMAGES",
    "ChannelRow",
    "channel_scores",
    "compensate",
    "inner_statistics",
    "kept_width",
    "prune_channels",
    "variation_scores",
]


@dataclass(frozen=True)
class ChannelRow:
    """One narrowed block: its name and inner channels before and after."""

    name: str
    before: int
    after: int


def _filters(unit: nn.Module) -> Tensor:
    """A pointwise unit's convolution weight (float64) with the BatchNorm after it folded
    in: the filters as the network computes them at inference."""
    conv = unit.conv
    assert isinstance(conv, nn.Conv2d)
    weight = conv.weight.detach().double()
    norm = getattr(unit, "bn", None)
    if isinstance(norm, nn.BatchNorm2d) and norm.running_var is not None:
        weight = weight * batchnorm_scale(norm).view(-1, 1, 1, 1)
    return weight


def channel_scores(block: nn.Module) -> Tensor:
    """Each inner channel's score: the L1 norm of its pointwise filter, BatchNorm scale folded in."""
    producer = inner_layers(block)[0]
    return _filters(producer).abs().flatten(1).sum(dim=1).float()


def kept_width(channels: int, fraction: float, divisor: int = 8) -> int:
    """The channels a block of ``channels`` keeps when ``fraction`` of them are removed."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the fraction of channels removed must be in [0, 1), got {fraction!r}")
    if divisor < 1:
        raise ValueError(f"divisor must be at least 1, got {divisor}")
    wanted = channels * (1.0 - fraction)
    rounded = max(divisor, divisor * round(wanted / divisor))
    return min(channels, rounded)


@torch.no_grad()
def inner_statistics(model: nn.Module, batches: Sequence[Tensor]) -> dict[str, tuple[Tensor, Tensor]]:
    """Each narrowable block's inner tensor, as its readers see it: the mean and the
    variance of every channel over all positions of the images of ``batches`` (float64)."""
    sums: dict[str, list[Tensor]] = {}  # name -> [count, sum, sum of squares]
    hooks = []
    for name, block in narrowable_blocks(model).items():
        reader = inner_layers(block)[2][0]

        def add(module: nn.Module, inputs: tuple, name: str = name) -> None:
            x = inputs[0].detach().double()
            new = [torch.tensor(x.numel() // x.shape[1]), x.sum(dim=(0, 2, 3)), x.square().sum(dim=(0, 2, 3))]
            sums[name] = [a + b for a, b in zip(sums[name], new, strict=True)] if name in sums else new

        hooks.append(reader.register_forward_pre_hook(add))
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            model(batch)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    if not sums:
        raise ValueError("no calibration images to measure the channels' statistics on")
    out = {}
    for name, (count, total, square) in sums.items():
        mean = total / count
        out[name] = (mean, (square / count - mean.square()).clamp_min(0))
    return out


def variation_scores(block: nn.Module, variance: Tensor) -> Tensor:
    """Each inner channel's score once its mean is compensated: the squared error its
    removal adds to the readers' outputs, its variance times the squared norm of the
    readers' weights on it (spatial correlations inside a 3x3 reader ignored)."""
    reach = torch.zeros_like(variance)
    for reader in inner_layers(block)[2]:
        reach += _filters(reader).square().sum(dim=(0, 2, 3)).to(reach.device)
    return variance * reach


def compensate(block: nn.Module, removed: Tensor, means: Tensor) -> None:
    """Fold the mean contribution of the inner channels ``removed`` into the bias of every
    layer reading them (before they are removed; see the module docstring)."""
    for reader in inner_layers(block)[2]:
        conv = reader.conv
        assert isinstance(conv, nn.Conv2d)
        weight = conv.weight.detach()[:, removed].double().sum(dim=(2, 3))  # (out, removed)
        offset = (weight @ means[removed].to(weight.device)).to(conv.weight.dtype)
        norm = getattr(reader, "bn", None)
        if isinstance(norm, nn.BatchNorm2d) and norm.running_mean is not None:
            norm.running_mean -= offset
        elif conv.bias is not None:
            conv.bias += offset


@torch.no_grad()
def prune_channels(
    model: nn.Module,
    fraction: float,
    divisor: int = 8,
    calibration: Sequence[Tensor] | None = None,
    criterion: str | None = None,
) -> list[ChannelRow]:
    """Remove ``fraction`` of every narrowable block's inner channels, the lowest-scoring,
    in place; returns one row per block. With ``calibration`` (batches of images), the
    removed channels' means are compensated (module docstring). ``criterion``:
    ``"variation"`` (:func:`variation_scores`, the default with calibration images) or
    ``"l1"`` (:func:`channel_scores`, the default and only choice without).

    Raises ``ValueError`` for a fraction outside ``[0, 1)``, an unknown criterion or a
    model without narrowable blocks (MobileNet v1, ShuffleNet, the reference networks).
    """
    criterion = criterion or ("l1" if calibration is None else "variation")
    if criterion not in CRITERIA or (criterion == "variation" and calibration is None):
        raise ValueError(
            f"criterion must be one of {CRITERIA} ('variation' needs calibration images), got {criterion!r}"
        )
    blocks = narrowable_blocks(model)
    if not blocks:
        raise ValueError(
            f"{type(model).__name__} has no blocks whose inner channels can be removed on their own "
            "(structured pruning narrows MobileNetV2's expansions and SqueezeNet's squeeze layers)"
        )
    statistics = inner_statistics(model, calibration) if calibration is not None else None
    rows = []
    for name, block in blocks.items():
        before = int(block.inner_channels)
        after = kept_width(before, fraction, divisor)
        if after < before:
            if statistics is not None and criterion == "variation":
                scores = variation_scores(block, statistics[name][1])
            else:
                scores = channel_scores(block)
            keep = torch.topk(scores, after).indices.sort().values
            if statistics is not None:
                removed = torch.ones(before, dtype=torch.bool)
                removed[keep] = False
                compensate(block, removed.nonzero().flatten(), statistics[name][0])
            keep_inner_channels(block, keep)
        rows.append(ChannelRow(name, before, after))
    refresh_levels(model)
    return rows
