"""int8 post-training static quantisation, calibrated on real images.

Two executors, one recipe: 8-bit activations (asymmetric, per tensor, ranges observed on
calibration images prepared exactly as for evaluation) and 8-bit symmetric per-channel
weights.

* :func:`quantize_onnx`: ONNX Runtime's quantiser on an exported model, in QDQ form
  (``QuantizeLinear``/``DequantizeLinear`` pairs that ONNX Runtime fuses into
  ``QLinearConv`` and friends). A ``Relu``/``Clip(0, 6)`` after a convolution is
  absorbed into the convolution's output range, as in TFLite.
* :func:`quantize_pytorch`: PyTorch's FX graph-mode quantisation (the ``x86`` engine by
  default: fbgemm and oneDNN kernels). PyTorch has no fused conv-ReLU6, and a ReLU6 on
  its own shares its input's range, which would spend most of the levels on values the
  clamp throws away; so the observer between a convolution and its ReLU6 sees the values
  clamped to [0, 6], and the int8 convolution output saturates where ReLU6 would cut.

Weights imported from a quantised release (the TFLite sets) already lie on an integer
grid; the usual ``max|w| / 127`` scale would round them a second time. Where a tensor's
or a channel's weights lie on a grid, the scale is the grid step (a channel wider than
int8 holds gets its own ``max|w| / 127``): see :func:`grid_scales`. On MobileNetV2 1.0 with the
TFLite uint8 weights that is worth about a point of top-1 agreement with fp32.

``reduce_range`` (7-bit weights in ONNX Runtime; 7-bit activations or weights in
PyTorch) avoids the 16-bit overflow of ``u8 x s8`` pair sums on CPUs without VNNI, at a
measurable cost in agreement; it is off by default, and ``benchmarks/int8_accuracy.py``
reports what it does on real images.
"""

from __future__ import annotations

import copy
import functools
import json
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..cpu import cpu_has_vnni
from ..data.transforms import EvalTransform
from ..zoo import transform_of
from .calibration import DEFAULT_CALIBRATION_IMAGES, calibration_batches
from .export import OnnxMetadata, export_onnx, read_metadata, write_metadata

__all__ = [
    "CALIBRATION_METHODS",
    "GridPerChannelObserver",
    "grid_scales",
    "quantization_info",
    "quantize_onnx",
    "quantize_pytorch",
    "top1_agreement",
    "weight_grid_step",
]

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")

REDUCE_RANGES = ("activations", "weights", "none")
PYTORCH_OBSERVERS = ("histogram", "minmax")

CalibrationSource = str | Path | Iterable[str | Path] | Tensor


def top1_agreement(reference: Tensor | Any, candidate: Tensor | Any) -> float:
    """Fraction (0..1) of rows whose arg-max agrees between two logit arrays."""
    reference, candidate = torch.as_tensor(reference), torch.as_tensor(candidate)
    if reference.shape != candidate.shape:
        raise ValueError(f"logit shapes differ: {tuple(reference.shape)} and {tuple(candidate.shape)}")
    return float((reference.argmax(-1) == candidate.argmax(-1)).float().mean())


def weight_grid_step(weight: Any, max_levels: int = 4096, tolerance: float = 2e-3) -> float | None:
    """The step of the integer grid ``weight`` lies on, if it lies on one; else None.

    Weights imported from a quantised release (TFLite uint8, say) are ``step * integer``
    with at most a few hundred levels. Re-quantising them with the usual per-channel
    scale ``max|w| / 127`` moves every weight off that grid, and a quantisation-aware
    trained network notices (its fp32 agreement drops by a point or more). Float weights
    have no such step and give None.
    """
    values = np.abs(np.asarray(weight, dtype=np.float64)).ravel()
    values = values[values > 0]
    if values.size < 2:
        return None
    unique = np.unique(values)
    # One magnitude (a ternary channel, say): that magnitude or a divisor of it is the step.
    candidate = float(min(np.diff(unique).min(), unique[0])) if unique.size > 1 else float(unique[0])
    # With few values the smallest gap may be a multiple of the step: try its divisors.
    for divisor in range(1, 17):
        step = candidate / divisor
        if step <= 0 or unique[-1] / step > max_levels:
            return None
        ratio = values / step
        if float(np.abs(ratio - np.round(ratio)).max()) <= tolerance:
            return step
    return None


def grid_scales(weight: Any, axis: int = 0, qmax: int = 127) -> np.ndarray | None:
    """Symmetric per-channel scales that keep ``weight`` on its integer grid where they can.

    The grid is the whole tensor's (a per-tensor quantised release such as TFLite
    uint8) or else each channel's own (a per-channel release). A channel whose largest
    weight is at most ``qmax`` grid steps gets the step itself, so its weights stay
    exactly what they were; a wider one (a uint8 grid's zero point far from 128) and a
    channel on no grid the usual ``max|w| / qmax``: twice the step would keep the grid but
    double the rounding error, and those few channels are a layer's largest (on MobileNet
    v1 0.75 that choice is worth 3 points of top-1 agreement in int8 TFLite). None when no
    channel is on a grid.
    """
    array = np.asarray(weight, dtype=np.float64)
    rows = np.moveaxis(array, axis, 0).reshape(array.shape[axis], -1)
    tensor_step = weight_grid_step(array)
    scales, on_grid = [], 0
    for row in rows:
        peak = float(np.abs(row).max())
        step = tensor_step if tensor_step is not None else weight_grid_step(row)
        if peak == 0.0:
            scales.append(step or 1.0)
        elif step is None or round(peak / step) > qmax:
            scales.append(peak / qmax)
        else:
            scales.append(step)
            on_grid += 1
    return np.asarray(scales, dtype=np.float32) if on_grid else None


def _grid_overrides(model_path: Path, qmax: int) -> dict[str, list[dict]]:
    """ONNX Runtime ``TensorQuantOverrides`` giving grid-keeping scales to the weights of
    every Conv and Gemm whose weights lie on a grid."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(model_path)).graph
    initializers = {t.name: t for t in graph.initializer}
    overrides: dict[str, list[dict]] = {}
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 2 or node.input[1] not in initializers:
            continue
        axis = 0
        if node.op_type == "Gemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            axis = 0 if trans_b else 1
        weight = numpy_helper.to_array(initializers[node.input[1]])
        scales = grid_scales(weight, axis, qmax)
        peaks = np.abs(np.moveaxis(weight, axis, 0).reshape(weight.shape[axis], -1)).max(axis=1)
        nonzero = peaks > 0
        if scales is not None and not np.allclose(scales[nonzero], peaks[nonzero] / qmax, rtol=1e-4, atol=0):
            overrides[node.input[1]] = [
                {"axis": axis, "scale": np.array(scale, dtype=np.float32), "zero_point": 0}
                for scale in scales
            ]
    return overrides


@functools.cache
def _batch_reader_class() -> type:
    """ONNX Runtime's ``CalibrationDataReader`` over prepared batches.

    Made on first use: importing ``onnxruntime.quantization`` takes most of a second,
    which no other command should pay.
    """
    from onnxruntime.quantization import CalibrationDataReader

    class BatchReader(CalibrationDataReader):
        """Feeds ``batches`` (N, C, H, W tensors) to the model input ``input_name``, once."""

        def __init__(self, input_name: str, batches: Sequence[Tensor]) -> None:
            self.input_name = input_name
            self.batches = list(batches)
            self._next = iter(self.batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._next, None)
            return None if batch is None else {self.input_name: batch.numpy()}

        def __len__(self) -> int:
            return len(self.batches)

    return BatchReader


def _describe(source: CalibrationSource, count: int) -> str:
    if isinstance(source, Tensor):
        return f"{count} prepared images"
    if isinstance(source, str | Path):
        return f"{count} images from {source}"
    return f"{count} images"


def quantize_onnx(
    model: str | Path | nn.Module,
    output: str | Path,
    calibration: CalibrationSource,
    num_images: int | None = DEFAULT_CALIBRATION_IMAGES,
    method: str = "minmax",
    per_channel: bool = True,
    reduce_range: bool = False,
    activation_type: str = "uint8",
    batch_size: int = 16,
    keep_float: Sequence[str] = (),
    moving_average: bool = False,
    keep_weight_grid: bool = True,
) -> Path:
    """Quantise an fp32 ONNX file (or a model, exported first) to int8 QDQ at ``output``.

    ``calibration`` is a folder of real images (or files, or a prepared batch);
    ``num_images`` of them are prepared with the transform stored in the model's
    metadata. ``method`` chooses the activation ranges: ``"minmax"`` (observed extremes,
    ``moving_average`` to average them over batches), ``"entropy"`` (KL divergence) or
    ``"percentile"`` (99.999th). Weights are symmetric int8, per output channel unless
    ``per_channel=False``, kept on their grid if they have one (``keep_weight_grid``);
    ``reduce_range`` makes them 7-bit. Activations are ``"uint8"`` (default) or
    ``"int8"``. Ops listed in ``keep_float`` (ONNX op types, e.g. ``["Gemm"]``) stay in
    float. The metadata is carried over, with precision ``int8`` and how it was
    calibrated (``quantization_info(path)``).
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    if method not in methods:
        raise ValueError(f"unknown calibration method {method!r}; expected one of {CALIBRATION_METHODS}")
    activation = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}.get(activation_type)
    if activation is None:
        raise ValueError(f"activation_type must be 'uint8' or 'int8', got {activation_type!r}")
    output = Path(output)
    with tempfile.TemporaryDirectory() as folder:
        if isinstance(model, nn.Module):
            fp32 = export_onnx(model, Path(folder) / "fp32.onnx")
        else:
            fp32 = Path(model)
        metadata = read_metadata(fp32)
        if metadata.precision != "fp32":
            raise ValueError(f"{fp32} is already quantised ({metadata.precision})")
        transform = metadata.transform or EvalTransform()
        batches = calibration_batches(calibration, transform, num_images, batch_size)
        count = sum(len(b) for b in batches)
        input_name = onnx.load(str(fp32), load_external_data=False).graph.input[0].name

        prepared = Path(folder) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared), load_external_data=False).graph
        excluded = [node.name for node in graph.node if node.op_type in set(keep_float)]
        extra: dict[str, Any] = {"ActivationSymmetric": False, "WeightSymmetric": True}
        if method == "percentile":
            extra["CalibPercentile"] = 99.999
        if moving_average:
            extra["CalibMovingAverage"] = True
        grid_kept = 0
        if keep_weight_grid and per_channel:
            overrides = _grid_overrides(prepared, 63 if reduce_range else 127)
            grid_kept = len(overrides)
            if overrides:
                extra["TensorQuantOverrides"] = overrides
        if method != "minmax":  # the histogram collectors need batches of one size
            batches = [image[None] for batch in batches for image in batch]
        quantized = Path(folder) / "int8.onnx"
        # No warning filter: ONNX Runtime's quantiser raises no Python warning on this
        # path (its notices go to logging), and a new one should be seen, not hidden.
        quantize_static(
            str(prepared),
            str(quantized),
            _batch_reader_class()(input_name, batches),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            reduce_range=reduce_range,
            activation_type=activation,
            weight_type=QuantType.QInt8,
            calibrate_method=methods[method],
            extra_options=extra,
            nodes_to_exclude=excluded,
        )
        proto = onnx.load(str(quantized))
    quantization = {
        "format": "QDQ",
        "executor": "onnxruntime",
        "weights": f"int8 symmetric, {'per channel' if per_channel else 'per tensor'}",
        "activations": f"{activation_type} asymmetric, per tensor",
        "reduce_range": reduce_range,
        "calibration": _describe(calibration, count),
        "method": method,
        "float_ops": sorted(set(keep_float)),
        "weights_kept_on_their_grid": grid_kept,
    }
    metadata.precision = "int8"
    metadata.extra["lightnets.quantization"] = json.dumps(quantization, sort_keys=True)
    write_metadata(proto, metadata)
    proto.doc_string = f"{metadata.model_name} quantised to int8 (QDQ) by lightnets"
    onnx.checker.check_model(proto)
    output.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(output))
    return output


class GridPerChannelObserver(torch.ao.quantization.PerChannelMinMaxObserver):
    """Per-channel symmetric weight observer that keeps weights on their integer grid
    (see :func:`grid_scales`); for float weights it is the plain min/max observer."""

    def forward(self, x: Tensor) -> Tensor:
        self._weight = x.detach()
        return super().forward(x)

    def calculate_qparams(self, **kwargs: Any) -> tuple[Tensor, Tensor]:
        scale, zero_point = super().calculate_qparams(**kwargs)
        weight = getattr(self, "_weight", None)
        if weight is None or self.qscheme != torch.per_channel_symmetric:
            return scale, zero_point
        scales = grid_scales(weight.cpu().numpy(), self.ch_axis, min(self.quant_max, -self.quant_min))
        if scales is None:
            return scale, zero_point
        return torch.from_numpy(scales).to(scale), torch.zeros_like(zero_point)


class _Clamped:
    """Mixin for the observer between a convolution and its ReLU6: it clamps what passes
    to ``[low, high]`` (so calibration downstream sees ReLU6's output) and observes that."""

    low: float = 0.0
    high: float = 6.0

    def forward(self, x: Tensor) -> Tensor:
        x = x.clamp(self.low, self.high)
        super().forward(x)  # type: ignore[misc]
        return x


class _ClampedHistogramObserver(_Clamped, torch.ao.quantization.HistogramObserver):
    pass


class _ClampedMinMaxObserver(_Clamped, torch.ao.quantization.MinMaxObserver):
    pass


def _is_relu6(module: nn.Module | None) -> bool:
    if isinstance(module, nn.ReLU6):
        return True
    return isinstance(module, nn.Hardtanh) and module.min_val == 0.0 and module.max_val == 6.0


def _clamp_relu6_inputs(prepared: torch.fx.GraphModule) -> int:
    """Give every ReLU6 whose input is observed for it alone a clamping observer.

    PyTorch has no fused conv-ReLU6, so a ReLU6 shares the quantisation of its input, the
    convolution's raw output. Observed as it is, that range reaches far beyond 6 and most
    of the levels go to values the clamp throws away; observed clamped to ``[0, 6]``, the
    convolution's int8 output already saturates at 0 and the ReLU6 only cuts at 6.
    """
    from torch.ao.quantization.observer import HistogramObserver, MinMaxObserver

    swapped = 0
    for node in prepared.graph.nodes:
        is_module = node.op == "call_module" and isinstance(node.target, str)
        module = prepared.get_submodule(node.target) if is_module else None
        if not _is_relu6(module) or not node.args:
            continue
        observer_node = node.args[0]
        if not isinstance(observer_node, torch.fx.Node) or observer_node.op != "call_module":
            continue
        target = observer_node.target
        if not isinstance(target, str):
            continue
        observer = prepared.get_submodule(target)
        if not isinstance(observer, HistogramObserver | MinMaxObserver):
            continue
        if type(observer) not in (HistogramObserver, MinMaxObserver) or len(observer_node.users) != 1:
            continue
        source = observer_node.args[0]
        if isinstance(source, torch.fx.Node) and len(source.users) != 1:
            continue  # the unclamped values go elsewhere too
        kwargs: dict[str, Any] = {"dtype": observer.dtype, "qscheme": observer.qscheme}
        # quant_min/max as the observer has them: already halved if reduce_range was asked for.
        kwargs |= {"quant_min": observer.quant_min, "quant_max": observer.quant_max}
        if type(observer) is HistogramObserver:
            clamped: nn.Module = _ClampedHistogramObserver(bins=observer.bins, **kwargs)
        else:
            clamped = _ClampedMinMaxObserver(**kwargs)
        prepared.add_submodule(target, clamped)
        swapped += 1
    return swapped


def _backend_config() -> Any:
    """PyTorch's native backend configuration, plus the ops lightnets' blocks use that
    only move values around: TF "SAME" padding and the ``unflatten`` of channel shuffle
    keep their input's quantisation instead of leaving it for float and back."""
    import torch.ao.quantization.backend_config.utils  # noqa: F401  (needed before building configs)
    from torch.ao.quantization.backend_config import (
        BackendPatternConfig,
        ObservationType,
        get_native_backend_config,
    )

    from ..layers import tf_same_pad

    config = get_native_backend_config()
    shared = next(c for c in config.configs if c.pattern is nn.MaxPool2d).dtype_configs
    for pattern in (tf_same_pad, "unflatten", torch.unflatten, "flatten", nn.Flatten):
        config.set_backend_pattern_config(
            BackendPatternConfig(pattern)
            .set_observation_type(ObservationType.OUTPUT_SHARE_OBSERVER_WITH_INPUT)
            .set_dtype_configs(shared)
        )
    return config


def _is_value_preserving(node: torch.fx.Node, modules: dict[str, nn.Module]) -> bool:
    from ..layers import tf_same_pad

    if node.op == "call_module":
        return isinstance(node.target, str) and isinstance(modules.get(node.target), nn.Flatten)
    if node.op == "call_function":
        return node.target in (tf_same_pad, torch.unflatten, torch.flatten)
    return node.op == "call_method" and node.target in ("unflatten", "flatten")


def _run_shape_ops_in_int8(quantized: torch.fx.GraphModule) -> int:
    """Remove the dequantize / quantize pair PyTorch leaves around ops its lowering does
    not list (TF "SAME" padding, ``unflatten``, ``nn.Flatten``): they move int8 values as they are (the
    padding adds exact zeros) and their output shares their input's observer, so the
    pair only cost time. Returns how many ops now run on int8 tensors."""
    rewritten = 0
    modules = dict(quantized.named_modules())
    for node in list(quantized.graph.nodes):
        if node.op != "call_function" or node.target is not torch.quantize_per_tensor:
            continue
        op = node.args[0]
        if not isinstance(op, torch.fx.Node) or not _is_value_preserving(op, modules) or len(op.users) != 1:
            continue
        dequantize = op.args[0]
        if not (isinstance(dequantize, torch.fx.Node) and dequantize.op == "call_method"):
            continue
        if dequantize.target != "dequantize":
            continue
        op.args = (dequantize.args[0], *op.args[1:])
        node.replace_all_uses_with(op)
        quantized.graph.erase_node(node)
        if not dequantize.users:
            quantized.graph.erase_node(dequantize)
        rewritten += 1
    if rewritten:
        quantized.graph.eliminate_dead_code()
        quantized.graph.lint()
        quantized.recompile()
    return rewritten


def _convs_without_int8_kernel(model: nn.Module) -> list[str]:
    """Names of the convolutions the current quantised engine cannot pack in int8.

    oneDNN, behind the x86 engine, refuses some grouped shapes (ShuffleNet v1 1x g=3's
    480 -> 240 pointwise convolutions, for one), failing deep inside ``convert_fx``;
    asking each shape first lets those layers stay in float instead.
    """
    names = []
    for name, conv in model.named_modules():
        if not isinstance(conv, nn.Conv2d):
            continue
        weight = torch.quantize_per_channel(
            torch.zeros_like(conv.weight),
            torch.ones(conv.out_channels),
            torch.zeros(conv.out_channels, dtype=torch.long),
            0,
            torch.qint8,
        )
        try:
            torch.ops.quantized.conv2d_prepack(
                weight, None, list(conv.stride), list(conv.padding), list(conv.dilation), conv.groups
            )
        except RuntimeError:
            names.append(name)
    return names


def quantize_pytorch(
    model: nn.Module,
    calibration: CalibrationSource,
    num_images: int | None = DEFAULT_CALIBRATION_IMAGES,
    backend: str = "x86",
    transform: EvalTransform | None = None,
    batch_size: int = 16,
    per_channel: bool = True,
    reduce_range: str | None = None,
    observer: str = "histogram",
    reference: bool = False,
    keep_weight_grid: bool = True,
) -> nn.Module:
    """PyTorch int8 model (FX graph mode, ``backend`` kernels) calibrated on real images.

    Returns a ``torch.fx.GraphModule`` that takes and returns float tensors (it
    quantises its input and dequantises its logits) and keeps ``model_name``,
    ``pretrained_cfg`` and ``num_classes``. ``backend`` is ``"x86"`` (default),
    ``"fbgemm"``, ``"onednn"`` or ``"qnnpack"``; the global quantised engine is set to it.
    ``num_images`` images of ``calibration`` (a folder, files or a prepared batch) are
    prepared with the model's evaluation transform (or ``transform``). ``observer`` is
    ``"histogram"`` (default: ranges that minimise the quantisation error) or
    ``"minmax"``; ``reduce_range`` ``"activations"`` (7-bit, PyTorch's own x86 default),
    ``"weights"`` (7-bit) or ``"none"``. By default: ``"none"`` on CPUs with VNNI, and
    ``"weights"`` on those without, whose int8 kernels add pairs of 8-bit products in 16
    bits and saturate unless one side keeps to 7 bits (measured on an AVX2-only CPU,
    SqueezeNet 1.1's top-1 agreement with its float model on 128 sample images: 70 % with
    8-bit weights and activations, 80 % with 7-bit activations, 83 % with 7-bit weights;
    the quantisation alone, simulated in float, gives 88 %). ``reference=True`` gives the reference
    model (quantise-dequantise in float: the recipe without the kernels).
    """
    from torch.ao.quantization import QConfig, get_default_qconfig_mapping
    from torch.ao.quantization.observer import HistogramObserver, MinMaxObserver, PerChannelMinMaxObserver
    from torch.ao.quantization.quantize_fx import convert_fx, convert_to_reference_fx, prepare_fx

    if backend not in torch.backends.quantized.supported_engines:
        raise ValueError(
            f"quantised backend {backend!r} is not available; have {torch.backends.quantized.supported_engines}"
        )
    if reduce_range is None:
        reduce_range = "none" if cpu_has_vnni() else "weights"
    if reduce_range not in REDUCE_RANGES:
        raise ValueError(f"reduce_range must be one of {REDUCE_RANGES}, got {reduce_range!r}")
    torch.backends.quantized.engine = backend
    transform = transform or transform_of(model)
    batches = calibration_batches(calibration, transform, num_images, batch_size)
    float_model = copy.deepcopy(model).eval()
    weight_range = (-64, 63) if reduce_range == "weights" else (-128, 127)
    if per_channel:
        weight = (GridPerChannelObserver if keep_weight_grid else PerChannelMinMaxObserver).with_args(
            dtype=torch.qint8,
            qscheme=torch.per_channel_symmetric,
            quant_min=weight_range[0],
            quant_max=weight_range[1],
        )
    else:
        weight = MinMaxObserver.with_args(
            dtype=torch.qint8,
            qscheme=torch.per_tensor_symmetric,
            quant_min=weight_range[0],
            quant_max=weight_range[1],
        )
    if observer not in PYTORCH_OBSERVERS:
        raise ValueError(f"observer must be one of {PYTORCH_OBSERVERS}, got {observer!r}")
    observer_class = HistogramObserver if observer == "histogram" else MinMaxObserver
    activation = observer_class.with_args(reduce_range=reduce_range == "activations")
    mapping = get_default_qconfig_mapping(backend).set_global(QConfig(activation=activation, weight=weight))
    unpackable = _convs_without_int8_kernel(float_model)
    if unpackable:
        warnings.warn(
            f"the {backend} engine has no int8 kernel for {len(unpackable)} convolution(s) "
            f"({', '.join(unpackable)}): they stay in float",
            stacklevel=2,
        )
        for name in unpackable:
            mapping.set_module_name(name, None)
    backend_config = _backend_config()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FX quantisation's deprecation notices
        prepared = prepare_fx(
            float_model, mapping, example_inputs=(batches[0][:1],), backend_config=backend_config
        )
        _clamp_relu6_inputs(prepared)
        with torch.no_grad():
            for batch in batches:
                prepared(batch)
        if reference:
            quantized = convert_to_reference_fx(prepared, backend_config=backend_config)
        else:
            quantized = convert_fx(prepared, backend_config=backend_config)
            _run_shape_ops_in_int8(quantized)
    for attribute in ("model_name", "model_kwargs", "pretrained_cfg", "num_classes"):
        if hasattr(model, attribute):
            setattr(quantized, attribute, getattr(model, attribute))
    quantization = {
        "backend": backend,
        "weights": f"int8 symmetric, {'per channel' if per_channel else 'per tensor'}",
        "reduce_range": reduce_range,
        "calibration": _describe(calibration, sum(len(b) for b in batches)),
    }
    # A plain attribute, not a submodule: setattr keeps nn.Module's typed __setattr__ out of it.
    setattr(quantized, "quantization", quantization)  # noqa: B010
    return quantized


def quantization_info(path: str | Path) -> dict:
    """How an int8 ONNX file was quantised (empty for fp32)."""
    meta: OnnxMetadata = read_metadata(path)
    text = meta.extra.get("lightnets.quantization")
    return json.loads(text) if text else {}
