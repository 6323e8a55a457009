"""Filling a network made only of biased convolutions, in module order.

Shared by the SqueezeNet importers (Gluon .npy, ncnn, Deep Compression): their files
list one weight and one bias per convolution, in the order the network runs them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ..store import WeightsError


@dataclass(frozen=True)
class ConvSlot:
    """One convolution of the model, as a weight file fills it."""

    name: str  # module path, e.g. "features.2.squeeze.conv"
    module: nn.Conv2d

    @property
    def weight_key(self) -> str:
        return f"{self.name}.weight"

    @property
    def bias_key(self) -> str:
        return f"{self.name}.bias"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.module.weight.shape)


def conv_slots(model: nn.Module, source: str) -> list[ConvSlot]:
    """The model's convolutions in module order, each with a bias.

    Raises :class:`WeightsError` if the model has a convolution without bias or any
    tensor that is not a convolution's weight or bias (BatchNorm, a linear layer ...):
    files of plain biased convolutions cannot fill those.
    """
    slots = [ConvSlot(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    no_bias = [s.name for s in slots if s.module.bias is None]
    if no_bias:
        raise WeightsError(
            f"{source} holds biased convolutions, but {type(model).__name__} has convolutions without "
            f"bias (first: {', '.join(no_bias[:3])})"
        )
    covered = {k for s in slots for k in (s.weight_key, s.bias_key)}
    other = [k for k in model.state_dict() if k not in covered]
    if other:
        raise WeightsError(
            f"{source} holds only convolutions; {type(model).__name__} also has "
            f"{len(other)} other tensors (first: {', '.join(other[:3])})"
        )
    return slots


def check_layer_count(slots: list[ConvSlot], found: int, source: str) -> None:
    if found != len(slots):
        raise WeightsError(
            f"{source} has {found} convolutions, {len(slots)} expected by the model "
            f"(first model layers: {', '.join(s.name for s in slots[:3])}): a different network"
        )


def put_conv(
    state: dict[str, Tensor],
    slot: ConvSlot,
    weight: np.ndarray,
    bias: np.ndarray,
    source: str,
    label: str,
) -> None:
    """Check ``weight`` / ``bias`` against ``slot`` and store copies of them in ``state``."""
    shape, out = slot.shape, slot.shape[0]
    if tuple(weight.shape) != shape:
        raise WeightsError(
            f"{source}: {label} weight has shape {tuple(weight.shape)}, the model's {slot.name} "
            f"needs {shape}: a different network"
        )
    if tuple(bias.shape) != (out,):
        raise WeightsError(
            f"{source}: {label} bias has shape {tuple(bias.shape)}, the model's {slot.name} needs ({out},)"
        )
    for what, array in (("weight", weight), ("bias", bias)):
        if not np.isfinite(array).all():
            raise WeightsError(f"{source}: {label} {what} holds non-finite values: a corrupt file")
    dtype = slot.module.weight.dtype
    state[slot.weight_key] = torch.tensor(np.asarray(weight, dtype=np.float32), dtype=dtype)
    state[slot.bias_key] = torch.tensor(np.asarray(bias, dtype=np.float32), dtype=dtype)
