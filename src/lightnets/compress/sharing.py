"""Trained weight sharing: a k-means codebook per layer, fine-tuned through its members.

Each layer's non-zero weights are clustered into ``2**bits - 1`` centroids by
one-dimensional k-means with *linear* initialisation (centroids spread evenly between
the smallest and largest weight, which Deep Compression found best: it keeps the rare
large weights that matter most). Codebook entry 0 is reserved for zero, the value of
pruned weights and of the fillers of the sparse encoding. BatchNorm is folded into the
layers first (see :func:`lightnets.deploy.fold.fold_batchnorm`), so the codebook covers
the weights that are actually deployed.

For fine-tuning, the layer's weight becomes ``codebook[codes]`` (a parametrisation), so
the gradient of each centroid is the sum of the gradients of its members, as in the
paper; the codes stay fixed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .pruning import prunable_layers, weight_parametrizations

__all__ = ["SharedWeight", "SharedLayer", "check_bits", "kmeans_1d", "share_layer", "share_weights"]

MIN_BITS, MAX_BITS = 1, 16


def check_bits(bits: int, where: str = "bits") -> int:
    """``bits`` if it is a whole number in 1..16; ``ValueError`` naming it otherwise."""
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"{where} must be a whole number of bits in {MIN_BITS}..{MAX_BITS}, got {bits!r}")
    return int(bits)


def kmeans_1d(values: np.ndarray, clusters: int, init: str = "linear", iterations: int = 50) -> np.ndarray:
    """Centroids (float64, ascending) of one-dimensional k-means on ``values``.

    ``init``: ``linear`` (evenly between min and max), ``density`` (at evenly spaced
    quantiles) or ``random`` (seeded picks). A cluster left empty moves to the value
    farthest from its centroid in the cluster of largest squared error: on a peaked
    distribution an even spread leaves many centroids in the tails with no members, and
    fewer levels used (MobileNet v1's 1x1 layers at 6 bits used 29-43 of 63).
    """
    values = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if clusters < 1:
        raise ValueError(f"k-means needs at least one cluster, got {clusters}")
    if values.size == 0:
        return np.zeros(clusters)
    if init == "linear":
        centroids = np.linspace(values[0], values[-1], clusters)
    elif init == "density":
        centroids = np.quantile(values, np.linspace(0, 1, clusters))
    elif init == "random":
        centroids = np.sort(np.random.default_rng(0).choice(values, clusters, replace=values.size < clusters))
    else:
        raise ValueError(f"unknown k-means initialisation {init!r}; expected linear, density or random")
    prefix = np.concatenate([[0.0], np.cumsum(values)])
    squares = np.concatenate([[0.0], np.cumsum(values**2)])
    for _ in range(iterations):
        centroids = np.sort(centroids)
        bounds = np.searchsorted(values, (centroids[1:] + centroids[:-1]) / 2)
        starts = np.concatenate([[0], bounds])
        ends = np.concatenate([bounds, [values.size]])
        counts = ends - starts
        sums = prefix[ends] - prefix[starts]
        updated = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            errors = squares[ends] - squares[starts] - sums**2 / np.maximum(counts, 1)
            for index, worst in zip(empty, np.argsort(-errors)[: empty.size], strict=False):
                if errors[worst] <= 0:
                    break  # every value already sits on a centroid
                members = values[starts[worst] : ends[worst]]
                updated[index] = members[np.argmax(np.abs(members - updated[worst]))]
        elif np.allclose(updated, centroids, rtol=0, atol=1e-12):
            centroids = updated
            break
        centroids = updated
    return np.sort(centroids)


@dataclass
class SharedLayer:
    """A layer's codebook (float32, entry 0 = 0.0) and the code of every weight."""

    bits: int
    codebook: np.ndarray
    codes: np.ndarray  # int64, the weight's shape; 0 where the weight is zero

    def weight(self) -> np.ndarray:
        return self.codebook[self.codes]


def share_layer(weight: np.ndarray | Tensor, bits: int, init: str = "linear") -> SharedLayer:
    """Cluster the non-zero weights into ``2**bits - 1`` centroids; zeros keep code 0."""
    bits = check_bits(bits)
    array = weight.detach().cpu().numpy() if isinstance(weight, Tensor) else np.asarray(weight)
    array = array.astype(np.float32)
    nonzero = array != 0
    clusters = (1 << bits) - 1
    values = array[nonzero]
    if clusters == 0 or values.size == 0:
        return SharedLayer(bits, np.zeros(1 << bits, dtype=np.float32), np.zeros(array.shape, dtype=np.int64))
    distinct = np.unique(values)
    if distinct.size <= clusters:  # the codebook holds every value: kept exactly (weights
        centroids = distinct.astype(np.float64)  # imported from an integer release, a coarse QAT grid)
    else:
        centroids = kmeans_1d(values, clusters, init)
    centroids32 = centroids.astype(np.float32)
    # Nearest centroid of each non-zero weight, by the float32 midpoints.
    order = np.argsort(centroids32, kind="stable")
    ordered = centroids32[order]
    mids = (ordered[1:].astype(np.float64) + ordered[:-1]) / 2
    nearest = order[np.searchsorted(mids, values.astype(np.float64))]
    codebook = np.zeros(1 << bits, dtype=np.float32)
    codebook[1 : 1 + centroids32.size] = centroids32
    # A centroid that rounds to exactly 0.0 would read as "pruned"; nudge it.
    tiny = np.float32(np.finfo(np.float32).tiny)
    codebook[1:][codebook[1:] == 0] = tiny
    codes = np.zeros(array.shape, dtype=np.int64)
    codes[nonzero] = nearest + 1
    return SharedLayer(bits, codebook, codes)


class SharedWeight(nn.Module):
    """The parametrisation ``weight = [0, centroids][codes]``: centroids are trained."""

    codes: Tensor

    def __init__(self, layer: SharedLayer) -> None:
        super().__init__()
        self.register_buffer("codes", torch.from_numpy(layer.codes))
        self.centroids = nn.Parameter(torch.from_numpy(layer.codebook[1:].copy()))

    def forward(self, weight: Tensor) -> Tensor:  # the original weight is replaced
        table = torch.cat([torch.zeros(1, dtype=self.centroids.dtype), self.centroids])
        return table[self.codes].to(weight.dtype)

    def codebook(self) -> np.ndarray:
        return np.concatenate([[0.0], self.centroids.detach().cpu().numpy()]).astype(np.float32)


@torch.no_grad()
def share_weights(
    model: nn.Module,
    bits: int | Mapping[str, int],
    init: str = "linear",
    trainable: bool = True,
    layers: list[str] | None = None,
) -> dict[str, SharedLayer]:
    """Share the weights of every prunable layer (or of ``layers``) of ``model`` in place.

    ``bits`` is one width for all, or a mapping layer -> width (layers it omits keep
    float weights). With ``trainable`` the layers get :class:`SharedWeight`
    parametrisations for fine-tuning; :func:`codebooks` reads the trained codebooks and
    :func:`lightnets.compress.pruning.finish` bakes them in.
    """
    candidates = prunable_layers(model)
    if isinstance(bits, Mapping):
        unknown = [name for name in bits if name.removesuffix(".weight") not in candidates]
        if unknown:
            raise ValueError(f"{unknown[0]!r} is not a prunable layer of the model")
        widths = {
            name.removesuffix(".weight"): check_bits(b, f"the bits of {name}") for name, b in bits.items()
        }
    else:
        width = check_bits(bits)
        widths = {name: width for name in (layers or candidates)}
    shared: dict[str, SharedLayer] = {}
    for name, width in widths.items():
        module = candidates[name]
        layer = share_layer(module.weight.detach(), width, init)
        shared[name] = layer
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        module.weight.copy_(torch.from_numpy(layer.weight()))
        if trainable:
            parametrize.register_parametrization(module, "weight", SharedWeight(layer), unsafe=True)
    return shared


def codebooks(model: nn.Module) -> dict[str, SharedLayer]:
    """The current (trained) codebooks and codes of the shared layers of ``model``."""
    out = {}
    for name, module in prunable_layers(model).items():
        for p in weight_parametrizations(module) or ():
            if isinstance(p, SharedWeight):
                bits = int(round(np.log2(p.centroids.numel() + 1)))
                out[name] = SharedLayer(bits, p.codebook(), p.codes.cpu().numpy())
    return out
