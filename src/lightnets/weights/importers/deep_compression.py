"""Deep Compression ``.net`` files (Han et al.): pruned, weight-shared, sparse-coded layers.

The file of ``songhan/SqueezeNet_compressed`` (SqueezeNet v1.0, 660 KB) is, for L
convolution layers in network order (all little-endian):

* ``uint32[L]``: the number of stored entries of each layer (the header);
* then per layer: ``float32[2**bits]`` codebook (``codebook[0] = 0``), ``float32[out]``
  bias, ``uint8[n]`` codebook indices of the stored entries (8 bits each), and
  ``uint8[ceil(n/2)]`` 4-bit gaps, low nibble first. Entry ``i`` sits at flat OIHW position
  ``cumsum(gap + 1)[i] - 1``; every other weight is 0.

A gap of at most 15 cannot skip a longer run of zeros, so the encoder inserts filler
entries whose index is 0 (the value 0): a layer's stored entries are its non-zeros plus
those fillers. The file records neither layer shapes nor the number of layers; they come
from the model, and the exact file size is checked against them before anything is decoded.

The file's ``SqueezeNet_deploy.prototxt`` pads the 1x1 ``conv_final`` by one pixel, which
lightnets' head does not (see :mod:`.ncnn`; 0.2 points of top-1 on the 500-image sample).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import Tensor, nn

from ..store import WeightsError
from .conv_slots import conv_slots, put_conv

__all__ = [
    "DecodedLayer",
    "LayerFacts",
    "decode_net",
    "expected_size",
    "import_deep_compression",
    "net_facts",
    "read_header",
]

BITS = 8  # SqueezeNet's file: 8-bit codebooks for every convolution (the paper's Table 2)


@dataclass(frozen=True)
class DecodedLayer:
    weight: np.ndarray  # float32, OIHW, dense with zeros
    bias: np.ndarray
    codebook: np.ndarray
    codes: np.ndarray  # codebook index of each stored entry
    positions: np.ndarray  # flat OIHW position of each stored entry


@dataclass(frozen=True)
class LayerFacts:
    """What one layer of a ``.net`` file holds, as decoded."""

    index: int
    shape: tuple[int, ...]
    stored: int  # entries decoded (non-zeros plus zero fillers); the header's count if intact
    nonzeros: int  # weights that decode to a non-zero value
    codebook_size: int  # entries in the stored codebook (2 ** bits)
    codes_used: int  # distinct codebook indices among the stored entries
    nonzero_codes_used: int  # distinct indices whose value is non-zero

    @property
    def weights(self) -> int:
        return int(np.prod(self.shape))

    @property
    def density(self) -> float:
        return self.nonzeros / self.weights


def _shapes(model_or_shapes: nn.Module | Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    if isinstance(model_or_shapes, nn.Module):
        return [slot.shape for slot in conv_slots(model_or_shapes, "a Deep Compression file")]
    return [tuple(int(d) for d in shape) for shape in model_or_shapes]


def read_header(path: Path, num_layers: int) -> list[int]:
    """The header of a ``.net`` file: stored entries per layer (``num_layers`` of them)."""
    with open(path, "rb") as handle:
        data = handle.read(4 * num_layers)
    if len(data) < 4 * num_layers:
        raise WeightsError(f"{path} has {len(data)} bytes, shorter than a {num_layers}-layer header")
    return np.frombuffer(data, dtype="<u4").astype(int).tolist()


def expected_size(counts: Sequence[int], shapes: Sequence[Sequence[int]], bits: int = BITS) -> int:
    """The byte size of a ``.net`` file with these stored counts and layer shapes."""
    size = 4 * len(counts)
    for count, shape in zip(counts, shapes, strict=True):
        size += 4 * 2**bits + 4 * shape[0] + -(-count * bits // 8) + -(-count // 2)
    return size


def decode_net(
    data: bytes, shapes: Sequence[Sequence[int]], source: str = "the .net file"
) -> list[DecodedLayer]:
    """Every layer of a ``.net`` file's bytes, given the layer shapes (OIHW) in order.

    Raises :class:`WeightsError` if the size does not match the shapes exactly (truncated,
    or another network's file), or if a layer decodes to an impossible result.
    """
    shapes = [tuple(int(d) for d in s) for s in shapes]
    count = len(shapes)
    if len(data) < 4 * count:
        raise WeightsError(f"{source} has {len(data):,} bytes, shorter than its {count}-layer header")
    counts = np.frombuffer(data, dtype="<u4", count=count).astype(np.int64)
    for i, (stored, shape) in enumerate(zip(counts, shapes, strict=True)):
        if stored > np.prod(shape):
            raise WeightsError(
                f"{source}: the header gives layer {i} {stored:,} entries, but a {shape} layer has only "
                f"{int(np.prod(shape)):,} weights: another network's file, or corrupt"
            )
    want = expected_size(counts.tolist(), shapes)
    if len(data) != want:
        state = "truncated" if len(data) < want else "longer than expected"
        raise WeightsError(
            f"{source} has {len(data):,} bytes; its header with these {count} layer shapes needs {want:,} "
            f"({state}: a damaged file, or one for another network)"
        )
    offset = 4 * count
    layers = []
    for i, (stored, shape) in enumerate(zip(counts.tolist(), shapes, strict=True)):
        parts = []
        for dtype, n in (("<f4", 2**BITS), ("<f4", shape[0]), ("u1", stored), ("u1", -(-stored // 2))):
            parts.append(np.frombuffer(data, dtype=dtype, count=n, offset=offset))
            offset += parts[-1].nbytes
        codebook, bias, codes, packed = parts
        if codebook[0] != 0:
            raise WeightsError(f"{source}: layer {i} codebook[0] is {codebook[0]}, not 0: a corrupt file")
        if not (np.isfinite(codebook).all() and np.isfinite(bias).all()):
            raise WeightsError(
                f"{source}: layer {i} holds non-finite codebook or bias values: a corrupt file"
            )
        gaps = np.empty(2 * packed.size, dtype=np.int64)
        gaps[0::2] = packed & 0x0F
        gaps[1::2] = packed >> 4
        positions = np.cumsum(gaps[:stored] + 1) - 1
        size = int(np.prod(shape))
        if stored and positions[-1] >= size:
            raise WeightsError(
                f"{source}: layer {i} entries run to position {int(positions[-1]):,}, past its {size:,} "
                f"weights {shape}: a corrupt file, or one for another network"
            )
        weight = np.zeros(size, dtype=np.float32)
        weight[positions] = codebook[codes]
        layers.append(
            DecodedLayer(weight.reshape(shape), bias.copy(), codebook.copy(), codes.copy(), positions)
        )
    return layers


def net_facts(path: Path, model_or_shapes: nn.Module | Sequence[Sequence[int]]) -> list[LayerFacts]:
    """Per-layer facts of a ``.net`` file: stored entries, non-zeros, codebook use.

    ``model_or_shapes`` gives the layer shapes (a SqueezeNet v1.0 model, or OIHW tuples).
    The stored counts come from decoding the streams, so comparing them with
    :func:`read_header` checks the file against itself.
    """
    shapes = _shapes(model_or_shapes)
    layers = decode_net(Path(path).read_bytes(), shapes, str(path))
    facts = []
    for i, (layer, shape) in enumerate(zip(layers, shapes, strict=True)):
        used = np.unique(layer.codes)
        facts.append(
            LayerFacts(
                index=i,
                shape=shape,
                stored=int(layer.positions.size),
                nonzeros=int(np.count_nonzero(layer.weight)),
                codebook_size=int(layer.codebook.size),
                codes_used=int(used.size),
                nonzero_codes_used=int(np.count_nonzero(layer.codebook[used])),
            )
        )
    return facts


def import_deep_compression(paths: list[Path], model: nn.Module) -> dict[str, Tensor]:
    """A state dict for a SqueezeNet of biased convolutions from a Deep Compression ``.net``."""
    if len(paths) != 1:
        raise WeightsError(f"Deep Compression weights are one .net file, got {len(paths)} paths")
    path = Path(paths[0])
    if not path.is_file():
        raise WeightsError(f"{path} is missing")
    source = str(path)
    slots = conv_slots(model, source)
    # The file does not say how many layers it has: decode_net's exact size check against
    # the model's shapes is what catches another network's file.
    layers = decode_net(path.read_bytes(), [slot.shape for slot in slots], source)
    state: dict[str, Tensor] = {}
    for i, (slot, layer) in enumerate(zip(slots, layers, strict=True)):
        put_conv(state, slot, layer.weight, layer.bias, source, f"layer {i}")
    return state
