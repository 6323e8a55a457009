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
multiple of ``divisor`` (halves to even, so small blocks keep more or less than the fraction) (8: what vectorised CPU kernels and the families' own
``make_divisible`` favour).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..models.slimming import inner_layers, keep_inner_channels, narrowable_blocks, refresh_levels

__all__ = ["ChannelRow", "channel_scores", "kept_width", "prune_channels"]


@dataclass(frozen=True)
class ChannelRow:
    """One narrowed block: its name and inner channels before and after."""

    name: str
    before: int
    after: int


def channel_scores(block: nn.Module) -> Tensor:
    """Each inner channel's score: the L1 norm of its pointwise filter, BatchNorm scale folded in."""
    producer = inner_layers(block)[0]
    conv = producer.conv
    assert isinstance(conv, nn.Conv2d)
    weight = conv.weight.detach()
    scores = weight.abs().flatten(1).sum(dim=1)
    norm = getattr(producer, "bn", None)
    if isinstance(norm, nn.BatchNorm2d) and norm.running_var is not None:
        gamma = norm.weight.detach().abs() if norm.weight is not None else torch.ones_like(scores)
        scores = scores * gamma / torch.sqrt(norm.running_var.detach() + norm.eps)
    return scores


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
def prune_channels(model: nn.Module, fraction: float, divisor: int = 8) -> list[ChannelRow]:
    """Remove ``fraction`` of every narrowable block's inner channels, the lowest-scoring
    (:func:`channel_scores`), in place; returns one row per block.

    Raises ``ValueError`` for a fraction outside ``[0, 1)`` or a model without
    narrowable blocks (MobileNet v1, ShuffleNet, the reference networks).
    """
    blocks = narrowable_blocks(model)
    if not blocks:
        raise ValueError(
            f"{type(model).__name__} has no blocks whose inner channels can be removed on their own "
            "(structured pruning narrows MobileNetV2's expansions and SqueezeNet's squeeze layers)"
        )
    rows = []
    for name, block in blocks.items():
        before = int(block.inner_channels)
        after = kept_width(before, fraction, divisor)
        if after < before:
            keep = torch.topk(channel_scores(block), after).indices.sort().values
            keep_inner_channels(block, keep)
        rows.append(ChannelRow(name, before, after))
    refresh_levels(model)
    return rows
