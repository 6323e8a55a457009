"""Per-layer pruning sensitivity: agreement with the unpruned model against sparsity.

Each prunable layer in turn is pruned alone to each sparsity, and the model's top-1
class is compared with the unpruned model's on a set of images (never the evaluation
set: the recovery images). Layers whose agreement stays high can be pruned more; see
:func:`lightnets.compress.pruning.allocate_sparsities`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from tqdm import tqdm

from .pruning import check_sparsity, magnitude_mask, prunable_layers
from .recovery import agreement, logits_of

__all__ = ["DEFAULT_SPARSITIES", "sensitivity_scan"]

DEFAULT_SPARSITIES = (0.3, 0.5, 0.6, 0.7, 0.8, 0.9)


@torch.no_grad()
def sensitivity_scan(
    model: nn.Module,
    batches: Sequence[Tensor],
    sparsities: Sequence[float] = DEFAULT_SPARSITIES,
    layers: Sequence[str] | None = None,
    progress: bool = True,
) -> dict[str, dict[float, float]]:
    """``{layer: {sparsity: agreement}}``; ``model`` is left as it was.

    ``batches`` are normalised image batches; agreement is the fraction of images whose
    top-1 class is the unpruned model's.
    """
    for s in sparsities:
        check_sparsity(s)
    model.eval()
    reference = logits_of(model, batches).argmax(dim=1)
    candidates = prunable_layers(model)
    names = list(layers) if layers is not None else list(candidates)
    out: dict[str, dict[float, float]] = {}
    bar = tqdm(total=len(names) * len(sparsities), desc="sensitivity", unit="run", disable=not progress)
    for name in names:
        module = candidates[name]
        original = module.weight.detach().clone()
        curve: dict[float, float] = {}
        for s in sparsities:
            module.weight.copy_(original * magnitude_mask(original, s).to(original.dtype))
            curve[float(s)] = agreement(model, batches, reference)
            bar.update(1)
        module.weight.copy_(original)
        out[name] = curve
    bar.close()
    return out
