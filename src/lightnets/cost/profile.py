"""Parameters and multiply-adds of any ``nn.Module``, layer by layer.

The model is copied onto PyTorch's ``meta`` device (shapes, no storage) and run once
with forward hooks on its leaf modules, so counting a VGG16 costs no convolution
arithmetic. The counting follows the papers: a multiply-add counts once; only
convolutions and fully connected layers cost multiply-adds; parameters are the weights
and biases of the deployed model, so BatchNorm (which folds into the convolution before
it) is reported apart, in ``bn_params``.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field

from torch import Tensor, nn

from .kinds import KINDS, NORMS, layer_kind
from .memory import MemoryAnalysis, memory_report
from .meta import check_input_size, run_on_meta


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
    memory: MemoryAnalysis | None = field(default=None, repr=False)  # with profile(memory=True)

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
    bn_params = sum(p.numel() for m in model.modules() if isinstance(m, NORMS) for p in m.parameters(False))
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
        report.memory = memory_report(model, size)
    return report


def _model_name(model: nn.Module) -> str:
    return getattr(model, "model_name", None) or type(model).__name__
