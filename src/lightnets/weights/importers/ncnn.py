"""ncnn models: a text ``.param`` graph and a ``.bin`` of raw weights.

``.param``: the magic ``7767517``, then ``layer_count blob_count``, then one layer per
line, ``Type Name n_in n_out inputs... outputs... key=value...``. For ``Convolution``
the keys used here are ``0`` num_output, ``1`` kernel (``11`` kernel height), ``2``
dilation, ``3`` stride, ``4`` pad, ``5`` bias_term, ``6`` weight element count, ``9``
fused activation (1 = ReLU). Array values (keys ``-233xx``) are read and ignored.

``.bin``: the weights of the layers that have any, in ``.param`` order. A convolution's
weights start with a 4-byte little-endian storage tag, ``0x01306B47`` for float16 (the
values follow, padded to a 4-byte boundary) or ``0`` for raw float32; the bias follows
as float32 without a tag. Only graphs whose weighted layers are all convolutions are
read (SqueezeNet); anything else is refused rather than misread.

Every convolution's settings are checked against the model's module, except the padding
of 1x1 convolutions: the Caffe SqueezeNet graphs pad their 1x1 classifier by one pixel
(``conv10 ... 4=1``), which only adds a ring of ``ReLU(bias)`` to the map that is then
average-pooled. lightnets' head has no padding; on the 500-image sample that changes
top-1 by 0.2 points (benchmarks/results/squeezenet_weights.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import Tensor, nn

from ..store import WeightsError
from .conv_slots import check_layer_count, conv_slots, put_conv

__all__ = ["NcnnLayer", "import_ncnn", "read_param"]

MAGIC = 7767517
TAG_FP16 = 0x01306B47
TAG_FP32 = 0
# Layer types that carry no weights in the .bin; any other type is refused.
WEIGHTLESS = {
    "Input",
    "Pooling",
    "Split",
    "Concat",
    "ReLU",
    "Dropout",
    "Softmax",
    "Flatten",
    "Eltwise",
    "Noop",
}


@dataclass
class NcnnLayer:
    type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    params: dict[int, float | list[float]] = field(default_factory=dict)

    def get_int(self, key: int, default: int) -> int:
        value = self.params.get(key, default)
        if isinstance(value, list) or value != int(value):
            raise WeightsError(f"ncnn layer {self.name}: parameter {key}={value!r} is not an integer")
        return int(value)


def _number(text: str, where: str) -> float:
    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        raise WeightsError(f"{where}: {text!r} is not a number") from None


def read_param(path: Path) -> list[NcnnLayer]:
    """The layers of an ncnn text ``.param`` file."""
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as error:
        raise WeightsError(f"{path} is not a readable ncnn .param text file: {error}") from None
    lines = [line.strip() for line in lines if line.strip()]
    if not lines or lines[0] != str(MAGIC):
        raise WeightsError(f"{path} does not start with the ncnn magic {MAGIC}: not a (text) .param file")
    try:
        layer_count, blob_count = (int(v) for v in lines[1].split())
    except (IndexError, ValueError):
        raise WeightsError(f"{path}: line 2 should be 'layer_count blob_count'") from None
    layers = []
    for number, line in enumerate(lines[2:], start=3):
        where = f"{path}:{number}"
        parts = line.split()
        try:
            kind, name, n_in, n_out = parts[0], parts[1], int(parts[2]), int(parts[3])
        except (IndexError, ValueError):
            raise WeightsError(f"{where}: expected 'Type Name n_in n_out ...', got {line[:60]!r}") from None
        blobs = parts[4 : 4 + n_in + n_out]
        if len(blobs) != n_in + n_out:
            raise WeightsError(f"{where}: layer {name} lists fewer than {n_in + n_out} blobs")
        params: dict[int, float | list[float]] = {}
        for item in parts[4 + n_in + n_out :]:
            key_text, sep, value = item.partition("=")
            if not sep:
                raise WeightsError(f"{where}: {item!r} is not key=value")
            key = int(_number(key_text, where))
            if key <= -23300:  # an array: -233xx=count,v1,v2,...
                values = [_number(v, where) for v in value.split(",")]
                params[-key - 23300] = values[1:]
            else:
                params[key] = _number(value, where)
        layers.append(NcnnLayer(kind, name, blobs[:n_in], blobs[n_in:], params))
    if len(layers) != layer_count:
        raise WeightsError(f"{path} declares {layer_count} layers but lists {len(layers)}: truncated?")
    return layers


class _Reader:
    """Sequential reads from the ``.bin`` bytes with clear errors at the end of the file."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.path, self.offset = data, path, 0

    def take(self, dtype: str, count: int, what: str) -> np.ndarray:
        size = np.dtype(dtype).itemsize * count
        if self.offset + size > len(self.data):
            raise WeightsError(
                f"{self.path} ends at byte {len(self.data):,} while reading {what} "
                f"({size:,} bytes from {self.offset:,}): truncated file or a different .param"
            )
        array = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.offset)
        self.offset += size
        return array


def _check_conv(layer: NcnnLayer, conv: nn.Conv2d, source: str) -> None:
    """The .param's convolution settings against the model's module."""
    out = layer.get_int(0, 0)
    kernel = layer.get_int(1, 0)
    kernel_h = layer.get_int(11, kernel)
    have = {
        "num_output": (out, conv.out_channels),
        "kernel": ((kernel_h, kernel), tuple(conv.kernel_size)),
        "stride": (layer.get_int(3, 1), conv.stride[1]),
        "dilation": (layer.get_int(2, 1), conv.dilation[1]),
        "group": (layer.get_int(7, 1), conv.groups),
        "bias_term": (layer.get_int(5, 0), 1),
    }
    # Padding on a 1x1 convolution only adds a border of bias values (the Caffe SqueezeNet
    # classifier has it); on anything larger it shifts every window, so it must match.
    if kernel > 1 or kernel_h > 1:
        have["pad"] = (layer.get_int(4, 0), conv.padding[1])
    wrong = [f"{k} {file} (model {model})" for k, (file, model) in have.items() if file != model]
    if wrong:
        raise WeightsError(
            f"{source}: layer {layer.name} does not fit the model's convolution: {', '.join(wrong)}"
        )


def import_ncnn(paths: list[Path], model: nn.Module) -> dict[str, Tensor]:
    """A state dict for a model of biased convolutions from an ncnn ``[.param, .bin]`` pair."""
    if len(paths) != 2:
        raise WeightsError(f"ncnn weights are a .param and a .bin file, got {len(paths)} paths")
    param_path, bin_path = (Path(p) for p in paths)
    for path in (param_path, bin_path):
        if not path.is_file():
            raise WeightsError(f"{path} is missing")
    source = str(bin_path)
    layers = read_param(param_path)
    unknown = sorted({layer.type for layer in layers if layer.type not in WEIGHTLESS | {"Convolution"}})
    if unknown:
        raise WeightsError(f"{param_path} has layer types this importer does not read: {', '.join(unknown)}")
    convs = [layer for layer in layers if layer.type == "Convolution"]
    slots = conv_slots(model, source)
    check_layer_count(slots, len(convs), str(param_path))
    reader = _Reader(bin_path.read_bytes(), bin_path)
    state: dict[str, Tensor] = {}
    for layer, slot in zip(convs, slots, strict=True):
        _check_conv(layer, slot.module, str(param_path))
        count = layer.get_int(6, 0)
        if count != int(np.prod(slot.shape)):
            raise WeightsError(
                f"{param_path}: layer {layer.name} has {count} weights, the model's {slot.name} "
                f"{slot.shape} needs {int(np.prod(slot.shape))}"
            )
        tag = int(reader.take("<u4", 1, f"{layer.name} storage tag")[0])
        if tag == TAG_FP16:
            weight = reader.take("<f2", count, f"{layer.name} weights").astype(np.float32)
            reader.take("u1", (-2 * count) % 4, f"{layer.name} padding")
        elif tag == TAG_FP32:
            weight = reader.take("<f4", count, f"{layer.name} weights")
        else:
            raise WeightsError(
                f"{source}: layer {layer.name} has storage tag 0x{tag:08X} at byte {reader.offset - 4:,}; "
                f"only float16 (0x{TAG_FP16:08X}) and float32 (0) are read: corrupt or quantised file"
            )
        bias = reader.take("<f4", slot.shape[0], f"{layer.name} bias")
        put_conv(state, slot, weight.reshape(slot.shape), bias, source, layer.name)
    left = len(reader.data) - reader.offset
    if left:
        raise WeightsError(
            f"{source} has {left:,} bytes after the last layer: a different .param or a corrupt file"
        )
    return state
