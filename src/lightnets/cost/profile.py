"""Parameters and multiply-adds of any ``nn.Module``, layer by layer.

The model is copied onto PyTorch's ``meta`` device (shapes, no storage) and run once
with forward hooks on its leaf modules, so counting a VGG16 costs no convolution
arithmetic. The counting follows the papers: a multiply-add counts once; only
convolutions and fully connected layers cost multiply-adds; parameters are the weights
and biases of the deployed model, so BatchNorm (which folds into the convolution before
it) is reported apart, in ``bn_params``.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

# Layer kinds, in the order reports list them. MobileNet v1's Table 2 calls them
# "Conv 3x3", "Conv 1x1", "Conv DW 3x3" and "Fully Connected".
KINDS = (
    "conv",
    "pointwise",
    "depthwise",
    "group conv",
    "fully connected",
    "pool",
    "batchnorm",
    "activation",
    "add",
    "shuffle",
    "dropout",
    "reshape",
    "other",
)
COSTED_KINDS = ("conv", "pointwise", "depthwise", "group conv", "fully connected", "pool")

_POOLS = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)
_ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softmax,
    nn.LogSoftmax,
)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
_DROPOUTS = (nn.Dropout, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
_RESHAPES = (nn.Flatten, nn.Unflatten, nn.Identity)


def layer_kind(module: nn.Module) -> str:
    """The kind of a leaf module, as the reports group layers."""
    if isinstance(module, nn.modules.conv._ConvNd):
        groups, in_ch = module.groups, module.in_channels
        if groups == 1:
            return "pointwise" if all(k == 1 for k in module.kernel_size) else "conv"
        return "depthwise" if groups == in_ch else "group conv"
    if isinstance(module, nn.Linear):
        return "fully connected"
    if isinstance(module, _POOLS):
        return "pool"
    if isinstance(module, _NORMS):
        return "batchnorm"
    if isinstance(module, _ACTIVATIONS):
        return "activation"
    if isinstance(module, _DROPOUTS):
        return "dropout"
    if isinstance(module, _RESHAPES):
        return "reshape"
    name = type(module).__name__.lower()
    if name == "add":
        return "add"
    if "shuffle" in name:
        return "shuffle"
    return "other"


def layer_madds(module: nn.Module, inputs: tuple, output: Tensor) -> int:
    """Multiply-adds of one call of ``module`` for the whole batch in ``output``."""
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        per_input = module.out_channels // module.groups * math.prod(module.kernel_size)
        return inputs[0].numel() * per_input
    if isinstance(module, nn.modules.conv._ConvNd):
        per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
        return output.numel() * per_output
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 0


def kernel_text(module: nn.Module) -> str:
    kernel = getattr(module, "kernel_size", None)
    if kernel is None:
        return ""
    kernel = kernel if isinstance(kernel, tuple) else (kernel,) * 2
    return "x".join(str(k) for k in kernel)


@dataclass
class LayerCost:
    """One call of a leaf module: shapes (batch of one), parameters, multiply-adds."""

    name: str
    type: str
    kind: str
    kernel: str
    stride: int
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    params: int
    madds: int
    activations: int  # elements of the output


@dataclass
class KindCost:
    kind: str
    layers: int
    params: int
    madds: int
    params_share: float  # percent of the model's params
    madds_share: float  # percent of the model's MAdds


@dataclass
class CostReport:
    """What :func:`profile` measured. ``params`` excludes BatchNorm (see ``bn_params``)."""

    model: str
    input_size: tuple[int, ...]
    layers: list[LayerCost]
    params: int
    madds: int
    bn_params: int
    memory: object | None = field(default=None, repr=False)

    def by_kind(self) -> list[KindCost]:
        """Totals per layer kind with their shares (MobileNet v1's Table 2)."""
        rows = []
        for kind in KINDS:
            members = [layer for layer in self.layers if layer.kind == kind]
            if not members or kind == "batchnorm":
                continue
            params = sum(layer.params for layer in members)
            madds = sum(layer.madds for layer in members)
            rows.append(
                KindCost(
                    kind,
                    len(members),
                    params,
                    madds,
                    100.0 * params / self.params if self.params else 0.0,
                    100.0 * madds / self.madds if self.madds else 0.0,
                )
            )
        return rows

    def kind(self, kind: str) -> KindCost:
        for row in self.by_kind():
            if row.kind == kind:
                return row
        return KindCost(kind, 0, 0, 0, 0.0, 0.0)

    def to_dict(self, by_layer: bool = False) -> dict:
        out: dict = {
            "model": self.model,
            "input_size": list(self.input_size),
            "params": self.params,
            "madds": self.madds,
            "bn_params": self.bn_params,
            "by_kind": [asdict(row) for row in self.by_kind()],
        }
        if by_layer:
            out["layers"] = [asdict(layer) for layer in self.layers]
        if self.memory is not None:
            out["memory"] = self.memory.to_dict()
        return out


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


def check_input_size(model: nn.Module, input_size: tuple[int, ...]) -> tuple[int, ...]:
    """Validate ``(C, H, W)`` against the model; raises ``ValueError`` naming the problem."""
    size = tuple(input_size)
    if len(size) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
        raise ValueError(f"input_size must be three positive integers (C, H, W), got {input_size!r}")
    checker = getattr(model, "check_input_size", None)
    if callable(checker):
        checker(size[1], size[2])
    first_conv = next((m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    if first_conv is not None and first_conv.in_channels != size[0]:
        raise ValueError(
            f"input_size has {size[0]} channels but the model's first convolution takes "
            f"{first_conv.in_channels}"
        )
    return size


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


def profile(
    model: nn.Module, input_size: tuple[int, int, int] = (3, 224, 224), memory: bool = False
) -> CostReport:
    """Count the parameters and multiply-adds of ``model`` for one ``(C, H, W)`` input.

    Works for any ``nn.Module`` whose forward takes one image batch. ``memory=True`` also
    runs :func:`lightnets.cost.activation_memory` under both execution models.
    """
    size = check_input_size(model, input_size)
    layers: list[LayerCost] = []
    seen: Counter[str] = Counter()

    def factory(name: str):
        def hook(module: nn.Module, inputs: tuple, output: object) -> None:
            out = output[0] if isinstance(output, (tuple, list)) else output
            if not isinstance(out, Tensor):
                return
            seen[name] += 1
            first_call = seen[name] == 1
            label = name if first_call else f"{name}#{seen[name]}"
            own = sum(p.numel() for p in module.parameters(recurse=False)) if first_call else 0
            tensor_in = next((t for t in inputs if isinstance(t, Tensor)), None)
            stride = getattr(module, "stride", 1)
            stride = stride[0] if isinstance(stride, tuple) else (stride or 1)
            layers.append(
                LayerCost(
                    name=label,
                    type=type(module).__name__,
                    kind=layer_kind(module),
                    kernel=kernel_text(module),
                    stride=int(stride),
                    input_shape=tuple(tensor_in.shape[1:]) if tensor_in is not None else (),
                    output_shape=tuple(out.shape[1:]),
                    params=own,
                    madds=layer_madds(module, inputs, out),
                    activations=out[0].numel() if out.dim() > 0 else 1,
                )
            )

        return hook

    run_on_meta(model, size, factory)
    bn_params = sum(p.numel() for m in model.modules() if isinstance(m, _NORMS) for p in m.parameters(False))
    total = sum(p.numel() for p in model.parameters())
    report = CostReport(
        model=_model_name(model),
        input_size=size,
        layers=layers,
        params=total - bn_params,
        madds=sum(layer.madds for layer in layers),
        bn_params=bn_params,
    )
    if memory:
        from .memory import memory_report

        report.memory = memory_report(model, size)
    return report


def _model_name(model: nn.Module) -> str:
    return getattr(model, "model_name", None) or type(model).__name__
