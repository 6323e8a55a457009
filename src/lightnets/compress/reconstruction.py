"""Layer-wise recovery: refit each compressed layer to the float model's outputs by least squares.

Gradient fine-tuning of a whole network costs hours on a CPU; a layer's output is linear
in its weights, so its kept weights can instead be solved for directly. Layer by layer,
in execution order, the layer's input is taken from the *compressed* network (so each
layer corrects the error the earlier ones left) and its target is the *float* network's
output of the same layer on the same images; for every output channel the kept weights
and the bias solve a ridge-regularised least-squares problem on sampled positions. When
the layer is weight-shared, the k-means codebook is computed from the refitted weights
and the bias is refitted once more for the shared weights.

Only images are needed (no labels): the recovery images, never the evaluation set.
Layers with groups (depthwise convolutions) keep their weights and refit their bias only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from .pruning import Mask, PrunableLayer, prunable_layers, weight_parametrizations
from .sharing import SharedLayer, share_weights

__all__ = ["reconstruct"]


class _Stop(Exception):
    pass


@torch.no_grad()
def _capture(model: nn.Module, module: nn.Module, batch: Tensor) -> tuple[Tensor, Tensor]:
    """(input, output) of ``module`` when ``model`` runs on ``batch``; stops right after it."""
    seen: dict[str, Tensor] = {}

    def hook(_m: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        seen["input"], seen["output"] = inputs[0], output
        raise _Stop

    handle = module.register_forward_hook(hook)
    try:
        model(batch)
    except _Stop:
        pass
    finally:
        handle.remove()
    if "input" not in seen:
        raise ValueError("a layer was not reached by the forward pass: it cannot be reconstructed")
    return seen["input"], seen["output"]


def _rows(module: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """(patches, targets): one row per output position, columns = the layer's inputs."""
    if isinstance(module, nn.Linear):
        return x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
    if not isinstance(module, nn.modules.conv._ConvNd):
        raise ValueError(
            f"reconstruction handles convolutions and linear layers, not {type(module).__name__}"
        )
    padding: tuple[int, ...]
    if module.padding_mode != "zeros" or isinstance(module.padding, str):
        if module.padding != "valid":
            raise ValueError("reconstruction handles explicit zero padding only")
        padding = (0, 0)
    else:
        padding = module.padding
    patches = F.unfold(x, module.kernel_size, dilation=module.dilation, padding=padding, stride=module.stride)
    targets = y.reshape(y.shape[0], y.shape[1], -1)
    if patches.shape[-1] != targets.shape[-1]:
        raise ValueError("the layer's input and output positions do not line up")
    return patches.transpose(1, 2).reshape(-1, patches.shape[1]), targets.transpose(1, 2).reshape(
        -1, targets.shape[1]
    )


def _weight_of(module: PrunableLayer) -> Tensor:
    return module.weight.detach()


def _mask_of(module: PrunableLayer) -> Tensor:
    for p in weight_parametrizations(module) or ():
        if isinstance(p, Mask):
            return p.mask
    return torch.ones_like(module.weight, dtype=torch.bool)


def _set_weight(module: PrunableLayer, weight: Tensor) -> None:
    parametrizations = weight_parametrizations(module)
    if parametrizations is not None:
        parametrizations.original.copy_(weight)
    else:
        module.weight.copy_(weight)


@torch.no_grad()
def _statistics(
    model: nn.Module, teacher: nn.Module, name: str, batches: Sequence[Tensor], samples: int, seed: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gram matrix of [inputs, 1], its product with the float targets, and the sampled
    rows themselves (float64)."""
    module = model.get_submodule(name)
    reference = teacher.get_submodule(name)
    generator = torch.Generator().manual_seed(seed)
    per_batch = max(1, samples // len(batches))
    gram: Tensor | None = None
    cross: Tensor | None = None
    kept_x, kept_y = [], []
    for batch in batches:
        x, _ = _capture(model, module, batch)
        _, y = _capture(teacher, reference, batch)
        rows, targets = _rows(module, x, y)
        pick = torch.randperm(rows.shape[0], generator=generator)[:per_batch]
        a = torch.cat([rows[pick].double(), torch.ones(pick.numel(), 1, dtype=torch.float64)], dim=1)
        t = targets[pick].double()
        gram = a.T @ a if gram is None else gram + a.T @ a
        cross = a.T @ t if cross is None else cross + a.T @ t
        kept_x.append(a)
        kept_y.append(t)
    assert gram is not None and cross is not None  # batches is not empty (divided by above)
    return gram, cross, torch.cat(kept_x), torch.cat(kept_y)


def _solve_kept(
    gram: Tensor, cross: Tensor, mask: Tensor, start: Tensor, ridge: float
) -> tuple[Tensor, Tensor]:
    """Per output channel: least-squares weights on the kept inputs, and the bias.

    The ridge term pulls towards the starting (pruned) weights, not towards zero: the
    images at hand may cover few classes, and the refit should correct the layer's
    response to them without forgetting what the float weights know about the rest.
    """
    out_channels = mask.shape[0]
    flat_mask = mask.reshape(out_channels, -1)
    prior = start.reshape(out_channels, -1).double()
    size = flat_mask.shape[1]
    weight = torch.zeros(out_channels, size, dtype=torch.float64)
    bias = torch.zeros(out_channels, dtype=torch.float64)
    scale = ridge * float(torch.diagonal(gram)[:size].mean().clamp_min(1e-12))
    for c in range(out_channels):
        kept = torch.nonzero(flat_mask[c]).flatten()
        keep = torch.cat([kept, torch.tensor([size])])
        g = gram[keep][:, keep].clone()
        g[range(len(kept)), range(len(kept))] += scale
        rhs = cross[keep, c].clone()
        rhs[: len(kept)] += scale * prior[c, kept]
        solution = torch.linalg.solve(g, rhs)
        weight[c, kept] = solution[:-1]
        bias[c] = solution[-1]
    return weight, bias


def _refit_bias(rows: Tensor, targets: Tensor, weight: Tensor) -> Tensor:
    """The bias minimising the error of fixed weights: the mean residual per channel."""
    return (targets - rows[:, :-1] @ weight.reshape(weight.shape[0], -1).double().T).mean(dim=0)


@torch.no_grad()
def reconstruct(
    model: nn.Module,
    teacher: nn.Module,
    batches: Sequence[Tensor],
    bits: int | Mapping[str, int] | None = None,
    samples: int = 32768,
    ridge: float = 0.1,
    progress: bool = True,
    on_layer: Callable[[str], None] | None = None,
) -> dict[str, SharedLayer]:
    """Refit every prunable layer of ``model`` (pruning masks in place) to ``teacher``.

    ``batches`` are normalised image batches; ``samples`` output positions per layer
    enter the least squares. With ``bits`` (one width, or per layer) each layer is
    weight-shared right after its refit (the shared layers are returned, with trainable
    codebooks in place as :func:`.sharing.share_weights` leaves them).
    """
    model.eval()
    teacher.eval()
    shared: dict[str, SharedLayer] = {}
    layers = prunable_layers(model)
    names = list(layers)
    for index, name in enumerate(tqdm(names, desc="reconstruct", unit="layer", disable=not progress)):
        module = layers[name]
        width = bits.get(name) if isinstance(bits, Mapping) else bits
        if getattr(module, "groups", 1) != 1:  # depthwise: weights kept as they are
            if width is not None:
                shared.update(share_weights(model, {name: width}, trainable=True))
            continue
        if module.bias is None:
            module.bias = nn.Parameter(torch.zeros(module.weight.shape[0]))
        gram, cross, rows, targets = _statistics(model, teacher, name, batches, samples, seed=index)
        weight, bias = _solve_kept(gram, cross, _mask_of(module), _weight_of(module), ridge)
        _set_weight(module, weight.reshape(module.weight.shape).to(module.weight.dtype))
        module.bias.copy_(bias.to(module.bias.dtype))
        if width is not None:
            shared.update(share_weights(model, {name: width}, trainable=True))
            module.bias.copy_(_refit_bias(rows, targets, _weight_of(module)).to(module.bias.dtype))
        if on_layer is not None:
            on_layer(name)
    return shared
