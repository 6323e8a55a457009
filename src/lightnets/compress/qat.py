"""Quantisation-aware training: the deployed integer arithmetic simulated while the model learns.

After BatchNorm is folded (as every int8 export folds it), each convolution and fully
connected layer gets two quantisers that round in the forward pass and let gradients
through unchanged where nothing was clipped (PyTorch's ``fake_quantize`` operators):

* its **weights**, symmetric per output channel on ``bits`` bits (2-8; narrow range
  ``+-(2**(bits-1) - 1)``, so 2 bits is ternary). A channel's scale is fixed when QAT
  starts: the grid step of weights that already lie on an int8 grid (the TFLite
  releases), otherwise the scale with the least squared error among fractions of
  ``max|w| / qmax`` (at 8 bits that is ``max|w| / 127`` or close; at 4 and 2 bits,
  clipping the few largest weights lowers the error of all the others);
* its **input**, asymmetric per tensor on 8 bits. Its range is set to the extremes the
  model reaches on calibration images and kept (:func:`calibrate_ranges`): the ranges the
  int8 exports' min/max calibration finds; without images it follows the moving average
  of the observed extremes, as PyTorch's and TensorFlow's QAT observers do. Every
  activation an int8 network stores is some layer's input, so this puts a quantiser on
  each tensor the int8 export quantises, without tracing the graph.

:func:`finish_qat` then leaves a float model whose weights lie exactly on their
per-channel grids: the int8 exports keep that grid (:func:`lightnets.deploy.quantize.grid_scales`)
and calibrate the activations as for post-training quantisation, and the container
stores each weight as ``bits``-bit integers and a scale per channel (``grid`` encoding).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.utils.hooks import RemovableHandle

from ..deploy.quantize import grid_scales
from .pruning import finish, prunable_layers, weight_parametrizations

__all__ = [
    "ActivationQuantizer",
    "GridWeight",
    "QAT_BITS",
    "check_qat_bits",
    "finish_qat",
    "grid_layers",
    "least_error_scales",
    "prepare_qat",
]

QAT_BITS = (2, 8)
# Parameter-free modules a quantised network runs on int8 tensors (or between them).
_PASSIVE = (
    nn.ReLU,
    nn.ReLU6,
    nn.Hardtanh,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Identity,
    nn.Dropout,
    nn.Flatten,
    nn.Sequential,
    nn.ModuleList,
    nn.ModuleDict,
)


def check_qat_bits(bits: int) -> int:
    """``bits`` if it is a whole number in 2..8; ``ValueError`` naming it otherwise."""
    low, high = QAT_BITS
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer) or not low <= bits <= high:
        raise ValueError(f"QAT weights take {low}..{high} bits (int8 kernels hold at most 8), got {bits!r}")
    return int(bits)


def qmax_of(bits: int) -> int:
    return (1 << (bits - 1)) - 1


@torch.no_grad()
def least_error_scales(weight: Tensor, bits: int, fractions: int = 40) -> Tensor:
    """Per output channel, the symmetric scale with the least squared rounding error
    among ``fractions`` evenly spaced fractions (from 0.2 to 1) of ``max|w| / qmax``."""
    qmax = qmax_of(bits)
    rows = weight.detach().reshape(weight.shape[0], -1).float()
    peak = rows.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny)
    best = peak / qmax
    best_error = torch.full_like(peak, float("inf"))
    for fraction in torch.linspace(0.2, 1.0, fractions):
        scale = peak * fraction / qmax
        rounded = (rows / scale[:, None]).round().clamp(-qmax, qmax) * scale[:, None]
        error = (rounded - rows).pow(2).sum(dim=1)
        better = error < best_error
        best = torch.where(better, scale, best)
        best_error = torch.where(better, error, best_error)
    return best


class GridWeight(nn.Module):
    """The parametrisation ``weight = round(w / scale) * scale`` per output channel,
    clipped to ``+-qmax`` steps; the straight-through gradient moves ``w``."""

    scale: Tensor
    zero_point: Tensor

    def __init__(self, scale: Tensor, bits: int) -> None:
        super().__init__()
        self.bits = bits
        self.register_buffer("scale", scale.detach().float().clone())
        self.register_buffer("zero_point", torch.zeros(scale.numel(), dtype=torch.int32))

    def forward(self, weight: Tensor) -> Tensor:
        qmax = qmax_of(self.bits)
        return torch.fake_quantize_per_channel_affine(
            weight.float(), self.scale, self.zero_point, 0, -qmax, qmax
        ).to(weight.dtype)


class ActivationQuantizer(nn.Module):
    """Asymmetric 8-bit fake quantisation of a tensor, its range a moving average of the
    observed extremes (updated while ``observing``; the first batch sets it)."""

    low: Tensor
    high: Tensor

    def __init__(self, momentum: float | None = 0.01) -> None:
        super().__init__()
        self.momentum = momentum  # None: the extremes of everything observed
        self.observing = True
        self.hook: RemovableHandle | None = None  # the layer's hook that calls it
        self.register_buffer("low", torch.tensor(float("nan")))
        self.register_buffer("high", torch.tensor(float("nan")))

    def forward(self, x: Tensor) -> Tensor:
        if self.observing:
            with torch.no_grad():
                seen_low, seen_high = x.detach().min().float(), x.detach().max().float()
                if torch.isnan(self.low):
                    self.low.copy_(seen_low)
                    self.high.copy_(seen_high)
                elif self.momentum is None:
                    self.low.copy_(torch.minimum(self.low, seen_low))
                    self.high.copy_(torch.maximum(self.high, seen_high))
                else:
                    self.low.lerp_(seen_low, self.momentum)
                    self.high.lerp_(seen_high, self.momentum)
        # The range must hold 0 exactly (padding and ReLU zeros stay exact).
        low = min(float(self.low), 0.0)
        high = max(float(self.high), 0.0)
        scale = max((high - low) / 255.0, 1e-8)
        zero_point = int(round(-low / scale))
        return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, 255)


def _quantize_input(module: nn.Module, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    quantizer = module.get_submodule("input_quantizer")
    return (quantizer(inputs[0]), *inputs[1:])


@dataclass
class QatLayer:
    """What :func:`prepare_qat` did to one layer."""

    name: str
    bits: int
    channels: int
    on_grid: bool  # scales taken from the weights' existing int8 grid


def _unquantisable(model: nn.Module) -> list[str]:
    """Layers holding parameters that are neither convolutions nor fully connected."""
    layers = prunable_layers(model)
    found = []
    for name, module in model.named_modules():
        if name in layers or isinstance(module, _PASSIVE) or module is model:
            continue
        if (
            next(module.parameters(recurse=False), None) is not None
            or next(module.buffers(recurse=False), None) is not None
        ):
            found.append(f"{name} ({type(module).__name__})")
    return found


@torch.no_grad()
def prepare_qat(model: nn.Module, bits: int = 8) -> list[QatLayer]:
    """Put weight and input quantisers on every convolution and linear layer of a folded
    ``model`` (in place); returns one row per layer. ``ValueError`` names a layer the
    int8 path cannot run (a BatchNorm left unfolded, a normalisation, an embedding...)."""
    bits = check_qat_bits(bits)
    bad = _unquantisable(model)
    if bad:
        raise ValueError(
            f"QAT cannot quantise {bad[0]}"
            + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "")
            + ": only convolutions and fully connected layers (BatchNorm folded into them) have int8 "
            "kernels here"
        )
    rows = []
    for name, module in prunable_layers(model).items():
        if parametrize.is_parametrized(module, "weight"):
            raise ValueError(f"{name} is already pruned or shared: QAT goes before those steps")
        weight = module.weight.detach()
        grid = grid_scales(weight.cpu().numpy(), 0, qmax_of(bits)) if bits == 8 else None
        scale = torch.from_numpy(grid) if grid is not None else least_error_scales(weight, bits)
        parametrize.register_parametrization(module, "weight", GridWeight(scale, bits), unsafe=True)
        quantizer = ActivationQuantizer()
        module.add_module("input_quantizer", quantizer)
        quantizer.hook = module.register_forward_pre_hook(_quantize_input)
        rows.append(QatLayer(name, bits, int(weight.shape[0]), grid is not None))
    return rows


def set_observing(model: nn.Module, observing: bool) -> None:
    """Start or stop updating the activation ranges (stopped: they stay as learned)."""
    for module in model.modules():
        if isinstance(module, ActivationQuantizer):
            module.observing = observing


@torch.no_grad()
def calibrate_ranges(model: nn.Module, batches: Iterable[Tensor]) -> None:
    """Set every activation range to the extremes ``model`` reaches on ``batches`` and keep
    it there (``observing`` off): the ranges a min/max calibration of the int8 export
    finds, so training adapts the weights to the steps the deployed model will use.

    (Ranges narrowed to their least-squared-error fraction, as the int8 TFLite recipe
    narrows them, simulated 2 points worse on MobileNet v1 0.25 before training.)"""
    quantizers = [m for m in model.modules() if isinstance(m, ActivationQuantizer)]
    for q in quantizers:
        q.low.fill_(float("nan"))
        q.high.fill_(float("nan"))
        q.momentum, q.observing = None, True
    for batch in batches:
        model(batch)
    for q in quantizers:
        q.observing = False


def grid_layers(model: nn.Module) -> dict[str, tuple[int, np.ndarray]]:
    """Layer name -> (bits, per-channel scales) of the layers :func:`prepare_qat` quantised."""
    out = {}
    for name, module in prunable_layers(model).items():
        if not parametrize.is_parametrized(module, "weight"):
            continue
        for p in weight_parametrizations(module) or ():
            if isinstance(p, GridWeight):
                out[name] = (p.bits, p.scale.cpu().numpy().astype(np.float32))
    return out


def finish_qat(model: nn.Module) -> dict[str, tuple[int, np.ndarray]]:
    """Bake the quantised weights in and remove the input quantisers (in place); returns
    :func:`grid_layers` as they were, for the container's ``grid`` encoding."""
    grids = grid_layers(model)
    for module in list(model.modules()):
        quantizer = module._modules.get("input_quantizer")
        if isinstance(quantizer, ActivationQuantizer):
            if quantizer.hook is not None:
                quantizer.hook.remove()
            del module._modules["input_quantizer"]
    finish(model)
    return grids
