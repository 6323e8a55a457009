"""TFLite export: the file LiteRT (XNNPACK) runs on phones, fp32 or int8, with metadata.

The graph is converted by ``litert-torch`` (PyTorch to TFLite without TensorFlow) from
the BatchNorm-folded model with an NHWC input, the layout every LiteRT
user feeds; batch 1, as phone apps run. The input is the model's normalised image
(``(pixel / 255 - mean) / std`` per channel, as the metadata's transform says).

int8 files are made by ``ai-edge-quantizer`` (LiteRT's own quantiser) from the fp32 file:
per-channel symmetric int8 weights and per-tensor int8 activations, ranges from real
calibration images. Their input is int8 like the official quantised releases:
``q = round(x / scale) + zero_point`` of the normalised image, the scale and zero point in
the input's quantisation parameters; their output (the logits) is float. lightnets'
recipe adds, step by step, to the quantiser's defaults (which average each image's range
and so clip the rarer large activations): the true minimum and maximum (what ONNX
Runtime's and PyTorch's calibrators take); weight ranges that keep weights imported from
a quantised release on their integer grid (:func:`_weight_ranges`); activation ranges
narrowed where that lowers the int8 error (:func:`_clipped_ranges`); the output operators
computed in float (:func:`_float_outputs`); and the Fire modules' branches scaled to the
one range TFLite's concatenation gives them (:mod:`~lightnets.deploy.equalize`).
``benchmarks/tflite_int8_recipe.py`` measures each step on every weight set with
ImageNet classes.

The lightnets metadata (model name and arguments, input size, transform, class names,
precision, layout) is stored as JSON in the model's ``metadata`` table under the name
``lightnets``, readable with the core install (:func:`read_tflite_metadata`); converting
needs ``pip install "lightnets[tflite]"``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.transforms import EvalTransform
from ..files import write_bytes
from .calibration import DEFAULT_CALIBRATION_IMAGES, calibration_files, prepare_images
from .equalize import equalize_fire_branches
from .export import OnnxMetadata, export_metadata
from .fold import fold_batchnorm

__all__ = [
    "INT8_RECIPES",
    "METADATA_NAME",
    "export_tflite",
    "native_output_held",
    "read_tflite_metadata",
    "require_tflite_extra",
]

METADATA_NAME = "lightnets"
MAX_METADATA_BYTES = 1 << 20  # class names and a transform: far below this
LAYOUT_KEY = "lightnets.layout"


def require_tflite_extra(purpose: str = "writing TFLite files") -> None:
    """Raise ``ValueError`` naming the extra to install when the converter is missing."""
    missing = [
        name
        for name, module in (
            ("litert-torch", "litert_torch"),
            ("ai-edge-quantizer", "ai_edge_quantizer"),
            ("ai-edge-litert", "ai_edge_litert"),
        )
        if not _importable(module)
    ]
    if missing:
        raise ValueError(
            f'{purpose} needs {", ".join(missing)}: install the extra with pip install "lightnets[tflite]"'
        )


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@contextlib.contextmanager
def native_output_held() -> Iterator[list[str]]:
    """Hold what native code prints at the file-descriptor level (the converter's C++ logs
    and progress lines, LiteRT's delegate notice); the list receives the text, for an
    error message."""
    captured: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = [os.dup(1), os.dup(2)]
        try:
            for fd in (1, 2):
                os.dup2(sink.fileno(), fd)
            yield captured
        finally:
            for fd, copy in zip((1, 2), saved, strict=True):
                os.dup2(copy, fd)
                os.close(copy)
            sink.seek(0)
            captured.append(sink.read().decode(errors="replace"))


def _failing_layers(graph: torch.fx.GraphModule, message: str) -> list[str]:
    """``operator in layer`` for the graph node the converter's message names (it says
    ``While executing %node``, or ``Lowering not found: aten.operator``)."""
    executing = set(re.findall(r"While executing %(\w+)", message))
    missing = set(re.findall(r"Lowering not found: aten\.(\w+)", message))
    found = []
    for node in graph.graph.nodes:
        if node.op != "call_function":
            continue
        operator = str(node.target).removeprefix("aten.").split(".")[0]
        if node.name not in executing and operator not in missing:
            continue
        stack = node.meta.get("nn_module_stack") or {}
        # The innermost module; the channel-last wrapper holds the model as "wrapped".
        path = next(reversed(stack.values()))[0] if stack else ""
        layer = path.removeprefix("wrapped").lstrip(".") or "the model's own forward"
        found.append(f"{operator} in {layer}")
    return sorted(set(found))


def _convert(model: nn.Module, shape: tuple[int, int, int]) -> bytes:
    """The fp32 TFLite flatbuffer of ``model`` (NCHW in PyTorch) with NHWC input."""
    with native_output_held():  # its import reports kernels of other platforms it cannot load
        import litert_torch

    channels, height, width = shape
    example = torch.randn(1, height, width, channels)
    nhwc = litert_torch.to_channel_last_io(model, args=[0]).eval()
    graph = torch.export.export(nhwc, (example,), strict=False).module()
    with tempfile.TemporaryDirectory() as folder:
        try:
            with native_output_held() as log:
                litert_torch.convert(graph, (example,)).export(str(Path(folder) / "model.tflite"))
        except Exception as error:
            text = f"{error}\n{''.join(log)}"
            layers = _failing_layers(graph, text)
            where = f" ({'; '.join(layers)})" if layers else ""
            raise ValueError(f"the TFLite converter cannot lower this model{where}: {error}") from error
        return (Path(folder) / "model.tflite").read_bytes()


# A channel's weight scale is kept at least this fraction of |bias| / 127: an int32 bias is
# stored in units of (input scale x weight scale), and a dead channel (weights all zero
# after BatchNorm folding, a constant output) would otherwise overflow them.
BIAS_FLOOR = 1e-4


def operator_names(model: Any) -> list[str]:
    """The builtin operator name (``"CONV_2D"`` ...) of each operator code of a TFLite
    ``ModelT``, indexed as operators' ``opcodeIndex`` (old codes sit in the deprecated byte)."""
    from ai_edge_litert import schema_py_generated as schema

    names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    return [names[max(code.builtinCode, code.deprecatedBuiltinCode)] for code in model.operatorCodes]


def _weight_ranges(flatbuffer: bytes) -> dict[str, dict[str, np.ndarray]]:
    """The symmetric range of every convolution and fully connected weight tensor, per
    output channel, as the quantiser's statistics: ``127 * scale`` with the scale of
    :func:`~lightnets.deploy.quantize.grid_scales` (weights imported from a quantised
    release stay on their integer grid; others get ``max|w| / 127``), floored for the
    bias (see ``BIAS_FLOOR``)."""
    from ai_edge_litert import schema_py_generated as schema

    from .quantize import grid_scales

    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    axes = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 0}  # depthwise: (1, H, W, C)
    names = operator_names(model)

    def constant(subgraph: Any, index: int) -> np.ndarray | None:
        if index < 0:  # an absent optional input (a convolution without bias)
            return None
        tensor = subgraph.tensors[index]
        data = model.buffers[tensor.buffer].data
        if data is None or tensor.type != schema.TensorType.FLOAT32:
            return None
        return np.frombuffer(np.asarray(data, np.uint8).tobytes(), np.float32).reshape(tensor.shape)

    ranges = {}
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            axis = axes.get(names[op.opcodeIndex])
            if axis is None or len(op.inputs) < 2:
                continue
            weight = constant(subgraph, op.inputs[1])
            if weight is None:
                continue
            rows = np.moveaxis(weight, axis, 0).reshape(weight.shape[axis], -1)
            scales = grid_scales(weight, axis)
            if scales is None:
                scales = np.abs(rows).max(1) / 127
            bias = constant(subgraph, op.inputs[2]) if len(op.inputs) > 2 else None
            if bias is not None:
                scales = np.maximum(scales, np.abs(bias).reshape(-1) * BIAS_FLOOR / 127)
            shape = [1] * weight.ndim
            shape[axis] = -1
            bound = (np.maximum(scales, 1e-9) * 127).astype(np.float32).reshape(shape)
            ranges[subgraph.tensors[op.inputs[1]].name.decode()] = {"min": -bound, "max": bound}
    return ranges


# The activation-range search: values kept per tensor and image, images looked at, and the
# fractions of the measured range tried.
CLIP_SAMPLE = 4096
CLIP_IMAGES = 32
CLIP_FRACTIONS = np.linspace(0.2, 1.0, 33)


def least_error_fraction(values: np.ndarray, low: float, high: float) -> float:
    """The fraction ``c`` of ``CLIP_FRACTIONS`` for which int8 over ``[c * low, c * high]``
    (widened to hold 0, as int8 ranges do) restores ``values`` with the least mean squared
    error; 1.0 for an empty range."""
    if high - low <= 0:
        return 1.0
    errors = []
    for fraction in CLIP_FRACTIONS:
        lo, hi = min(0.0, low * fraction), max(0.0, high * fraction)
        step = (hi - lo) / 255
        restored = np.clip(np.round((values - lo) / step), 0, 255) * step + lo
        errors.append(float(np.mean((restored - values) ** 2)))
    return float(CLIP_FRACTIONS[int(np.argmin(errors))])


def _clipped_ranges(
    float_model: bytes, samples: list[dict[str, np.ndarray]], statistics: dict[str, dict]
) -> dict[str, dict]:
    """Each activation range of ``statistics`` (the calibration's minimum and maximum)
    narrowed to the fraction ``c`` of itself that gives the smallest mean squared int8
    error (rounding inside, clipping outside) over the calibration images' values.

    A network trained with ReLU6 reaches 6 in nearly every layer, so min/max ranges are
    all [0, 6], whose step (6 / 255) is coarse for values that are mostly far below it,
    and a linear bottleneck's rare large values widen its range for all the others;
    a little clipping of those buys a finer step (``benchmarks/tflite_int8_recipe.py``
    measures it). The model's inputs and outputs keep their ranges.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    with native_output_held():
        # Without XNNPACK: its fused partitions do not keep their intermediate tensors.
        interpreter = Interpreter(
            model_content=float_model,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
            experimental_preserve_all_tensors=True,
        )
        interpreter.allocate_tensors()
    ends = {d["name"] for d in interpreter.get_input_details() + interpreter.get_output_details()}
    wanted = {
        d["name"]: d["index"]
        for d in interpreter.get_tensor_details()
        if d["name"] in statistics and d["name"] not in ends
    }
    (input_detail,) = interpreter.get_input_details()
    values: dict[str, list[np.ndarray]] = {name: [] for name in wanted}
    # Random positions: a stride through an NHWC tensor would see only some channels.
    pick = np.random.default_rng(0)
    for sample in samples[:CLIP_IMAGES]:
        (image,) = sample.values()
        interpreter.set_tensor(input_detail["index"], image)
        interpreter.invoke()
        for name, index in wanted.items():
            flat = interpreter.get_tensor(index).ravel()
            if flat.size > CLIP_SAMPLE:
                flat = flat[pick.integers(0, flat.size, CLIP_SAMPLE)]
            values[name].append(flat.astype(np.float32))
    narrowed = {}
    for name, parts in values.items():
        low, high = float(np.min(statistics[name]["min"])), float(np.max(statistics[name]["max"]))
        fraction = least_error_fraction(np.concatenate(parts), low, high)
        if fraction < 1.0:
            narrowed[name] = statistics[name] | {
                "min": statistics[name]["min"] * fraction,
                "max": statistics[name]["max"] * fraction,
            }
    return narrowed


# int8 recipes, each one step more than the one before it: the quantiser's defaults (a
# moving average of each calibration image's activation range, its own weight ranges);
# the true min/max activations; lightnets' weight ranges (_weight_ranges); activation
# ranges narrowed where that lowers the error (_clipped_ranges); the model's outputs
# computed in float (_float_outputs); and the Fire modules' two branches scaled to one
# range (equalize.py), which is lightnets' recipe. The others are there to measure what
# each step gives (benchmarks/tflite_int8_recipe.py).
INT8_RECIPES = ("quantizer-default", "min-max", "weight-ranges", "clipped", "float-outputs", "lightnets")


def _has_step(recipe_name: str, step: str) -> bool:
    """Whether the int8 recipe ``recipe_name`` takes ``step`` (one of ``INT8_RECIPES``)."""
    if recipe_name not in INT8_RECIPES:
        raise ValueError(f"unknown int8 recipe {recipe_name!r}; expected one of {INT8_RECIPES}")
    return INT8_RECIPES.index(recipe_name) >= INT8_RECIPES.index(step)


def _float_outputs(manager: Any, float_model: bytes) -> None:
    """Make the operators that produce the model's outputs compute in float, back to and
    including the last weighted one (which runs with int8 weights and its input quantised on
    the fly, as fast in XNNPACK as the static int8 operator): the int8 logits of a
    classifier have about a hundred distinct values, and two classes tied at the top lose
    the answer. SqueezeNet's class scores are a convolution's output averaged over the
    image, so the pooling alone in float would still average int8 scores; the convolution
    is made float too (the recipe benchmark measures what computing them in float gives)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_quantizer import algorithm_manager, qtyping

    model = schema.ModelT.InitFromPackedBuf(float_model, 0)
    names = operator_names(model)
    weighted = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}
    keep_float = algorithm_manager.AlgorithmName.NO_QUANTIZE

    def scope_of(subgraph: Any, op: Any) -> str:  # the quantiser's scope: output names, each followed by ";"
        return "(^|;)" + re.escape(subgraph.tensors[op.outputs[0]].name.decode()) + ";"

    for subgraph in model.subgraphs:
        producer = {out: op for op in subgraph.operators for out in op.outputs}
        ends = [op for op in subgraph.operators if set(subgraph.outputs) & set(op.outputs)]
        for op in ends:
            # The model's output is a virtual operator of the quantiser's: left alone, it
            # would quantise the float result again.
            manager.add_quantization_config(
                scope_of(subgraph, op), qtyping.TFLOperationName.OUTPUT, algorithm_key=keep_float
            )
        chain = list(ends)
        while chain:
            op = chain.pop()
            scope = scope_of(subgraph, op)
            name = names[op.opcodeIndex]
            operation = qtyping.TFLOperationName.__members__.get(name)
            if name in weighted:
                if operation is not None:
                    manager.add_dynamic_config(scope, operation, num_bits=8)
                continue  # the chain ends at the last weighted operator
            if operation is not None:  # others the quantiser leaves in float anyway
                manager.add_quantization_config(scope, operation, algorithm_key=keep_float)
            sources = [producer[i] for i in op.inputs if i in producer]
            if len(sources) == 1:  # through pooling and reshapes; never into a join
                chain.append(sources[0])


def _quantize(float_model: bytes, images: torch.Tensor, recipe_name: str = "lightnets") -> bytes:
    """int8 flatbuffer of ``float_model`` calibrated on ``images`` (N, C, H, W)."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import calibrator, quantizer, recipe, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    signatures = Interpreter(model_content=float_model).get_signature_list()
    (signature,) = signatures
    (input_name,) = signatures[signature]["inputs"]
    samples = [{input_name: image[None].permute(0, 2, 3, 1).contiguous().numpy()} for image in images]
    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(recipe.static_wi8_ai8())  # per-channel int8 weights, int8 activations
    if _has_step(recipe_name, "float-outputs"):
        _float_outputs(manager, float_model)
    int8_recipe = manager.get_quantization_recipe()
    update = {"qsv_update_func": qsv_utils.min_max_update} if _has_step(recipe_name, "min-max") else {}
    with native_output_held():
        ranges = calibrator.Calibrator(float_model, num_threads=1, **update)
        ranges.calibrate({signature: samples}, manager)
        tool = quantizer.Quantizer(float_model)
        tool.load_quantization_recipe(int8_recipe)
        statistics = ranges.get_model_qsvs()
        if _has_step(recipe_name, "clipped"):
            statistics |= _clipped_ranges(float_model, samples, statistics)
        if _has_step(recipe_name, "weight-ranges"):
            statistics |= _weight_ranges(float_model)
        result = tool.quantize(statistics, enable_progress_bar=False, enable_progress_report=False)
    return bytes(result.quantized_model)


def _with_metadata(flatbuffer: bytes, props: dict[str, str]) -> bytes:
    """``flatbuffer`` with ``props`` as JSON in its metadata table (replacing ours)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(props, sort_keys=True).encode(), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = [
        m for m in model.metadata or [] if m.name not in (METADATA_NAME, METADATA_NAME.encode())
    ]
    model.metadata.append(entry)
    builder = flatbuffers.Builder(len(flatbuffer) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def read_tflite_metadata(source: str | Path | bytes) -> OnnxMetadata:
    """The lightnets metadata of a TFLite file (empty for a foreign file).

    The layout and input quantisation go to ``extra``. A file is untrusted: an entry
    that is too large or not the JSON object lightnets writes is a ``ValueError``.
    """
    import tflite

    data = Path(source).read_bytes() if isinstance(source, str | Path) else source
    if data[4:8] != b"TFL3":  # the schema's file identifier
        raise ValueError("not a TFLite file (no TFL3 identifier)")
    try:
        model = tflite.Model.GetRootAsModel(data, 0)
        entries = [model.Metadata(i) for i in range(model.MetadataLength())]
        ours = [m for m in entries if (m.Name() or b"").decode(errors="replace") == METADATA_NAME]
        if not ours:
            return OnnxMetadata()
        index = ours[-1].Buffer()
        if not 0 <= index < model.BuffersLength():
            raise ValueError(f"metadata buffer {index} does not exist")
        buffer = model.Buffers(index)
        # A buffer is stored inside the table, or (files written by some tools) as an offset
        # and size into the file after it.
        start, size = (buffer.Offset(), buffer.Size()) if buffer.Offset() > 1 else (None, buffer.DataLength())
    except (IndexError, TypeError, UnicodeDecodeError, AttributeError) as error:
        raise ValueError(f"not a readable TFLite file ({type(error).__name__}: {error})") from None
    if not 0 < size <= MAX_METADATA_BYTES or (start is not None and start + size > len(data)):
        raise ValueError("the lightnets metadata of this TFLite file is empty, too large or out of the file")
    raw = bytes(data[start : start + size]) if start is not None else buffer.DataAsNumpy().tobytes()
    try:
        props = json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise ValueError(f"bad lightnets metadata in the TFLite file: {error}") from None
    if not isinstance(props, dict) or not all(isinstance(v, str) for v in props.values()):
        raise ValueError("bad lightnets metadata in the TFLite file: not an object of strings")
    return OnnxMetadata.from_props(props)


def export_tflite(
    model: nn.Module,
    path: str | Path,
    input_size: int | Sequence[int] | None = None,
    int8: bool = False,
    calibration: str | Path | Sequence[str | Path] | torch.Tensor | None = None,
    num_images: int = DEFAULT_CALIBRATION_IMAGES,
    fold: bool = True,
    transform: EvalTransform | None = None,
    class_names: Sequence[str] | None = None,
    int8_recipe: str = "lightnets",
) -> Path:
    """Export ``model`` to a TFLite file at ``path`` (written atomically); returns the path.

    fp32 by default; ``int8=True`` quantises it, calibrated on ``calibration`` (a folder
    or files of real images, ``num_images`` of them taken evenly, or a prepared
    (N, C, H, W) tensor); ``int8_recipe`` is one of ``INT8_RECIPES``, the others than the
    default for comparisons. ``input_size``, ``transform`` and ``class_names`` as in
    :func:`~lightnets.deploy.export_onnx`. The input is (1, H, W, C). A model with an
    operator the converter cannot lower raises ``ValueError`` naming it and its layer.
    """
    require_tflite_extra()
    if int8 and calibration is None:
        raise ValueError("an int8 TFLite export needs calibration images (a folder of real images)")
    metadata = export_metadata(model, input_size, transform, class_names)
    assert metadata.input_size is not None and metadata.transform is not None
    export_model = (fold_batchnorm(model) if fold else model).eval()
    images = None
    if int8:
        assert calibration is not None
        if isinstance(calibration, torch.Tensor):
            images = calibration[:num_images]
        else:
            images = prepare_images(calibration_files(calibration, num_images), metadata.transform)
        if _has_step(int8_recipe, "lightnets"):  # the Fire branches' equalisation
            export_model = export_model if fold else copy.deepcopy(export_model)  # never the caller's
            equalize_fire_branches(export_model, images)
    metadata.precision = "int8" if int8 else "fp32"
    props = metadata.to_props()
    props[LAYOUT_KEY] = "NHWC"
    # The metadata goes into the converter's plain flatbuffer; the quantiser carries it over
    # (its own output keeps large buffers outside the flatbuffer table, which a re-pack loses).
    flatbuffer = _with_metadata(_convert(export_model, metadata.input_size), props)
    if images is not None:
        flatbuffer = _quantize(flatbuffer, images, int8_recipe)
    return write_bytes(path, flatbuffer)
