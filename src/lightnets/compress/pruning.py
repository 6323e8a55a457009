"""Magnitude pruning: per-layer sparsities, masks that survive fine-tuning, schedules.

A layer's weights below a magnitude threshold are set to zero so that ``sparsity`` of
them (a fraction in ``[0, 1)``) are zero; its bias is kept. The mask is attached as a
``torch.nn.utils.parametrize`` parametrisation (``weight = original * mask``), so a
fine-tuning step can never revive a pruned weight; :func:`finish` bakes the masked
weights in and removes the parametrisation.

Sparsities are given per layer (a mapping, or a JSON / CSV file as SqueezeNet's Table 1
lists them), as one value for every layer, or allocated from a per-layer sensitivity
scan for an overall target (:func:`allocate_sparsities`).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

__all__ = [
    "Mask",
    "allocate_sparsities",
    "check_sparsity",
    "finish",
    "gradual_sparsity",
    "magnitude_mask",
    "prunable_layers",
    "prune",
    "read_sparsities",
    "resolve_sparsities",
]

MAX_SPARSITY_FILE = 1 << 20  # bytes


def check_sparsity(value: float, where: str = "sparsity") -> float:
    """``value`` if it is a number in ``[0, 1)``; ``ValueError`` naming it otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where} must be a number in [0, 1), got {value!r}")
    if not 0.0 <= value < 1.0:
        raise ValueError(
            f"{where} {value!r} is outside [0, 1): a sparsity is the fraction of weights set to zero"
        )
    return float(value)


PrunableLayer = nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear


def prunable_layers(model: nn.Module) -> dict[str, PrunableLayer]:
    """The convolution and linear layers, by module name, in module order."""
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear) and m.weight is not None
    }


def read_sparsities(path: str | Path) -> dict[str, float]:
    """Per-layer sparsities from a file: a JSON object ``{"layer": 0.6, ...}`` or CSV rows
    ``layer,sparsity`` (a header row is allowed). Raises ``ValueError`` naming the file."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_SPARSITY_FILE:
            raise ValueError(f"{path} is too large for a sparsity table")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot read the sparsity table ({error})") from None
    table: dict[str, float] = {}
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON ({error})") from None
        items = list(data.items())
    else:
        items = [tuple(row) for row in csv.reader(io.StringIO(text)) if row and not row[0].startswith("#")]
        if items and items[0][-1].strip().lower() == "sparsity":
            items = items[1:]
    for item in items:
        if len(item) != 2:
            raise ValueError(f"{path}: each row must be 'layer,sparsity', got {','.join(map(str, item))!r}")
        name, raw = item
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"{path}: the sparsity of {name} is {raw!r}, not a number") from None
        table[str(name).strip()] = check_sparsity(value, f"{path}: the sparsity of {name}")
    if not table:
        raise ValueError(f"{path} lists no layer sparsities")
    return table


def resolve_sparsities(
    model: nn.Module, sparsity: float | None = None, sparsities: Mapping[str, float] | None = None
) -> dict[str, float]:
    """One sparsity per prunable layer: ``sparsities`` where given, else ``sparsity`` (else 0).

    Layer names may be given with or without the ``.weight`` suffix; a name that is no
    prunable layer of the model is refused with the list of names it has.
    """
    layers = prunable_layers(model)
    default = 0.0 if sparsity is None else check_sparsity(sparsity)
    out = dict.fromkeys(layers, default)
    for name, value in (sparsities or {}).items():
        key = name.removesuffix(".weight")
        if key not in layers:
            shown = ", ".join(list(layers)[:6])
            raise ValueError(f"{name!r} is not a prunable layer of the model (its layers: {shown}, ...)")
        out[key] = check_sparsity(value, f"the sparsity of {name}")
    return out


def magnitude_mask(weight: Tensor, sparsity: float) -> Tensor:
    """A boolean mask keeping the largest-magnitude ``1 - sparsity`` of ``weight``.

    Exactly ``round(sparsity * numel)`` weights are dropped (ties broken by position).
    """
    check_sparsity(sparsity)
    flat = weight.detach().abs().reshape(-1)
    drop = int(round(sparsity * flat.numel()))
    mask = torch.ones(flat.numel(), dtype=torch.bool)
    if drop:
        order = torch.argsort(flat, stable=True)
        mask[order[:drop]] = False
    return mask.reshape(weight.shape)


class Mask(nn.Module):
    """The parametrisation ``weight = original * mask`` (the mask is a buffer)."""

    mask: Tensor

    def __init__(self, mask: Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.to(torch.bool))

    def forward(self, weight: Tensor) -> Tensor:
        return weight * self.mask.to(weight.dtype)


def weight_parametrizations(module: nn.Module) -> parametrize.ParametrizationList | None:
    """The parametrisations of ``module.weight`` (``None`` when it has none)."""
    if not parametrize.is_parametrized(module, "weight"):
        return None
    found = module.get_submodule("parametrizations.weight")
    return found if isinstance(found, parametrize.ParametrizationList) else None


def _current_mask(module: nn.Module) -> Tensor | None:
    for p in weight_parametrizations(module) or ():
        if isinstance(p, Mask):
            return p.mask
    return None


@torch.no_grad()
def prune(
    model: nn.Module,
    sparsity: float | None = None,
    sparsities: Mapping[str, float] | None = None,
    keep_masks: bool = True,
) -> dict[str, Tensor]:
    """Magnitude-prune every prunable layer of ``model`` in place; returns the masks.

    ``sparsity`` applies to every layer, ``sparsities`` (layer -> fraction) overrides it
    per layer. Layers at sparsity 0 are left alone. With ``keep_masks`` the masks stay on
    the layers as parametrisations (pruned weights stay zero through fine-tuning; pruning
    again, as a gradual schedule does, only ever removes more); call :func:`finish` after
    fine-tuning.
    """
    table = resolve_sparsities(model, sparsity, sparsities)
    layers = prunable_layers(model)
    masks: dict[str, Tensor] = {}
    for name, value in table.items():
        module = layers[name]
        old = _current_mask(module)
        if value == 0.0 and old is None:
            continue
        weight = module.weight.detach()
        if old is not None:
            weight = weight * old  # already the masked weight; keep dropped ones dropped
        mask = magnitude_mask(weight, value)
        if old is not None:
            mask &= old
        masks[name] = mask.clone()
        if keep_masks:
            if old is not None:
                for p in weight_parametrizations(module) or ():
                    if isinstance(p, Mask):
                        p.mask.copy_(mask)
            else:
                parametrize.register_parametrization(module, "weight", Mask(mask))
        else:
            module.weight.mul_(mask.to(module.weight.dtype))
    return masks


def finish(model: nn.Module) -> nn.Module:
    """Bake every parametrisation (masks, shared weights) into plain weights; returns ``model``.

    Zeros are written as +0.0 (a masked negative weight would otherwise be -0.0).
    """
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            with torch.no_grad():
                w = module.weight
                if isinstance(w, Tensor):
                    w.copy_(torch.where(w == 0, torch.zeros_like(w), w))
    return model


def gradual_sparsity(final: float, stage: int, stages: int) -> float:
    """The sparsity after ``stage`` of ``stages`` pruning stages (Zhu & Gupta's cubic
    schedule): fast at first, slower as the network has less left to lose."""
    check_sparsity(final)
    if stages < 1 or not 0 <= stage <= stages:
        raise ValueError(f"stage {stage} of {stages} is not a pruning stage")
    return final * (1.0 - (1.0 - stage / stages) ** 3)


def allocate_sparsities(
    scan: Mapping[str, Mapping[float, float]], sizes: Mapping[str, int], target: float
) -> dict[str, float]:
    """Per-layer sparsities reaching ``target`` overall, from a sensitivity scan.

    ``scan[layer][sparsity]`` is the agreement with the unpruned model (0..1) with only
    that layer pruned. One tolerance is found by bisection: each layer takes the largest
    scanned sparsity whose agreement stays within the tolerance of its best, so the
    least sensitive layers are pruned most. ``sizes`` are the layers' weight counts.
    """
    check_sparsity(target, "the target sparsity")
    total = sum(sizes[name] for name in scan)

    def choose(tolerance: float) -> dict[str, float]:
        out = {}
        for name, curve in scan.items():
            ok = [s for s, agreement in curve.items() if agreement >= max(curve.values()) - tolerance]
            out[name] = max(ok) if ok else 0.0
        return out

    def overall(table: Mapping[str, float]) -> float:
        return sum(table[n] * sizes[n] for n in table) / total

    low, high = 0.0, 1.0
    if overall(choose(high)) < target:
        best = max(s for curve in scan.values() for s in curve)
        raise ValueError(
            f"the scan reaches at most {overall(choose(high)):.3f} overall (largest scanned {best}); "
            f"scan higher sparsities for a target of {target}"
        )
    for _ in range(40):
        middle = (low + high) / 2
        if overall(choose(middle)) >= target:
            high = middle
        else:
            low = middle
    return choose(high)
