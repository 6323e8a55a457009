"""Low-rank layers: one convolution or fully connected layer as two thin ones.

A fully connected or 1x1 layer with weight ``W`` (out x in) of rank ``r`` is the product
of an ``r x in`` layer and an ``out x r`` one: ``r (in + out)`` parameters and
multiply-adds per position instead of ``in x out``. A k x k convolution is split in space
(Jaderberg et al., 2014, "Speeding up convolutional neural networks with low rank
expansions", scheme 2): a k x 1 convolution to ``r`` channels, then a 1 x k one to the
output channels, ``r k (in + out)`` instead of ``k^2 in out``. :class:`LowRank` holds the
pair, the first layer without a bias (the original bias goes on the second); the model
stays plain convolutions and linear layers that ``profile``, ``export`` and ``bench``
see as they are.

A model's ranks (:func:`low_ranks`) are stored with its weights, and :func:`factorize_to`
rebuilds the same shapes before the weights are loaded; the values come from
:mod:`lightnets.compress.low_rank` (the SVD of each layer).
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

__all__ = ["LowRank", "factorizable", "factorize_to", "full_rank", "low_ranks", "put_layer"]

Factorizable = nn.Conv2d | nn.Linear


def factorizable(layer: nn.Module) -> bool:
    """Whether ``layer`` can be split in two: a linear layer, or an ungrouped convolution
    with zero padding (not a depthwise or grouped one: its groups are already thin)."""
    if isinstance(layer, nn.Linear):
        return True
    return isinstance(layer, nn.Conv2d) and layer.groups == 1 and layer.padding_mode == "zeros"


def full_rank(layer: Factorizable) -> int:
    """The largest rank of ``layer``'s split: ``min(in, out)`` for linear and 1x1 layers,
    ``min(in k_h, out k_w)`` for a k_h x k_w convolution."""
    if isinstance(layer, nn.Linear):
        return min(layer.in_features, layer.out_features)
    k_h, k_w = layer.kernel_size
    return min(layer.in_channels * k_h, layer.out_channels * k_w)


class LowRank(nn.Sequential):
    """``layer`` as two thin layers of ``rank`` channels in between (weights uninitialised:
    :func:`lightnets.compress.low_rank.factorize` sets them from the SVD)."""

    def __init__(self, layer: Factorizable, rank: int) -> None:
        if not factorizable(layer):
            raise ValueError(f"a {type(layer).__name__} with groups or non-zero padding cannot be factorised")
        if not 1 <= rank <= full_rank(layer):
            raise ValueError(f"rank {rank} is outside 1..{full_rank(layer)}, the layer's full rank")
        bias = layer.bias is not None
        first: nn.Module
        second: nn.Module
        if isinstance(layer, nn.Linear):
            first = nn.Linear(layer.in_features, rank, bias=False)
            second = nn.Linear(rank, layer.out_features, bias=bias)
        else:
            if isinstance(layer.padding, str):
                raise ValueError(f"padding={layer.padding!r} cannot be factorised; give it in pixels")
            (k_h, k_w), (s_h, s_w) = layer.kernel_size, layer.stride
            (p_h, p_w), (d_h, d_w) = layer.padding, layer.dilation
            first = nn.Conv2d(layer.in_channels, rank, (k_h, 1), (s_h, 1), (p_h, 0), (d_h, 1), bias=False)
            second = nn.Conv2d(rank, layer.out_channels, (1, k_w), (1, s_w), (0, p_w), (1, d_w), bias=bias)
        super().__init__(first, second)
        self.rank = rank


def put_layer(model: nn.Module, name: str, layer: nn.Module) -> None:
    """Put ``layer`` in ``model`` in place of the submodule called ``name``."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, layer)


def factorize_to(model: nn.Module, ranks: Mapping[str, int]) -> nn.Module:
    """Replace each layer named in ``ranks`` by a :class:`LowRank` of that rank (in place;
    returns ``model``). An unknown name, a layer that cannot be split or a rank outside
    ``1..full rank`` raises ``ValueError`` naming the layer."""
    for name, rank in ranks.items():
        try:
            layer = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"the model has no layer {name!r} to factorise") from None
        if isinstance(layer, LowRank):
            raise ValueError(f"layer {name!r} is factorised already")
        if not isinstance(layer, nn.Conv2d | nn.Linear) or not factorizable(layer):
            raise ValueError(f"layer {name!r} ({type(layer).__name__}) cannot be factorised")
        try:
            pair = LowRank(layer, rank)
        except ValueError as error:
            raise ValueError(f"layer {name!r}: {error}") from None
        put_layer(model, name, pair.to(next(layer.parameters()).device))
    return model


def low_ranks(model: nn.Module) -> dict[str, int]:
    """The factorised layers of ``model`` and their ranks (``{}`` when none is)."""
    return {name: module.rank for name, module in model.named_modules() if isinstance(module, LowRank)}
