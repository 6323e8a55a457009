"""Low-rank factorisation: layers replaced by two thin ones from their SVD.

For a fully connected or 1x1 layer, the truncated SVD ``W ~ U_r S_r V_r^T`` is the best
rank-``r`` approximation (Eckart-Young): the first layer gets ``sqrt(S_r) V_r^T``, the
second ``U_r sqrt(S_r)`` and the bias. A k_h x k_w convolution is split into a k_h x 1 and
a 1 x k_w one (:mod:`lightnets.models.low_rank`): its weight ``W[o, i, y, x]`` rearranged
as the matrix ``M[(i, y), (o, x)]`` has the same SVD structure, so the truncated SVD of
``M`` gives the best pair of that shape (Tai et al., 2016, "Convolutional neural networks
with low-rank regularization"). Depthwise and grouped layers are not split.

The rank is given, or found per layer as the smallest that keeps a fraction ``energy``
of the squared singular values (the Frobenius norm of the weight). A layer is only split
where that saves parameters: ``r (in + out) < in x out`` for a 1x1 layer. Recovery
(distillation from the original model) is :mod:`lightnets.compress.recovery`'s.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..models.low_rank import LowRank, factorizable, full_rank, put_layer

__all__ = ["RankRow", "factorize", "rank_for_energy"]


@dataclass(frozen=True)
class RankRow:
    """One layer considered: its parameters before and after, the rank kept (None: left
    whole) and the fraction of the squared singular values kept."""

    name: str
    shape: tuple[int, ...]
    full_rank: int
    rank: int | None
    params_before: int
    params_after: int
    energy: float


def rank_for_energy(singular_values: Tensor, energy: float) -> int:
    """The smallest rank whose singular values hold ``energy`` of the sum of squares."""
    if not 0 < energy <= 1:
        raise ValueError(f"energy must be in (0, 1], got {energy}")
    squares = singular_values.double() ** 2
    kept = torch.cumsum(squares, 0) / squares.sum().clamp_min(1e-300)
    return int(torch.searchsorted(kept, torch.tensor(energy, dtype=kept.dtype) - 1e-12).item()) + 1


def _matrix(layer: nn.Conv2d | nn.Linear) -> Tensor:
    """The weight as the matrix whose SVD gives the pair: (in k_h, out k_w) for a
    convolution, (in, out) for a linear layer, in float64."""
    weight = layer.weight.detach().double()
    if isinstance(layer, nn.Linear):
        return weight.t()
    out_channels, in_channels, k_h, k_w = weight.shape
    return weight.permute(1, 2, 0, 3).reshape(in_channels * k_h, out_channels * k_w)


def _split(layer: nn.Conv2d | nn.Linear, rank: int, u: Tensor, s: Tensor, vh: Tensor) -> LowRank:
    """The :class:`LowRank` pair of ``layer`` at ``rank`` from the SVD of its matrix."""
    pair = LowRank(layer, rank)
    root = s[:rank].sqrt()
    first = u[:, :rank] * root  # (in k_h, r)
    second = root[:, None] * vh[:rank]  # (r, out k_w)
    dtype = layer.weight.dtype
    thin, wide = pair[0], pair[1]
    assert isinstance(thin, nn.Conv2d | nn.Linear) and isinstance(wide, nn.Conv2d | nn.Linear)
    with torch.no_grad():
        if isinstance(layer, nn.Linear):
            thin.weight.copy_(first.t().to(dtype))
            wide.weight.copy_(second.t().to(dtype))
        else:
            out_channels, in_channels, k_h, k_w = layer.weight.shape
            # first[(i, y), r] -> (r, i, y, 1); second[r, (o, x)] -> (o, r, 1, x)
            thin.weight.copy_(first.reshape(in_channels, k_h, rank).permute(2, 0, 1)[..., None].to(dtype))
            wide.weight.copy_(second.reshape(rank, out_channels, k_w).permute(1, 0, 2)[:, :, None].to(dtype))
        if layer.bias is not None and wide.bias is not None:
            wide.bias.copy_(layer.bias.detach())
    return pair.to(layer.weight.device)


def _params(layer: nn.Module) -> int:
    return sum(p.numel() for p in layer.parameters())


def factorize(
    model: nn.Module,
    rank: int | None = None,
    energy: float | None = None,
    layers: Sequence[str] = ("*",),
) -> list[RankRow]:
    """Replace the layers of ``model`` whose names match ``layers`` (shell patterns, e.g.
    ``"head.fc"`` or ``"features.*.pointwise.conv"``) by low-rank pairs, in place.

    Give ``rank`` (the same for every layer; one above a layer's full rank is an error
    naming it) or ``energy`` (per layer, the smallest rank keeping that fraction of the
    squared singular values, in (0, 1]). A layer is left whole where the pair would not
    be smaller. Returns a row per matching layer. Depthwise and grouped convolutions never
    match.
    """
    if (rank is None) == (energy is None):
        raise ValueError("give a rank or an energy to keep, not both")
    if rank is not None and rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    if energy is not None and not 0 < energy <= 1:
        raise ValueError(f"energy must be in (0, 1], got {energy}")
    chosen = [
        (name, module)
        for name, module in model.named_modules()
        if factorizable(module) and any(fnmatch.fnmatchcase(name, pattern) for pattern in layers)
    ]
    if not chosen:
        raise ValueError(f"no layer to factorise matches {', '.join(layers)}")
    rows = []
    for name, layer in chosen:
        assert isinstance(layer, nn.Conv2d | nn.Linear)
        top = full_rank(layer)
        if rank is not None and rank > top:
            raise ValueError(
                f"rank {rank} is above the full rank {top} of layer {name!r} (weight {tuple(layer.weight.shape)})"
            )
        u, s, vh = torch.linalg.svd(_matrix(layer), full_matrices=False)
        kept = rank if rank is not None else rank_for_energy(s, float(energy))  # type: ignore[arg-type]
        before = _params(layer)
        pair = _split(layer, kept, u, s, vh)
        if _params(pair) >= before:
            rows.append(RankRow(name, tuple(layer.weight.shape), top, None, before, before, 1.0))
            continue
        put_layer(model, name, pair)
        share = float((s[:kept] ** 2).sum() / (s**2).sum().clamp_min(1e-300))
        rows.append(RankRow(name, tuple(layer.weight.shape), top, kept, before, _params(pair), share))
    return rows
