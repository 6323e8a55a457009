"""Running a model without its weights: a copy on PyTorch's ``meta`` device.

Both analyses (:mod:`.profile` and :mod:`.memory`) need only shapes, so they work on a
storage-less copy and never do a convolution's arithmetic.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable

import torch
from torch import nn


def meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters and buffers live on the meta device.

    Tensors are swapped for storage-less ones before the deep copy, so the real weights
    are never duplicated.
    """
    memo: dict[int, object] = {}
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        meta = torch.empty_like(tensor, device="meta")
        if isinstance(tensor, nn.Parameter):
            meta = nn.Parameter(meta, requires_grad=tensor.requires_grad)
        memo[id(tensor)] = meta
    return copy.deepcopy(model, memo)


def check_input_size(model: nn.Module, input_size: tuple[int, ...]) -> tuple[int, int, int]:
    """Validate ``(C, H, W)`` against the model; raises ``ValueError`` naming the problem."""
    size = tuple(input_size)
    if len(size) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
        raise ValueError(f"input_size must be three positive integers (C, H, W), got {input_size!r}")
    channels, height, width = size
    checker = getattr(model, "check_input_size", None)
    if callable(checker):
        checker(size[1], size[2])
    first_conv = next((m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    if first_conv is not None and first_conv.in_channels != size[0]:
        raise ValueError(
            f"input_size has {size[0]} channels but the model's first convolution takes "
            f"{first_conv.in_channels}"
        )
    return channels, height, width


def run_on_meta(model: nn.Module, input_size: tuple[int, ...], hook_for: Callable | None = None) -> None:
    """Run a meta copy of ``model`` once on a batch of one.

    ``hook_for(name)``, if given, makes the forward hook put on each named leaf module.
    """
    meta = meta_copy(model).eval()
    handles = []
    if hook_for is not None:
        for name, module in meta.named_modules():
            if name and not list(module.children()):
                handles.append(module.register_forward_hook(hook_for(name)))
    try:
        with torch.no_grad():
            meta(torch.empty((1, *input_size), device="meta"))
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"input size {tuple(input_size)} does not fit this model: {error}") from error
    finally:
        for handle in handles:
            handle.remove()
