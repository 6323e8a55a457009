"""TensorFlow Lite flatbuffers (``.tflite``): quantised MobileNets from TF-slim and TF2.

The file is parsed with the ``tflite`` package (the flatbuffer bindings generated from
TFLite's schema). The operators are walked in execution order and every one that holds
weights (``CONV_2D``, ``DEPTHWISE_CONV_2D``, ``FULLY_CONNECTED``) is matched, in turn,
with the next ``nn.Conv2d`` / ``nn.Linear`` of the model in module order. Each pair is
checked before anything is taken: the kind (full or depthwise convolution, or fully
connected), the weight shape, stride, dilation, padding (TensorFlow "SAME" at stride 2
needs ``padding="tf_same"``) and the fused activation; the first disagreement raises
:class:`~lightnets.weights.store.WeightsError` naming both sides.

Tensors are dequantised as TFLite defines it: ``real = scale * (q - zero_point)``,
per tensor or per channel along ``quantized_dimension``; int32 biases carry their own
scale (input scale x weight scale). Layouts: convolution kernels OHWI -> OIHW,
depthwise kernels ``[1, H, W, C]`` -> ``[C, 1, H, W]``.

These files fold BatchNorm into the convolution, but lightnets models keep a
BatchNorm after each convolution: it is set to an exact identity plus bias (mean 0,
variance 1, weight ``sqrt(1 + eps)``, bias = the file's bias), so the float model
computes ``conv(x) + bias`` bit for bit and BatchNorm folding gives the file's numbers
back. A 1001-way classifier (index 0 = "background") loses row 0, leaving the 1000
ImageNet classes in sorted-wnid order.

:func:`attach_activation_quantisation` optionally makes a loaded float model round
its activations as the integer model does (fake quantisation), for the closest match
with the TFLite interpreter.
"""

from __future__ import annotations

import io
import math
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ...layers import TFSamePad
from ..store import WeightsError

__all__ = [
    "QuantParams",
    "TFLiteGraph",
    "TFLiteLayer",
    "attach_activation_quantisation",
    "import_tflite",
    "read_tflite",
]

WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
ACTIVATION_OPS = {"RELU": "relu", "RELU6": "relu6", "RELU_N1_TO_1": "relu_n1_to_1"}
FUSED_ACTIVATIONS = {0: None, 1: "relu", 2: "relu_n1_to_1", 3: "relu6", 4: "tanh", 5: "sign_bit"}
PADDING = {0: "SAME", 1: "VALID"}

# TensorType -> NumPy dtype, for the types a weight or bias can have.
DTYPES = {
    0: np.float32,
    1: np.float16,
    2: np.int32,
    3: np.uint8,
    4: np.int64,
    7: np.int16,
    9: np.int8,
    10: np.float64,
}

# What a damaged flatbuffer makes the generated bindings raise when they read it.
PARSE_ERRORS = (
    struct.error,
    IndexError,
    ValueError,
    TypeError,
    UnicodeDecodeError,
    OverflowError,
    AttributeError,
)


@dataclass(frozen=True)
class QuantParams:
    """The affine quantisation of a tensor: ``real = scale * (q - zero_point)``."""

    scale: np.ndarray  # one per tensor, or one per channel along ``axis``
    zero_point: np.ndarray
    axis: int
    dtype: np.dtype  # the integer type, for its range

    @property
    def qmin(self) -> int:
        return int(np.iinfo(self.dtype).min)

    @property
    def qmax(self) -> int:
        return int(np.iinfo(self.dtype).max)

    @property
    def per_tensor(self) -> bool:
        return self.scale.size == 1


@dataclass
class TFLiteLayer:
    """One weight-holding operator of the file, its tensors dequantised to float32."""

    index: int  # position among the subgraph's operators (execution order)
    op: str  # CONV_2D, DEPTHWISE_CONV_2D or FULLY_CONNECTED
    name: str  # the weight tensor's name
    weight: np.ndarray  # float32, in the file's layout (OHWI, 1HWC or [out, in])
    bias: np.ndarray | None  # float32 [out], or None
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    padding: str = "VALID"  # "SAME" or "VALID" (FULLY_CONNECTED: VALID)
    activation: str | None = None  # relu, relu6 ... fused or applied by the next operator
    input_shape: tuple[int, ...] = ()
    output_shape: tuple[int, ...] = ()
    output_quant: QuantParams | None = None  # after the activation
    weight_index: int = -1  # the tensors' indices in the subgraph
    bias_index: int = -1

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[-1] if self.op == "DEPTHWISE_CONV_2D" else self.weight.shape[0])

    @property
    def in_channels(self) -> int:
        if self.op == "DEPTHWISE_CONV_2D":
            return int(self.input_shape[-1]) if self.input_shape else int(self.weight.shape[-1])
        return int(self.weight.shape[-1])

    @property
    def kernel_size(self) -> tuple[int, int]:
        return (
            (1, 1) if self.op == "FULLY_CONNECTED" else (int(self.weight.shape[1]), int(self.weight.shape[2]))
        )

    def describe(self) -> str:
        return f"operator {self.index} {self.op} {self.name!r} weight {list(self.weight.shape)}"


@dataclass
class TFLiteGraph:
    """What the importer needs of a ``.tflite`` file: the weight layers in execution
    order, the quantisation of the input, output and residual additions."""

    path: Path
    layers: list[TFLiteLayer]
    input_quant: QuantParams | None
    output_quant: QuantParams | None
    add_quants: list[QuantParams | None]  # ADD operators, in execution order
    pool_quants: list[QuantParams | None]  # AVERAGE_POOL_2D / MEAN, in execution order
    logits_index: int | None  # the tensor before a final SOFTMAX (the logits), if any


def read_tflite(path: str | Path) -> TFLiteGraph:
    """Parse ``path`` and dequantise its weights; :class:`WeightsError` if it cannot."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise WeightsError(f"{path}: cannot read ({error})") from None
    try:
        return _Reader(path, data).graph()
    except WeightsError:
        raise
    except PARSE_ERRORS as error:
        raise WeightsError(
            f"{path} is not a valid .tflite flatbuffer (truncated or corrupt: {type(error).__name__}: {error})"
        ) from None


class _Reader:
    """Walks one flatbuffer with the generated ``tflite`` bindings."""

    def __init__(self, path: Path, data: bytes) -> None:
        import tflite
        from tflite.utils import BUILTIN_OPCODE2NAME

        self.path, self.data, self.tflite = path, data, tflite
        self.opnames = BUILTIN_OPCODE2NAME
        if len(data) < 16 or not tflite.Model.ModelBufferHasIdentifier(data, 0):
            raise WeightsError(f"{path} is not a TensorFlow Lite file (no 'TFL3' identifier)")
        self.model = tflite.Model.GetRootAs(data, 0)
        version = self.model.Version()
        if version != 3:
            raise WeightsError(f"{path}: TFLite schema version {version}, expected 3")
        if self._count(self.model.SubgraphsLength(), "subgraphs") < 1:
            raise WeightsError(f"{path} holds no subgraph")
        self.subgraph = self.model.Subgraphs(0)
        self.num_tensors = self._count(self.subgraph.TensorsLength(), "tensors")
        self.num_buffers = self._count(self.model.BuffersLength(), "buffers")
        self.num_codes = self._count(self.model.OperatorCodesLength(), "operator codes")
        self.ops = [
            self.subgraph.Operators(i) for i in range(self._count(self.subgraph.OperatorsLength(), "ops"))
        ]
        self.op_names = [self._op_name(op) for op in self.ops]
        self._check_extent()
        self.producer: dict[int, int] = {}
        self.consumers: dict[int, list[int]] = {}
        for i, op in enumerate(self.ops):
            for t in self._inputs(op):
                self.consumers.setdefault(t, []).append(i)
            for t in self._outputs(op):
                self.producer[t] = i

    def _check_extent(self) -> None:
        """Touch every buffer, tensor and metadata entry, so that a truncated file fails here.

        The files carry no total size, so this is what shows a cut: a buffer or table
        that runs past the end, or the zip of associated files (labels) that TFLite
        metadata appends after the flatbuffer, no longer complete.
        """
        end = 0
        for i in range(self.num_buffers):
            buffer = self.model.Buffers(i)
            if buffer.Offset() > 1:
                start, size = int(buffer.Offset()), int(buffer.Size())
            elif buffer.DataLength():
                start, size = buffer._tab.Vector(buffer._tab.Offset(4)), int(buffer.DataLength())
            else:
                continue
            if start + size > len(self.data):
                raise WeightsError(f"{self.path}: buffer {i} runs past the end of the file (truncated)")
            end = max(end, start + size)
        for i in range(self.num_tensors):
            tensor = self._tensor(i)
            self._indices([tensor.Buffer()], self.num_buffers, "buffer")
            for read in (self._shape, self._name, self.quant):
                read(i)
        for i in range(self._count(self.model.MetadataLength(), "metadata entries")):
            self._indices([self.model.Metadata(i).Buffer()], self.num_buffers, "metadata buffer")
        tail = self.data[end:]
        if b"PK\x03\x04" in tail:
            archive = tail[tail.index(b"PK\x03\x04") :]
            try:
                with zipfile.ZipFile(io.BytesIO(archive)) as bundle:
                    # CRCs too, unless the members claim to be huge (a zip bomb).
                    small = sum(info.file_size for info in bundle.infolist()) < 1 << 26
                    bad = bundle.testzip() if small else None
            except (zipfile.BadZipFile, EOFError, OSError) as error:
                raise WeightsError(
                    f"{self.path}: its appended metadata archive is damaged ({error}); truncated?"
                ) from None
            if bad is not None:
                raise WeightsError(f"{self.path}: {bad} in its appended metadata archive fails its CRC")

    # -- flatbuffer access, bounds-checked -------------------------------------------
    def _count(self, n: int, what: str) -> int:
        # Every element of a flatbuffer vector takes at least 4 bytes: a larger count
        # means a corrupt length, which would otherwise send the loops running for ever.
        if n < 0 or 4 * n > len(self.data):
            raise WeightsError(f"{self.path}: implausible number of {what} ({n}); the file is corrupt")
        return n

    def _indices(self, values: np.ndarray | list[int] | int, limit: int, what: str) -> list[int]:
        out = [] if isinstance(values, int) else [int(v) for v in values]
        for v in out:
            if v >= limit or v < -1:
                raise WeightsError(
                    f"{self.path}: {what} index {v} out of range (0..{limit - 1}); corrupt file"
                )
        return out

    def _inputs(self, op) -> list[int]:
        return self._indices(op.InputsAsNumpy(), self.num_tensors, "tensor")

    def _outputs(self, op) -> list[int]:
        return self._indices(op.OutputsAsNumpy(), self.num_tensors, "tensor")

    def _op_name(self, op) -> str:
        (code_index,) = self._indices([op.OpcodeIndex()], self.num_codes, "operator code")
        code = self.model.OperatorCodes(code_index)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == 32:  # CUSTOM
            custom = code.CustomCode()
            return f"CUSTOM:{custom.decode() if custom else '?'}"
        return self.opnames.get(builtin, f"BUILTIN_{builtin}")

    def _tensor(self, index: int):
        return self.subgraph.Tensors(index)

    def _shape(self, index: int) -> tuple[int, ...]:
        tensor = self._tensor(index)
        return tuple(int(s) for s in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()

    def _name(self, index: int) -> str:
        name = self._tensor(index).Name()
        return name.decode("utf-8", errors="replace") if name else f"tensor {index}"

    def quant(self, index: int) -> QuantParams | None:
        tensor = self._tensor(index)
        dtype = DTYPES.get(tensor.Type())
        q = tensor.Quantization()
        if q is None or q.ScaleLength() == 0 or dtype is None or not np.issubdtype(dtype, np.integer):
            return None
        scale = np.asarray(q.ScaleAsNumpy(), dtype=np.float64)
        zero = (
            np.asarray(q.ZeroPointAsNumpy(), dtype=np.int64) if q.ZeroPointLength() else np.zeros(1, np.int64)
        )
        if zero.size == 1 and scale.size > 1:
            zero = np.full(scale.shape, zero[0])
        if zero.size != scale.size:
            raise WeightsError(
                f"{self.path}: tensor {self._name(index)!r} has {scale.size} scales but {zero.size} zero points"
            )
        return QuantParams(scale, zero, int(q.QuantizedDimension()), np.dtype(dtype))

    def _raw(self, index: int) -> np.ndarray | None:
        """The constant data of a tensor in its stored type and shape, or None."""
        tensor = self._tensor(index)
        (buffer_index,) = self._indices([tensor.Buffer()], self.num_buffers, "buffer")
        buffer = self.model.Buffers(buffer_index)
        if buffer is None:
            return None
        if buffer.Offset() > 1:  # large models keep the data after the flatbuffer
            start, size = int(buffer.Offset()), int(buffer.Size())
            if start + size > len(self.data):
                raise WeightsError(
                    f"{self.path}: buffer {buffer_index} runs past the end of the file (truncated)"
                )
            raw = np.frombuffer(self.data, np.uint8, size, start)
        else:
            if buffer.DataLength() == 0:
                return None
            raw = buffer.DataAsNumpy()
        if tensor.Sparsity() is not None:
            raise WeightsError(f"{self.path}: tensor {self._name(index)!r} is sparse; not supported")
        dtype = DTYPES.get(tensor.Type())
        if dtype is None:
            raise WeightsError(
                f"{self.path}: tensor {self._name(index)!r} has unsupported type {tensor.Type()}"
            )
        shape = self._shape(index)
        expected = math.prod(shape) * np.dtype(dtype).itemsize
        if raw.size != expected:
            raise WeightsError(
                f"{self.path}: tensor {self._name(index)!r} {list(shape)} needs {expected} bytes, "
                f"its buffer has {raw.size}"
            )
        return np.frombuffer(raw.tobytes(), dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)

    def constant(self, index: int, what: str, op_index: int) -> np.ndarray:
        """A constant tensor dequantised to float32 (through a DEQUANTIZE operator too)."""
        raw = self._raw(index)
        quant = self.quant(index)
        if raw is None and self.producer.get(index) is not None:
            producer = self.producer[index]
            if self.op_names[producer] == "DEQUANTIZE":  # float16 or hybrid-quantised weights
                source = self._inputs(self.ops[producer])[0]
                raw, quant = self._raw(source), self.quant(source)
        if raw is None:
            raise WeightsError(
                f"{self.path}: the {what} of operator {op_index} ({self._name(index)!r}) is not a constant"
            )
        if np.issubdtype(raw.dtype, np.floating):
            return raw.astype(np.float32)
        if quant is None:
            raise WeightsError(
                f"{self.path}: the {what} {self._name(index)!r} is {raw.dtype} without quantisation parameters"
            )
        return dequantise(raw, quant, f"{self.path}: {self._name(index)!r}")

    # -- the graph ----------------------------------------------------------------------
    def _options(self, op, cls):
        table = op.BuiltinOptions()
        if table is None:
            return None
        options = cls()
        options.Init(table.Bytes, table.Pos)
        return options

    def _activation(self, op_index: int, fused: int) -> tuple[str | None, int]:
        """The activation after an operator and the tensor that leaves it."""
        (out,) = self._outputs(self.ops[op_index])[:1]
        name = FUSED_ACTIVATIONS.get(fused, f"activation_{fused}")
        if name is None:
            users = self.consumers.get(out, [])
            if len(users) == 1 and self.op_names[users[0]] in ACTIVATION_OPS:
                name = ACTIVATION_OPS[self.op_names[users[0]]]
                out = self._outputs(self.ops[users[0]])[0]
        return name, out

    def layer(self, i: int) -> TFLiteLayer:
        op, kind = self.ops[i], self.op_names[i]
        inputs = self._inputs(op)
        if len(inputs) < 2 or inputs[1] < 0 or not self._outputs(op):
            raise WeightsError(f"{self.path}: operator {i} {kind} has no weight tensor")
        weight = self.constant(inputs[1], "weight", i)
        bias = self.constant(inputs[2], "bias", i) if len(inputs) > 2 and inputs[2] >= 0 else None
        layer = TFLiteLayer(i, kind, self._name(inputs[1]), weight, bias, input_shape=self._shape(inputs[0]))
        layer.weight_index, layer.bias_index = inputs[1], inputs[2] if len(inputs) > 2 else -1
        expected_rank = 2 if kind == "FULLY_CONNECTED" else 4
        if weight.ndim != expected_rank:
            raise WeightsError(f"{self.path}: {layer.describe()}: expected a rank-{expected_rank} weight")
        fused = 0
        if kind == "FULLY_CONNECTED":
            options = self._options(op, self.tflite.FullyConnectedOptions)
            if options is not None:
                fused = options.FusedActivationFunction()
                if options.WeightsFormat() != 0:
                    raise WeightsError(
                        f"{self.path}: {layer.describe()}: shuffled FC weights are not supported"
                    )
        else:
            cls = self.tflite.Conv2DOptions if kind == "CONV_2D" else self.tflite.DepthwiseConv2DOptions
            options = self._options(op, cls)
            if options is None:
                raise WeightsError(f"{self.path}: {layer.describe()} has no options")
            fused = options.FusedActivationFunction()
            layer.stride = (options.StrideH(), options.StrideW())
            layer.dilation = (options.DilationHFactor(), options.DilationWFactor())
            layer.padding = PADDING.get(options.Padding(), f"padding_{options.Padding()}")
            if kind == "DEPTHWISE_CONV_2D" and weight.shape[0] != 1:
                raise WeightsError(
                    f"{self.path}: {layer.describe()}: a depthwise kernel must be [1, H, W, C]"
                )
        if layer.bias is not None and layer.bias.shape != (layer.out_channels,):
            raise WeightsError(
                f"{self.path}: {layer.describe()}: bias {list(layer.bias.shape)} for {layer.out_channels} outputs"
            )
        layer.activation, out = self._activation(i, fused)
        layer.output_shape = self._shape(out)
        layer.output_quant = self.quant(out)
        return layer

    def graph(self) -> TFLiteGraph:
        layers = [self.layer(i) for i, name in enumerate(self.op_names) if name in WEIGHT_OPS]
        if not layers:
            raise WeightsError(f"{self.path} holds no CONV_2D, DEPTHWISE_CONV_2D or FULLY_CONNECTED operator")

        def out_quant(i: int) -> QuantParams | None:
            outputs = self._outputs(self.ops[i])
            return self.quant(outputs[0]) if outputs else None

        inputs = self._indices(self.subgraph.InputsAsNumpy(), self.num_tensors, "input tensor")
        outputs = self._indices(self.subgraph.OutputsAsNumpy(), self.num_tensors, "output tensor")
        logits = None
        softmax = [i for i, name in enumerate(self.op_names) if name == "SOFTMAX"]
        if softmax:
            logits = self._inputs(self.ops[softmax[-1]])[0]
        return TFLiteGraph(
            self.path,
            layers,
            self.quant(inputs[0]) if inputs else None,
            self.quant(outputs[0]) if outputs else None,
            [out_quant(i) for i, name in enumerate(self.op_names) if name == "ADD"],
            [out_quant(i) for i, name in enumerate(self.op_names) if name in ("AVERAGE_POOL_2D", "MEAN")],
            logits,
        )


def dequantise(q: np.ndarray, quant: QuantParams, what: str = "tensor") -> np.ndarray:
    """``scale * (q - zero_point)`` per tensor, or per channel along ``quant.axis``."""
    values = q.astype(np.float64)
    scale, zero = quant.scale, quant.zero_point.astype(np.float64)
    if scale.size > 1:
        if not 0 <= quant.axis < q.ndim or q.shape[quant.axis] != scale.size:
            raise WeightsError(
                f"{what}: {scale.size} per-channel scales do not fit shape {list(q.shape)} on axis {quant.axis}"
            )
        view = [1] * q.ndim
        view[quant.axis] = scale.size
        scale, zero = scale.reshape(view), zero.reshape(view)
    return (scale * (values - zero)).astype(np.float32)


# -- matching the model ----------------------------------------------------------------------
@dataclass
class _Slot:
    """A weight module of the model and its neighbours in its ``ConvBNAct``."""

    name: str
    module: nn.Conv2d | nn.Linear
    bn: nn.BatchNorm2d | None
    bn_name: str | None
    activation: str | None
    tf_same: bool  # a TFSamePad runs before the convolution


def _activation_name(module: nn.Module | None) -> str | None:
    if module is None or isinstance(module, nn.Identity):
        return None
    if isinstance(module, nn.ReLU6):
        return "relu6"
    if isinstance(module, nn.ReLU):
        return "relu"
    if isinstance(module, nn.Hardtanh) and (module.min_val, module.max_val) == (0.0, 6.0):
        return "relu6"
    return type(module).__name__


def _slots(model: nn.Module) -> list[_Slot]:
    modules = dict(model.named_modules())
    slots = []
    for name, module in modules.items():
        if not isinstance(module, nn.Conv2d | nn.Linear):
            continue
        parent_name, _, own = name.rpartition(".")
        parent = modules[parent_name]  # "" is the model itself
        bn = act = None
        tf_same = False
        if isinstance(module, nn.Conv2d) and isinstance(parent, nn.Sequential):
            children = list(parent.named_children())
            position = [n for n, _ in children].index(own)
            before, after = children[:position], children[position + 1 :]
            tf_same = bool(before) and isinstance(before[-1][1], TFSamePad)
            if after and isinstance(after[0][1], nn.BatchNorm2d):
                bn = after[0][1]
                bn_name = f"{parent_name}.{after[0][0]}" if parent_name else after[0][0]
                after = after[1:]
            if after and _activation_name(after[0][1]) in ("relu", "relu6"):
                act = _activation_name(after[0][1])
        slots.append(_Slot(name, module, bn, bn_name if bn is not None else None, act, tf_same))
    return slots


def _model_padding(slot: _Slot) -> str:
    """How the model pads this convolution, in TFLite's words where they apply."""
    conv = slot.module
    if isinstance(conv, nn.Linear):
        return "VALID"
    kernel, stride, dilation = conv.kernel_size, conv.stride, conv.dilation
    if slot.tf_same:
        return "SAME"
    if conv.padding == "valid" or tuple(conv.padding) == (0, 0):
        return "SAME" if kernel == (1, 1) else "VALID"
    if conv.padding == "same" or (
        stride == (1, 1)
        and all(k % 2 == 1 for k in kernel)
        and tuple(conv.padding) == tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation, strict=True))
    ):
        return "SAME"
    return f"symmetric padding {tuple(conv.padding)}"


def _kind(slot: _Slot) -> str:
    module = slot.module
    if isinstance(module, nn.Linear):
        return "Linear"
    if module.groups == 1:
        return "Conv2d"
    if module.groups == module.in_channels:
        return "depthwise Conv2d"
    return f"grouped Conv2d (groups={module.groups})"


def _check_pair(layer: TFLiteLayer, slot: _Slot, last: bool, path: Path) -> np.ndarray:
    """The file's weight in the module's layout, after checking that they are the same layer."""
    module = slot.module
    where = f"{path.name}: {layer.describe()} does not fit {slot.name} ({_kind(slot)} {list(module.weight.shape)})"
    kind = _kind(slot)
    if layer.op == "DEPTHWISE_CONV_2D":
        if kind != "depthwise Conv2d":
            raise WeightsError(f"{where}: a depthwise convolution needs a depthwise Conv2d")
        weight = layer.weight[0].transpose(2, 0, 1)[:, None]  # [1,H,W,C] -> [C,1,H,W]
    elif layer.op == "CONV_2D":
        if kind == "depthwise Conv2d" and isinstance(module, nn.Conv2d) and module.in_channels > 1:
            raise WeightsError(f"{where}: a full convolution cannot go into a depthwise Conv2d")
        weight = layer.weight.transpose(0, 3, 1, 2)  # OHWI -> OIHW
        if isinstance(module, nn.Linear):
            if layer.kernel_size != (1, 1):
                raise WeightsError(f"{where}: only a 1x1 convolution can become a Linear layer")
            weight = weight[:, :, 0, 0]
    else:  # FULLY_CONNECTED: [out, in]
        weight = layer.weight
        if isinstance(module, nn.Conv2d):
            if module.kernel_size != (1, 1) or module.groups != 1:
                raise WeightsError(f"{where}: a fully connected layer can only become a 1x1 convolution")
            weight = weight[:, :, None, None]
    want = tuple(module.weight.shape)
    if last and weight.shape[0] == want[0] + 1 and weight.shape[1:] == want[1:]:
        weight = weight[1:]  # the 1001-way classifier: drop "background"
    if tuple(weight.shape) != want:
        raise WeightsError(f"{where}: file shape {list(weight.shape)} in PyTorch layout, model {list(want)}")
    if isinstance(module, nn.Conv2d):
        if tuple(module.stride) != layer.stride:
            raise WeightsError(
                f"{where}: stride {layer.stride} in the file, {tuple(module.stride)} in the model"
            )
        if tuple(module.dilation) != layer.dilation:
            raise WeightsError(
                f"{where}: dilation {layer.dilation} in the file, {tuple(module.dilation)} in the model"
            )
        padding = _model_padding(slot)
        if padding != layer.padding and not (layer.padding == "VALID" and layer.kernel_size == (1, 1)):
            hint = " (build the model with padding='tf_same')" if layer.padding == "SAME" else ""
            raise WeightsError(f"{where}: the file pads {layer.padding}, the model uses {padding}{hint}")
    if layer.activation != slot.activation:
        raise WeightsError(
            f"{where}: the file applies activation {layer.activation}, the model {slot.activation}"
        )
    return weight


def _identity_bn(state: dict[str, Tensor], bn: nn.BatchNorm2d, prefix: str, bias: np.ndarray) -> None:
    """BatchNorm as ``x + bias`` exactly: mean 0, variance 1, weight sqrt(1 + eps)."""
    channels = bn.num_features
    state[f"{prefix}.running_mean"] = torch.zeros(channels)
    state[f"{prefix}.running_var"] = torch.ones(channels)
    state[f"{prefix}.weight"] = torch.full((channels,), math.sqrt(1.0 + bn.eps))
    state[f"{prefix}.bias"] = torch.from_numpy(bias.astype(np.float32))
    if f"{prefix}.num_batches_tracked" in state:
        state[f"{prefix}.num_batches_tracked"] = torch.zeros((), dtype=torch.long)


def import_tflite(paths: list[Path], model: nn.Module) -> dict[str, Tensor]:
    """A complete state dict for ``model`` from one ``.tflite`` file; the model is not touched."""
    if len(paths) != 1:
        raise WeightsError(f"a TFLite weight set is one .tflite file, got {len(paths)} paths")
    path = Path(paths[0])
    graph = read_tflite(path)
    slots = _slots(model)
    if len(graph.layers) != len(slots):
        ops = ", ".join(f"{sum(layer.op == op for layer in graph.layers)} {op}" for op in WEIGHT_OPS)
        raise WeightsError(
            f"{path.name} has {len(graph.layers)} weight layers ({ops}), {type(model).__name__} has "
            f"{len(slots)} Conv2d/Linear modules: the file is for another architecture"
        )
    own = model.state_dict()
    state: dict[str, Tensor] = {k: v.detach().clone() for k, v in own.items()}
    for number, (layer, slot) in enumerate(zip(graph.layers, slots, strict=True)):
        last = number == len(slots) - 1
        weight = _check_pair(layer, slot, last, path)
        out = slot.module.weight.shape[0]
        bias = layer.bias if layer.bias is not None else np.zeros(layer.out_channels, np.float32)
        bias = bias[-out:] if last and bias.shape[0] == out + 1 else bias
        state[f"{slot.name}.weight"] = torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32))
        if slot.module.bias is not None:
            if slot.bn is not None:
                raise WeightsError(
                    f"{slot.name} has both a bias and a BatchNorm; cannot place the file's bias"
                )
            state[f"{slot.name}.bias"] = torch.from_numpy(bias.astype(np.float32))
        elif slot.bn is not None and slot.bn_name is not None:
            if slot.bn.num_features != out or not slot.bn.track_running_stats:
                raise WeightsError(f"{slot.bn_name} cannot hold the bias of {layer.describe()}")
            _identity_bn(state, slot.bn, slot.bn_name, bias)
        elif np.any(bias != 0):
            raise WeightsError(
                f"{slot.name} has neither bias nor BatchNorm for the file's bias ({layer.describe()})"
            )
    missing = set(own) - set(state)
    if missing:  # cannot happen: state starts from the model's own keys
        raise WeightsError(f"internal error: {sorted(missing)[:3]} not set")
    return state


# -- optional: the integer model's activation rounding ----------------------------------------
def _fake_quant(quant: QuantParams) -> Callable[[nn.Module, tuple, Tensor], Tensor]:
    scale, zero = float(quant.scale.reshape(-1)[0]), int(quant.zero_point.reshape(-1)[0])
    qmin, qmax = quant.qmin, quant.qmax

    def hook(module: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
        # round(x / scale) + zero, clamped to the integer range, and back: one fused kernel.
        return torch.fake_quantize_per_tensor_affine(output, scale, zero, qmin, qmax)

    return hook


def attach_activation_quantisation(
    model: nn.Module, path: str | Path
) -> list[torch.utils.hooks.RemovableHandle]:
    """Make ``model`` (loaded from ``path``) round its activations as the integer model does.

    Forward hooks fake-quantise (round to the file's scale and zero point, clamp to the
    integer range) the output of every convolution block after its activation, of every
    residual addition (:class:`~lightnets.layers.Add`), of the global pool and of the
    logits. The float model then follows the TFLite interpreter much more closely; the
    remaining differences are the integer kernels' fixed-point requantisation. Returns
    the hook handles (``handle.remove()`` undoes it).
    """
    from ...layers import Add

    graph = read_tflite(path)
    slots = _slots(model)
    if len(slots) != len(graph.layers):
        raise WeightsError(f"{Path(path).name} does not fit {type(model).__name__} (load it first)")
    modules = dict(model.named_modules())
    targets: list[tuple[nn.Module, QuantParams | None]] = []
    for slot, layer in zip(slots, graph.layers, strict=True):
        parent_name, _, own = slot.name.rpartition(".")
        parent = modules.get(parent_name)
        target: nn.Module = slot.module
        if isinstance(parent, nn.Sequential) and own in dict(parent.named_children()):
            target = parent  # the whole ConvBNAct: conv, BN (bias) and activation
        targets.append((target, layer.output_quant))
    adds = [m for m in model.modules() if isinstance(m, Add)]
    if len(adds) == len(graph.add_quants):
        targets += list(zip(adds, graph.add_quants, strict=True))
    elif graph.add_quants:
        raise WeightsError(
            f"{len(graph.add_quants)} ADD operators in the file, {len(adds)} Add modules in the model"
        )
    pools = [m for m in model.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    if len(pools) == len(graph.pool_quants):
        targets += list(zip(pools, graph.pool_quants, strict=True))
    handles = []
    for module, quant in targets:
        if quant is not None and quant.per_tensor:
            handles.append(module.register_forward_hook(_fake_quant(quant)))
    return handles
