"""BatchNorm folding, Conv-BN-activation fusion, and the inference-only ``deploy()`` model.

In evaluation mode a BatchNorm is an affine map per channel,
``y = (x - mean) / sqrt(var + eps) * gamma + beta``, so it folds into the convolution
before it: ``W' = W * s`` and ``b' = (b - mean) * s + beta`` with
``s = gamma / sqrt(var + eps)``. The arithmetic is done in float64 and rounded once, so
the folded model differs from the original only by float32 rounding.

A BatchNorm is folded when it directly follows a convolution (or a linear layer, or a
factorised :class:`~lightnets.models.low_rank.LowRank` pair, into its second layer)
inside an ``nn.Sequential``, whose order is its execution order. Every lightnets block keeps
Conv-BN-act in a :class:`~lightnets.layers.ConvBNAct` (a ``Sequential``), and
torchvision's ``Conv2dNormActivation`` is one too, so both fold without tracing.
"""

from __future__ import annotations

import copy
import types

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import ConvBNAct, TFSamePad, tf_same_pad, to_channels_last
from ..models.low_rank import LowRank

__all__ = ["FusedConvAct", "batchnorm_scale", "deploy", "fold_batchnorm", "fuse_conv_bn_act", "is_deployed"]

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def batchnorm_scale(bn: nn.modules.batchnorm._BatchNorm) -> Tensor:
    """``gamma / sqrt(var + eps)`` per channel in float64: what folding multiplies the
    preceding layer's filters by (the BatchNorm must have running statistics)."""
    assert bn.running_var is not None
    var = bn.running_var.detach().double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(var)
    return gamma / torch.sqrt(var + bn.eps)


@torch.no_grad()
def fold_into(layer: nn.modules.conv._ConvNd | nn.Linear, bn: nn.modules.batchnorm._BatchNorm) -> None:
    """Fold the eval-mode ``bn`` that follows ``layer`` (a conv or linear) into ``layer``.

    ``layer`` gains a bias if it had none. Raises ``ValueError`` for a BatchNorm without
    running statistics (it normalises with the batch's, which no weight can express) or
    whose channel count differs from the layer's output.
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f"{bn} has no running statistics (track_running_stats=False): it cannot be folded")
    weight = layer.weight
    out_channels = weight.shape[0]
    if bn.num_features != out_channels:
        raise ValueError(f"{bn} follows a layer with {out_channels} output channels")
    if isinstance(layer, nn.ConvTranspose2d | nn.ConvTranspose1d | nn.ConvTranspose3d):
        raise ValueError("transposed convolutions are not folded")  # their out channels are dim 1
    dtype = weight.dtype
    mean = bn.running_mean.double()
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(mean)
    scale = batchnorm_scale(bn)
    bias = layer.bias.double() if layer.bias is not None else torch.zeros_like(mean)
    shape = (-1,) + (1,) * (weight.dim() - 1)
    new_weight = (weight.double() * scale.view(shape)).to(dtype)
    new_bias = ((bias - mean) * scale + beta).to(dtype)
    layer.weight = nn.Parameter(new_weight, requires_grad=weight.requires_grad)
    layer.bias = nn.Parameter(new_bias, requires_grad=weight.requires_grad)


def fold_batchnorm(model: nn.Module, inplace: bool = False, strict: bool = False) -> nn.Module:
    """Fold every BatchNorm that follows a conv or linear layer into that layer.

    Returns the model (a deep copy unless ``inplace``) in eval mode with each folded
    BatchNorm replaced by ``nn.Identity``, so module names and the structure stay as
    they were (``features.3.depthwise.conv`` is still there, ``...bn`` is an identity).
    ``strict=True`` raises ``ValueError`` if any BatchNorm is left (one that no conv
    precedes in a ``Sequential``). The number folded is stored as
    ``model.folded_batchnorms``.
    """
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    folded = 0
    for parent in list(model.modules()):
        if not isinstance(parent, nn.Sequential):
            continue
        children = list(parent.named_children())
        for (_, first), (name, second) in zip(children, children[1:], strict=False):
            if isinstance(first, LowRank):  # a factorised layer: its second half makes the output
                first = first[-1]
            if isinstance(second, _BATCHNORMS) and isinstance(first, _FOLDABLE):
                fold_into(first, second)
                setattr(parent, name, nn.Identity())
                folded += 1
    if strict:
        left = [name for name, m in model.named_modules() if isinstance(m, _BATCHNORMS)]
        if left:
            raise ValueError(f"{len(left)} BatchNorm layers could not be folded (first: {left[0]})")
    setattr(model, "folded_batchnorms", folded)  # noqa: B010 - a plain attribute, not a submodule
    return model


_ACTIVATIONS = {nn.ReLU: "relu", nn.ReLU6: "relu6"}


class FusedConvAct(nn.Module):
    """A convolution (BatchNorm already folded in) and its activation as one step.

    The activation runs in place on the convolution's output, so the block allocates one
    tensor instead of three (conv, BN and activation outputs) and makes one module call.
    ``same_pad`` is the TF "SAME" padding of an imported strided convolution.
    """

    def __init__(self, conv: nn.Conv2d, activation: str | None, same_pad: TFSamePad | None = None) -> None:
        super().__init__()
        if activation not in (None, "relu", "relu6"):
            raise ValueError(f"unknown activation {activation!r}")
        self.conv = conv
        self.activation = activation
        self.same_pad = (same_pad.kernel_size, same_pad.stride, same_pad.dilation) if same_pad else None

    def forward(self, x: Tensor) -> Tensor:
        if self.same_pad is not None:
            x = tf_same_pad(x, *self.same_pad)
        x = self.conv(x)
        if self.activation == "relu":
            return F.relu(x, inplace=True)
        if self.activation == "relu6":
            return F.hardtanh(x, 0.0, 6.0, inplace=True)
        return x

    def extra_repr(self) -> str:
        pad = f", tf_same_pad={self.same_pad}" if self.same_pad else ""
        return f"activation={self.activation}{pad}"


def _fusable(block: ConvBNAct) -> tuple[nn.Conv2d, str | None, TFSamePad | None] | None:
    """The parts of a folded ConvBNAct, or None if it holds anything unexpected."""
    parts = dict(block.named_children())
    conv, pad, act = parts.pop("conv", None), parts.pop("pad", None), parts.pop("act", None)
    bn = parts.pop("bn", None)
    if parts or not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.Identity | None):
        return None
    if pad is not None and not isinstance(pad, TFSamePad):
        return None
    if act is None or isinstance(act, nn.Identity):
        activation = None
    elif type(act) in _ACTIVATIONS:
        activation = _ACTIVATIONS[type(act)]
    else:
        return None
    return conv, activation, pad


def fuse_conv_bn_act(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Fold the BatchNorms, then make every ``ConvBNAct`` one :class:`FusedConvAct`.

    For eager PyTorch inference. The parameter names stay (``...conv.weight``,
    ``...conv.bias``) and the output is the folded model's to float rounding.
    """
    model = fold_batchnorm(model, inplace=inplace)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, ConvBNAct):
                parts = _fusable(child)
                if parts is not None:
                    setattr(parent, name, FusedConvAct(*parts))
    return model


def _refuse_training(self: nn.Module, mode: bool = True) -> nn.Module:
    if mode:
        raise RuntimeError(
            "this model was made by lightnets.deploy.deploy() for inference only (BatchNorm folded, "
            "dropout removed); train the original model instead"
        )
    return nn.Module.train(self, False)


def deploy(model: nn.Module, channels_last: bool = False, fuse: bool = True) -> nn.Module:
    """An inference-only copy of ``model``: BatchNorm folded, Conv-BN-act fused, no dropout.

    The copy has no gradients, is in eval mode and refuses ``train()``; it keeps the
    model's interface (``forward_features``, ``num_classes``, ``pretrained_cfg`` ...).
    ``channels_last`` stores the weights in NHWC order (feed NHWC inputs too for the
    fastest oneDNN path). ``fuse=False`` only folds BatchNorm.
    """
    model = fuse_conv_bn_act(model) if fuse else fold_batchnorm(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Dropout | nn.Dropout2d):
                setattr(parent, name, nn.Identity())
    model.requires_grad_(False)
    if channels_last:
        model = to_channels_last(model)
    # Plain attributes (a bound method, a flag): setattr keeps nn.Module's typed __setattr__ out of it.
    setattr(model, "train", types.MethodType(_refuse_training, model))  # noqa: B010
    setattr(model, "deployed", True)  # noqa: B010
    return model


def is_deployed(model: nn.Module) -> bool:
    """Whether ``model`` came from :func:`deploy`."""
    return bool(getattr(model, "deployed", False))
