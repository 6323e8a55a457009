"""Initialisation for networks trained from scratch without BatchNorm (SqueezeNet).

A network without normalisation depends on its initial scale. SqueezeNet puts a ReLU on
its class scores before the average pool: with PyTorch's default initialisation (and a
learning rate meant for BatchNorm networks) an early step can push every class-score
pre-activation below zero, after which the logits are all zero, the loss is exactly
ln C and no gradient flows again. The authors' Caffe model initialises every
convolution with Xavier (uniform, fan-in) and the final class-score convolution
(``conv10``) with a Gaussian of standard deviation 0.01 and zero biases. Xavier's
variance of 1 / fan-in halves the signal's second moment at every ReLU: after SqueezeNet's
18 convolutions the features are about 0.006 and the class scores 0.001 for unit inputs,
and the gradients are as small (Caffe's run spends its first thousands of iterations at
ln C for this reason). :func:`norm_free_init` keeps Caffe's class-score weights but uses
He's initialisation (variance 2 / fan-in, made for ReLUs) everywhere else: the features
keep a unit scale and learning starts at once.

That alone does not save the class-score ReLU: with the features' positive mean, the
pre-activations start around -0.2 +- 0.2 for a random draw (80 % of them off), and the
first steps push the active ones down too (each class is a wrong answer for most
images); within a dozen steps, at any learning rate, every score is zero. So the
class-score layer's bias starts at +1 (:data:`CLASS_SCORE_BIAS`): every score starts in
the ReLU's active range, softmax ignores the common offset, and a class is pushed towards
zero only where it is wrong, while the right class keeps its gradient.

SqueezeNet's bypasses (its Section 6) add a Fire module's input to its output. He's
initialisation keeps each layer's scale, so every sum doubles the signal's second moment
(more where the two parts are correlated, and the complex bypass's 1x1 convolution adds a
doubling of its own): on 48 real images at 96 px the last Fire module's output has an
RMS of 14 with the simple bypass and 136 with the complex one, against 2 without, and
the class scores spread (standard deviation) 1.8 and 15 against 0.24
(``benchmarks/results/squeezenet_bypass_init.md``). The first steps shrink the large
logits by turning the scores off, and by step 20 every score is zero, as above. So a
network with residual sums is then rescaled unit by unit, in the order the forward pass
reaches them, until each unit's output has a unit second moment on Gaussian-noise images
(:func:`unit_scale`; the layer-sequential unit-variance initialisation of Mishkin and
Matas, 2016, with noise for data so that it needs no images): a sum then holds no more
than its two unit-scale parts, and on the same real images the last Fire output starts
at an RMS of 1.5 (simple) and 1.7 (complex). Applied to SqueezeNet without a bypass, the
same rescaling (in a first, exploratory form that set each convolution's pre-activation
to a second moment of 2) trained worse than He's alone, 31.5 % against 39.7 % top-1 in
one 90 s proxy run, so networks without sums keep He's.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..layers import Add, ConvBNAct

CLASS_SCORE_BIAS = 1.0


def has_normalisation(model: nn.Module) -> bool:
    """Whether ``model`` holds any BatchNorm / GroupNorm / LayerNorm layer."""
    kinds = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    return any(isinstance(m, kinds) for m in model.modules())


def classifier_layer(model: nn.Module) -> nn.Module | None:
    """The last convolution or linear layer of ``model`` (the class-score layer)."""
    last = None
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            last = module
    return last


def _initialise(
    model: nn.Module,
    body: Callable[[Tensor, int], None],
    class_score_bias: float,
    generator: torch.Generator | None,
) -> None:
    """``body(weight, fan_in)`` for every convolution and linear layer but the class-score
    layer, which gets Caffe's Gaussian of std 0.01 and ``class_score_bias``; other biases zero."""
    last = classifier_layer(model)
    for module in model.modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        if module is last:
            module.weight.normal_(0.0, 0.01, generator=generator)
        else:
            body(module.weight, module.weight[0].numel())
        if module.bias is not None:
            module.bias.fill_(class_score_bias if module is last else 0.0)


@torch.no_grad()
def caffe_init(model: nn.Module, generator: torch.Generator | None = None) -> None:
    """Caffe's Xavier (uniform, fan-in) for every convolution and linear layer, a
    Gaussian of std 0.01 for the class-score layer, zero biases (SqueezeNet's release)."""

    def xavier(weight: Tensor, fan_in: int) -> None:
        bound = math.sqrt(3.0 / fan_in)
        weight.uniform_(-bound, bound, generator=generator)

    _initialise(model, xavier, 0.0, generator)


@torch.no_grad()
def norm_free_init(model: nn.Module, generator: torch.Generator | None = None) -> None:
    """He (normal, fan-in) for every convolution and linear layer but the class-score
    layer, which gets Caffe's Gaussian of std 0.01 and a bias of :data:`CLASS_SCORE_BIAS`;
    other biases zero. The initialisation the trainer gives a network without
    normalisation layers trained from scratch."""

    def he(weight: Tensor, fan_in: int) -> None:
        weight.normal_(0.0, math.sqrt(2.0 / fan_in), generator=generator)

    _initialise(model, he, CLASS_SCORE_BIAS, generator)
    if has_residual_sums(model):
        unit_scale(model, generator)


def has_residual_sums(model: nn.Module) -> bool:
    """Whether ``model`` adds a shortcut to a branch anywhere (an :class:`~lightnets.layers.Add`)."""
    return any(isinstance(m, Add) for m in model.modules())


@torch.no_grad()
def unit_scale(
    model: nn.Module, generator: torch.Generator | None = None, side: int = 64, images: int = 8
) -> None:
    """Scale each convolution unit's weights so that its output has a unit second moment
    on ``images`` Gaussian-noise images, unit by unit in the order the forward pass reaches
    them (each measured after the ones before it are scaled). The class-score layer is
    left alone. Biases must be zero, as :func:`norm_free_init` leaves them: a unit's
    output then scales with its weights exactly (ReLU is positively homogeneous)."""
    last = classifier_layer(model)
    order: list[ConvBNAct] = []
    hooks = [
        unit.register_forward_hook(lambda unit, _inputs, _output: order.append(unit))
        for unit in model.modules()
        if isinstance(unit, ConvBNAct) and unit.conv is not last
    ]
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    side = max(side, getattr(model, "min_input_size", 1))
    noise = torch.randn(images, first.in_channels, side, side, generator=generator)
    training = model.training
    model.eval()
    try:
        model(noise)
        for hook in hooks:
            hook.remove()
        outputs: list[Tensor] = []
        for unit in dict.fromkeys(order):  # first call order, each unit once
            hook = unit.register_forward_hook(lambda _unit, _inputs, output: outputs.append(output))
            model(noise)
            hook.remove()
            conv = unit.conv
            assert isinstance(conv, nn.Conv2d)
            conv.weight.div_(outputs.pop().pow(2).mean().sqrt().clamp_min(1e-12))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(training)
