"""Writing the authors' Deep Compression ``.net`` file (songhan/SqueezeNet_compressed).

The layout is the one :mod:`lightnets.weights.importers.deep_compression` reads: for L
biased convolutions in module order, ``uint32[L]`` stored-entry counts, then per layer
a ``float32[256]`` codebook (entry 0 = 0), ``float32[out]`` bias, ``uint8`` codebook
indices of the stored entries and their 4-bit gaps packed two to a byte (low nibble
first), with filler entries (index 0) bridging runs of more than 15 zeros. Every
layer must be shared with at most 8 bits (255 non-zero centroids) for the format's
8-bit indices.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from torch import nn

from ..files import write_bytes
from ..weights.container import _codes_of
from ..weights.sparse import from_gaps, to_gaps
from .sharing import SharedLayer

__all__ = ["GAP_BITS", "deep_compression_bytes", "write_deep_compression"]

GAP_BITS = 4
CODEBOOK = 256


def _layer_bytes(name: str, weight: np.ndarray, bias: np.ndarray, codebook: np.ndarray) -> tuple[int, bytes]:
    if codebook.size > CODEBOOK:
        raise ValueError(
            f"{name}: the Deep Compression format holds 8-bit codebooks, this one has {codebook.size}"
        )
    book = np.zeros(CODEBOOK, dtype=np.float32)
    book[: codebook.size] = codebook
    flat = weight.astype(np.float32).reshape(-1)
    codes = _codes_of(flat, book, name)
    gaps, filler = to_gaps(np.flatnonzero(flat), GAP_BITS)
    symbols = np.where(filler, 0, codes[from_gaps(gaps, flat.size)]).astype(np.uint8)
    padded = np.zeros(2 * -(-gaps.size // 2), dtype=np.uint8)
    padded[: gaps.size] = gaps
    packed = (padded[0::2] | (padded[1::2] << 4)).astype(np.uint8)
    body = book.astype("<f4").tobytes() + bias.astype("<f4").tobytes() + symbols.tobytes() + packed.tobytes()
    return int(gaps.size), body


def deep_compression_bytes(model: nn.Module, shared: Mapping[str, SharedLayer]) -> bytes:
    """The ``.net`` bytes of ``model``, whose every convolution is in ``shared``."""
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    others = [k for k in model.state_dict() if not any(k in (f"{n}.weight", f"{n}.bias") for n, _ in convs)]
    if others:
        raise ValueError(
            f"the Deep Compression format holds biased convolutions only; the model also has {others[0]}"
        )
    counts, bodies = [], []
    for name, module in convs:
        if module.bias is None:
            raise ValueError(f"{name} has no bias; the Deep Compression format needs one per convolution")
        if name not in shared:
            raise ValueError(f"{name} is not weight-shared; share every layer with at most 8 bits first")
        weight = module.weight.detach().cpu().numpy()
        count, body = _layer_bytes(name, weight, module.bias.detach().cpu().numpy(), shared[name].codebook)
        counts.append(count)
        bodies.append(body)
    return np.asarray(counts, dtype="<u4").tobytes() + b"".join(bodies)


def write_deep_compression(model: nn.Module, shared: Mapping[str, SharedLayer], path: str | Path) -> Path:
    """Write ``model`` as the authors' ``.net`` file, atomically; returns the path."""
    return write_bytes(path, deep_compression_bytes(model, shared))
