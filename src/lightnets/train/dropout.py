"""Dropout whose mask for each image is a function of (run seed, step, image index).

``nn.Dropout`` draws its masks from the process's random stream, so a batch split over
two processes gets other masks than the same batch in one process, and a resumed run
gets other masks unless every stream is restored exactly. Keying each image's mask to
the image instead makes dropout independent of how the batch is split and of where a
run restarted, which is what lets N processes reproduce one process and a resumed run
reproduce an uninterrupted one. Only training changes: in evaluation it is the identity.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

_SALT = 0x9E3779B97F4A7C15  # decorrelates the masks of several dropout layers


class KeyedDropout(nn.Module):
    """Inverted dropout with one seeded generator per image (``keys`` set before each step).

    Without keys (a forward outside the trainer) it is ordinary dropout.
    """

    def __init__(self, p: float, layer: int = 0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p!r}")
        self.p = p
        self.layer = layer
        self.keys: list[int] | None = None

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.keys is None or len(self.keys) != x.shape[0]:
            return nn.functional.dropout(x, self.p, True)
        keep = 1.0 - self.p
        masks = torch.empty((x.shape[0], *x.shape[1:]), dtype=torch.float32)
        generator = torch.Generator()
        for row, key in enumerate(self.keys):
            generator.manual_seed((key ^ (_SALT * (self.layer + 1))) & 0x7FFF_FFFF_FFFF_FFFF)
            masks[row].bernoulli_(keep, generator=generator)
        return x * masks.to(device=x.device, dtype=x.dtype).div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_keyed_dropout(model: nn.Module) -> nn.Module:
    """Replace every ``nn.Dropout`` in ``model`` by a :class:`KeyedDropout` of the same rate."""
    layer = 0

    def replace(module: nn.Module) -> None:
        nonlocal layer
        for name, child in module.named_children():
            if type(child) is nn.Dropout:
                module.add_module(name, KeyedDropout(child.p, layer))
                layer += 1
            else:
                replace(child)

    replace(model)
    return model


def sample_keys(seed: int, step: int, indices: list[int]) -> list[int]:
    """One 63-bit key per image: a hash of (seed, step, image index)."""
    return [
        int(np.random.SeedSequence([seed, 0xD80, step, index]).generate_state(1, np.uint64)[0] >> 1)
        for index in indices
    ]


def set_dropout_keys(model: nn.Module, keys: list[int] | None) -> None:
    for module in model.modules():
        if isinstance(module, KeyedDropout):
            module.keys = keys
