"""Memory-efficient inference for inverted-residual networks (MobileNetV2, Section 5).

An inverted residual block computes ``project(depthwise(expand(x)))``. Its expanded
tensor is ``t`` times wider than the block's input and output, so a plain forward needs
it (and the depthwise output beside it) whole. Everything between the two bottlenecks
is per channel: a hidden channel ``c`` needs the input and row ``c`` of the expansion
weight, its own depthwise filter, BatchNorm statistics and activation, and contributes
``W_project[:, c] * h_c`` to the output. So the hidden channels can be split into
``k`` chunks, each expanded, filtered and projected on its own and accumulated into
the output: the paper's "t-way split". The expanded tensor is never materialised; the
block needs its input, its output and one chunk, which is the analyser's "block as one
operation" bound (:func:`lightnets.cost.memory.activation_memory` with
``execution="block"``) plus ``1/k`` of the inner tensors.

:func:`memory_efficient` returns an inference module in which every such block runs
chunked: with a fixed ``k``, or with ``chunks="auto"`` in as few chunks per block as
keep it within the analyser's bound plus 10% (the early, high-resolution blocks need
many, the late ones none). Supported blocks: lightnets'
:class:`~lightnets.layers.InvertedResidual` and
:class:`~lightnets.layers.DepthwiseSeparable`, torchvision's ``InvertedResidual`` and
timm's ``InvertedResidual`` / ``DepthwiseSeparableConv`` without squeeze-excitation; in
general any block whose branch is 1x1 conv -> depthwise conv -> 1x1 conv with only
per-channel operations between. The convolution layers outside blocks (the stem, the
last 1x1 layer) apply their BatchNorm and activation in place, as the analyser
assumes. Chunks and outputs are channels-last, the layout in which oneDNN's
convolutions need no scratch copies. Parameters are shared with the original model,
not copied.

:func:`measure_peak_memory` measures, for real, the most memory a call allocates and
holds at once, from the allocation records of PyTorch's profiler.
"""

from __future__ import annotations

import copy
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeGuard

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..layers import TFSamePad

__all__ = [
    "ChunkedInvertedResidual",
    "InPlaceConvStage",
    "InvertedResidualPlan",
    "MemoryTrace",
    "UnsupportedBlock",
    "chunk_bounds",
    "measure_peak_memory",
    "memory_efficient",
    "plan_inverted_residual",
]

# Element-wise modules: they commute with any channel split, so they run on a chunk.
_ELEMENTWISE = (
    nn.Identity,
    nn.ReLU,
    nn.ReLU6,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.SiLU,
    nn.GELU,
    nn.Mish,
    nn.LeakyReLU,
    nn.ELU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Dropout,
    nn.Dropout2d,
)
# Spatial padding only (never of the channel axis); allowed just before a convolution.
_PADS = (TFSamePad, nn.ZeroPad2d, nn.ConstantPad2d)


class UnsupportedBlock(ValueError):
    """A block whose branch is not expand -> depthwise -> project with per-channel ops."""


def chunk_bounds(channels: int, chunks: int) -> list[tuple[int, int]]:
    """Split ``channels`` into ``min(chunks, channels)`` contiguous, near-equal ranges.

    ``chunk_bounds(10, 4) == [(0, 2), (2, 5), (5, 7), (7, 10)]``: the chunk count need
    not divide the width.
    """
    if chunks < 1:
        raise ValueError(f"chunks must be a positive integer, got {chunks!r}")
    k = min(chunks, channels)
    edges = [channels * i // k for i in range(k + 1)]
    return [(edges[i], edges[i + 1]) for i in range(k)]


# --------------------------------------------------------------------------- plans


def _is_plain_conv(m: nn.Module) -> TypeGuard[nn.Conv2d]:
    return (
        isinstance(m, nn.Conv2d)
        and type(m).forward is nn.Conv2d.forward  # no hidden padding (timm's Conv2dSame)
        and m.padding_mode == "zeros"
        and isinstance(m.padding, tuple)  # not the string "same"
    )


def _is_plain_norm(m: nn.Module) -> TypeGuard[nn.BatchNorm2d]:
    return (
        isinstance(m, nn.BatchNorm2d)
        and type(m).forward is nn.BatchNorm2d.forward
        and m.running_mean is not None
        and m.running_var is not None
    )


def _leaves(module: nn.Module | None) -> list[nn.Module]:
    """The leaf modules a branch runs, in order (``Sequential`` and its subclasses,
    such as ``ConvBNAct``, fused ``ConvReLU2d`` or torchvision's ``Conv2dNormActivation``,
    run their children in order)."""
    if module is None:
        return []
    if isinstance(module, nn.Sequential):
        return [leaf for child in module for leaf in _leaves(child)]
    if isinstance(module, nn.Identity | nn.Dropout | nn.Dropout2d):
        return []  # no-ops in inference
    if type(module).__name__ == "BatchNormAct2d" and isinstance(module, nn.BatchNorm2d):
        # timm: BatchNorm then dropout then activation, in one module
        return [module, *_leaves(getattr(module, "drop", None)), *_leaves(getattr(module, "act", None))]
    return [module]


@dataclass
class ConvStage:
    """One convolution with the spatial padding before it and the per-channel
    operations (BatchNorm, activations) after it."""

    pads: list[nn.Module]
    conv: nn.Conv2d
    post: list[nn.Module]


def _stages(leaves: list[nn.Module]) -> list[ConvStage]:
    stages: list[ConvStage] = []
    pads: list[nn.Module] = []
    for leaf in leaves:
        if _is_plain_conv(leaf):
            stages.append(ConvStage(pads, leaf, []))
            pads = []
        elif isinstance(leaf, _PADS) and not (isinstance(leaf, nn.ConstantPad2d) and len(leaf.padding) > 4):
            pads.append(leaf)
        elif (
            _is_plain_norm(leaf) or isinstance(leaf, _ELEMENTWISE) or type(leaf).__name__ == "BatchNormAct2d"
        ):
            if pads or not stages:
                raise UnsupportedBlock(f"{type(leaf).__name__} before the first convolution")
            stages[-1].post.append(leaf)
        else:
            raise UnsupportedBlock(f"{type(leaf).__name__} is not a per-channel operation")
    if pads:
        raise UnsupportedBlock("padding after the last convolution")
    return stages


def _is_pointwise(conv: nn.Conv2d) -> bool:
    return (
        conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.padding == (0, 0) and conv.groups == 1
    )


@dataclass
class InvertedResidualPlan:
    """How a block's branch splits: an optional expansion, a depthwise stage and a
    projection; ``hidden`` channels between them; whether the input is added back."""

    expand: ConvStage | None
    depthwise: ConvStage
    project: ConvStage
    shortcut: bool
    in_channels: int
    hidden: int
    out_channels: int


def _branch(block: nn.Module) -> tuple[list[nn.Module], bool] | None:
    """The branch's leaves and the shortcut flag of the block kinds we know, else None."""
    names = set(dict(block.named_children()))
    if {"expand", "depthwise", "project"} <= names:  # lightnets InvertedResidual
        shortcut = getattr(block, "add", None) is not None
        parts = ("expand", "depthwise", "project")
        return [leaf for name in parts for leaf in _leaves(block.get_submodule(name))], shortcut
    if {"depthwise", "pointwise"} <= names:  # lightnets DepthwiseSeparable
        return _leaves(block.get_submodule("depthwise")) + _leaves(block.get_submodule("pointwise")), False
    if "conv" in names and hasattr(block, "use_res_connect"):  # torchvision InvertedResidual
        return _leaves(block.get_submodule("conv")), bool(block.use_res_connect)
    if {"conv_pw", "conv_dw", "conv_pwl"} <= names or {"conv_dw", "conv_pw", "bn2"} <= names:
        # timm InvertedResidual / DepthwiseSeparableConv
        if getattr(block, "conv_s2d", None) is not None:
            raise UnsupportedBlock("space-to-depth stem (conv_s2d)")
        if not isinstance(getattr(block, "se", None), nn.Identity):
            raise UnsupportedBlock("squeeze-excitation needs the whole expanded tensor")
        if not isinstance(getattr(block, "aa", nn.Identity()), nn.Identity):
            raise UnsupportedBlock("anti-aliasing pool")
        order: tuple[str, ...]
        if "conv_pwl" in names:
            order = ("conv_pw", "bn1", "conv_dw", "bn2", "conv_pwl", "bn3")
        else:
            order = ("conv_dw", "bn1", "conv_pw", "bn2")
        leaves = [leaf for name in order for leaf in _leaves(getattr(block, name))]
        return leaves, bool(getattr(block, "has_skip", False))
    return None


def plan_inverted_residual(block: nn.Module) -> InvertedResidualPlan | None:
    """The chunking plan of an inverted-residual-like block, or ``None`` if ``block``
    is not one of the known block kinds.

    Raises :class:`UnsupportedBlock` (a ``ValueError``) for a known kind whose branch
    cannot be split by channels (squeeze-excitation, a grouped expansion, ...).
    """
    branch = _branch(block)
    if branch is None:
        return None
    leaves, shortcut = branch
    stages = _stages(leaves)
    if len(stages) == 3:
        expand, depthwise, project = stages
    elif len(stages) == 2:
        expand, (depthwise, project) = None, stages
    else:
        raise UnsupportedBlock(f"{type(block).__name__} has {len(stages)} convolutions, expected 2 or 3")
    dw = depthwise.conv
    hidden = dw.in_channels
    if not (dw.groups == dw.in_channels == dw.out_channels):
        raise UnsupportedBlock("the middle convolution is not depthwise")
    if expand is not None:
        if expand.pads or not _is_pointwise(expand.conv) or expand.conv.out_channels != hidden:
            raise UnsupportedBlock("the expansion is not a 1x1 convolution to the hidden width")
        in_channels = expand.conv.in_channels
    else:
        in_channels = hidden
    if project.pads or not _is_pointwise(project.conv) or project.conv.in_channels != hidden:
        raise UnsupportedBlock("the projection is not a 1x1 convolution from the hidden width")
    out_channels = project.conv.out_channels
    if shortcut and (dw.stride != (1, 1) or in_channels != out_channels):
        raise UnsupportedBlock("a shortcut needs stride 1 and equal channel counts")
    return InvertedResidualPlan(expand, depthwise, project, shortcut, in_channels, hidden, out_channels)


# ------------------------------------------------------------------------ execution

# Chunks and block outputs are channels-last (NHWC): oneDNN then convolves them in place
# of the layout they are in; given NCHW tensors it makes blocked copies of the input and
# output, padded to 16 channels, which for a chunk of a few channels are several times
# the chunk (measured: see benchmarks/memory_efficient.py).
_NHWC = torch.channels_last


def _norm_affine(norm: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """BatchNorm in inference as ``x * scale + shift`` (ATen's own CPU formulation)."""
    assert norm.running_mean is not None and norm.running_var is not None
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    return scale, shift


_Prepared = list[nn.Module | tuple[Tensor, Tensor]]


def _prepare(ops: list[nn.Module]) -> _Prepared:
    """The per-channel operations with each BatchNorm as its (scale, shift), (C, 1, 1)."""
    prepared: _Prepared = []
    for op in ops:
        if isinstance(op, nn.BatchNorm2d):
            scale, shift = _norm_affine(op)
            prepared.append((scale[:, None, None], shift[:, None, None]))
        else:
            prepared.append(op)
    return prepared


def _activate(op: nn.Module, x: Tensor) -> Tensor:
    """An element-wise module applied in place where it has an in-place form."""
    if isinstance(op, nn.ReLU):
        return x.relu_()
    if isinstance(op, nn.Hardtanh):  # ReLU6 too
        return F.hardtanh_(x, op.min_val, op.max_val)
    if isinstance(op, nn.LeakyReLU):
        return F.leaky_relu_(x, op.negative_slope)
    if isinstance(op, nn.SiLU | nn.Hardswish | nn.Hardsigmoid | nn.Mish):
        return type(op)(inplace=True)(x)
    return op(x)


def _per_channel(x: Tensor, ops: _Prepared, lo: int, hi: int) -> Tensor:
    """Apply prepared BatchNorms (channels ``lo:hi`` of their statistics) and
    element-wise modules to ``x``, which holds channels ``lo:hi``, in place."""
    for op in ops:
        if isinstance(op, tuple):
            scale, shift = op
            x = x.mul_(scale[lo:hi]).add_(shift[lo:hi])
        else:
            x = _activate(op, x)
    return x


def _fold(stage: ConvStage) -> tuple[Tensor | None, Tensor | None, _Prepared]:
    """``(scale, shift, rest)``: a BatchNorm right after the stage's convolution as a
    per-output-channel scale of its weight and a bias (the convolution's own bias
    included), and the per-channel operations left after it.

    Folding it into each chunk's slice of the weight (a few kilobytes) saves two passes
    over every chunk and is exact to float rounding, like BatchNorm folding.
    """
    conv, post = stage.conv, stage.post
    if post and isinstance(post[0], nn.BatchNorm2d):
        scale, shift = _norm_affine(post[0])
        if conv.bias is not None:
            shift = shift + conv.bias * scale
        return scale, shift, _prepare(post[1:])
    return None, conv.bias, _prepare(post)


def _slice(
    weight: Tensor, scale: Tensor | None, shift: Tensor | None, lo: int, hi: int
) -> tuple[Tensor, Tensor | None]:
    """Output channels ``lo:hi`` of a weight with its folded scale, and of its bias."""
    weight = weight[lo:hi]
    if scale is not None:
        weight = weight * scale[lo:hi].view(-1, *[1] * (weight.dim() - 1))
    return weight, shift[lo:hi] if shift is not None else None


def _empty_nhwc(like: Tensor, shape: tuple[int, ...]) -> Tensor:
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=_NHWC)


def _matrix(t: Tensor, n: int) -> Tensor:
    """Sample ``n`` of an (N, C, H, W) tensor as an (H*W, C) matrix: a view for both
    NCHW and NHWC layouts (transposed for NCHW, which BLAS reads as it is)."""
    return t[n].permute(1, 2, 0).reshape(-1, t.shape[1])


def _pointwise(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """A 1x1 convolution (``weight`` is (C_out, C_in)) as one matrix product per sample
    into a channels-last output: no backend scratch, no layout copies."""
    n, _, height, width = x.shape
    out = _empty_nhwc(x, (n, weight.shape[0], height, width))
    for i in range(n):
        if bias is None:
            torch.mm(_matrix(x, i), weight.t(), out=_matrix(out, i))
        else:
            torch.addmm(bias, _matrix(x, i), weight.t(), out=_matrix(out, i))
    return out


def _use_onednn() -> bool:
    return torch.backends.mkldnn.is_available() and bool(torch.backends.mkldnn.enabled)


def _pad_amounts(stage: ConvStage, height: int, width: int) -> tuple[int, int, int, int] | None:
    """Zero padding (top, bottom, left, right) of the stage's pads and convolution, or
    ``None`` if a pad is not zero padding."""
    conv = stage.conv
    top = bottom = left = right = 0
    for pad in stage.pads:
        if isinstance(pad, TFSamePad):
            amounts = []
            for size in (width, height):
                out = -(-size // pad.stride)
                total = max((out - 1) * pad.stride + (pad.kernel_size - 1) * pad.dilation + 1 - size, 0)
                amounts += [total // 2, total - total // 2]
        elif isinstance(pad, nn.ZeroPad2d) or (isinstance(pad, nn.ConstantPad2d) and pad.value == 0):
            amounts = list(pad.padding)
        else:
            return None
        l_, r_, t_, b_ = amounts
        if min(l_, r_, t_, b_) < 0:
            return None
        top, bottom, left, right = top + t_, bottom + b_, left + l_, right + r_
        height, width = height + t_ + b_, width + l_ + r_
    if isinstance(conv.padding, str):  # "same" / "valid": not taken by _stages
        return None
    ph, pw = conv.padding
    return top + ph, bottom + ph, left + pw, right + pw


def _tap_range(tap: int, size: int, out_size: int, before: int, stride: int, dilation: int):
    """Output positions ``[o0, o1)`` whose input ``o * stride - before + tap * dilation``
    lies inside ``[0, size)``, and the first such input position."""
    offset = tap * dilation - before
    o0 = max(0, -(offset // stride) if offset < 0 else 0)
    o1 = min(out_size, (size - 1 - offset) // stride + 1)
    return o0, o1, o0 * stride + offset


def _direct_conv(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
    pads: tuple[int, int, int, int],
    depthwise: bool,
) -> Tensor:
    """A convolution as a sum over kernel taps of shifted input views times per-channel
    weights, accumulated in place into a channels-last output.

    The fallback when oneDNN is not there (PyTorch's other CPU depthwise path splits the
    tensor per channel). Zero padding is the range of each tap, not a padded copy, so
    the only tensor this allocates is its output. ``depthwise``: one filter per channel
    (``x`` and ``weight`` hold the same channels); otherwise a dense convolution looped
    over its input channels (meant for few, as in a stem).
    """
    n, channels, height, width = x.shape
    out_channels, _, kh, kw = weight.shape
    top, bottom, left, right = pads
    out_h = (height + top + bottom - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (width + left + right - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    inputs = 1 if depthwise else channels
    # One (1, C_out, 1, 1) weight per (input channel, tap), made by two ops, not 2 per tap.
    taps = weight.permute(1, 2, 3, 0).reshape(inputs * kh * kw, 1, out_channels, 1, 1).unbind(0)
    out = _empty_nhwc(x, (n, out_channels, out_h, out_w))
    sn, sc, sh, sw = x.stride()
    on, oc, oh, ow = out.stride()
    ranges = []
    for i in range(kh):
        oy0, oy1, iy0 = _tap_range(i, height, out_h, top, stride[0], dilation[0])
        for j in range(kw):
            ox0, ox1, ix0 = _tap_range(j, width, out_w, left, stride[1], dilation[1])
            if oy1 > oy0 and ox1 > ox0:
                full = (oy0, oy1, ox0, ox1) == (0, out_h, 0, out_w)
                ranges.append((not full, i, j, oy0, oy1, iy0, ox0, ox1, ix0))
    ranges.sort()  # a tap that covers the whole output first: it initialises ``out``
    started = not ranges or ranges[0][0]
    if started:
        out.zero_()
    for _, i, j, oy0, oy1, iy0, ox0, ox1, ix0 in ranges:
        size = (n, out_channels, oy1 - oy0, ox1 - ox0)
        target = out.as_strided(size, (on, oc, oh, ow), oy0 * oh + ox0 * ow)
        for c in range(inputs):
            view = x.as_strided(
                (n, channels if depthwise else 1, oy1 - oy0, ox1 - ox0),
                (sn, sc, sh * stride[0], sw * stride[1]),
                x.storage_offset() + c * sc + iy0 * sh + ix0 * sw,
            )
            tap = taps[(c * kh + i) * kw + j]
            if started:
                target.addcmul_(view, tap)
            else:
                torch.mul(view, tap, out=target)
                started = True
    if bias is not None:
        out.add_(bias[:, None, None])
    return out


def _spatial_conv(
    stage: ConvStage, x: Tensor, weight: Tensor, bias: Tensor | None, depthwise: bool
) -> Tensor:
    """A k x k convolution of ``stage`` with ``weight`` and ``bias`` (for a depthwise
    chunk: the chunk's filters, ``x`` holding the same channels), channels-last."""
    conv = stage.conv
    groups = weight.shape[0] if depthwise else conv.groups
    # One channel: NCHW and NHWC are the same memory, PyTorch picks NCHW and oneDNN then
    # pads its blocked copies to 16 channels; the direct form allocates only the output.
    single = depthwise and weight.shape[0] == 1
    if (single or not _use_onednn()) and (depthwise or groups == 1):
        pads = _pad_amounts(stage, x.shape[-2], x.shape[-1])
        if pads is not None:
            return _direct_conv(x, weight, bias, conv.stride, conv.dilation, pads, depthwise)
    x = x.contiguous(memory_format=_NHWC)
    for pad in stage.pads:
        x = pad(x).contiguous(memory_format=_NHWC)
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, groups)


class ChunkedInvertedResidual(nn.Module):
    """An inverted residual block run in ``chunks`` slices of its hidden channels.

    Or, decided per call from the input's size: given ``chunk_bytes``, in as many as
    keep one slice of the expanded tensor within that many bytes; given
    ``budget_bytes`` (which ``memory_efficient(..., chunks="auto")`` sets), in as few as
    keep the block's input, output and one chunk within that many bytes.

    Holds the original block's children under their original names (so parameters
    are shared and ``state_dict`` keys are unchanged) and computes the same function
    without ever materialising the expanded tensor: for each slice of hidden channels,
    expand (a matrix product with those rows of the 1x1 weight), activation in place,
    depthwise conv, activation in place, then a matrix product with those columns of
    the projection weight accumulated into the output. Each BatchNorm is folded into
    the slice of the weights it follows (per channel, so exact to float rounding); the
    projection's activation (if any) and the shortcut are applied once, in place, to
    the output. The output is channels-last. Inference only.
    """

    def __init__(
        self,
        block: nn.Module,
        chunks: int = 8,
        chunk_bytes: int | None = None,
        budget_bytes: int | None = None,
    ) -> None:
        super().__init__()
        plan = plan_inverted_residual(block)
        if plan is None:
            raise UnsupportedBlock(f"{type(block).__name__} is not an inverted residual block")
        chunk_bounds(plan.hidden, chunks)  # validates chunks
        _check_chunk_bytes(chunk_bytes)
        _check_chunk_bytes(budget_bytes)
        self.chunk_bytes = chunk_bytes
        self.budget_bytes = budget_bytes
        for name, child in block.named_children():
            self.add_module(name, child)
        self.plan = plan
        self.chunks = chunks
        self.block_type = type(block).__name__
        self.in_channels = plan.in_channels
        self.out_channels = plan.out_channels
        self.hidden_channels = plan.hidden
        self.stride = plan.depthwise.conv.stride[0]
        self.use_shortcut = plan.shortcut

    def extra_repr(self) -> str:
        p = self.plan
        return (
            f"{self.block_type}: {p.in_channels} -> {p.hidden} -> {p.out_channels}, "
            f"stride={self.stride}, shortcut={p.shortcut}, "
            + (
                f"budget_bytes={self.budget_bytes}"
                if self.budget_bytes
                else f"chunk_bytes={self.chunk_bytes}"
                if self.chunk_bytes
                else f"chunks={self.chunks}"
            )
        )

    def chunk_count(self, x: Tensor) -> int:
        """How many slices this block's hidden channels are split into for input ``x``."""
        n, _, height, width = x.shape
        size = x.element_size()
        if self.budget_bytes is not None:
            # Held throughout: the input and the output. Per hidden channel of a chunk: its
            # expanded slice (or copied input slice), any padded copy, its filtered slice.
            out_h, out_w = -(-height // self.stride), -(-width // self.stride)
            held = x.numel() * size + n * self.out_channels * out_h * out_w * size
            padded = (height + 2) * (width + 2) if self.plan.depthwise.pads else 0
            per_channel = n * (height * width + padded + out_h * out_w) * size
            widest = (self.budget_bytes - held) // per_channel  # channels one chunk may have
            return -(-self.hidden_channels // max(1, widest))
        if self.chunk_bytes is not None:
            expanded = n * self.hidden_channels * height * width * size
            return max(1, -(-expanded // self.chunk_bytes))
        return self.chunks

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            raise RuntimeError("ChunkedInvertedResidual is inference-only: call .eval() first")
        with torch.no_grad():
            return self._forward(x)

    def _forward(self, x: Tensor) -> Tensor:
        p = self.plan
        if p.expand is not None:
            expand_weight = p.expand.conv.weight.flatten(1)  # (hidden, C_in): a view
            expand_scale, expand_shift, expand_post = _fold(p.expand)
        dw_scale, dw_shift, dw_post = _fold(p.depthwise)
        project = p.project.conv.weight.flatten(1)  # (C_out, hidden): a view
        out_scale, out_shift, out_post = _fold(p.project)
        out: Tensor | None = None
        for lo, hi in chunk_bounds(p.hidden, self.chunk_count(x)):
            if p.expand is not None:
                weight, bias = _slice(expand_weight, expand_scale, expand_shift, lo, hi)
                h = _pointwise(x, weight, bias)
                h = _per_channel(h, expand_post, lo, hi)
            else:
                h = x[:, lo:hi]
            weight, bias = _slice(p.depthwise.conv.weight, dw_scale, dw_shift, lo, hi)
            h = _spatial_conv(p.depthwise, h, weight, bias, depthwise=True)
            h = _per_channel(h, dw_post, lo, hi)
            weight = project[:, lo:hi]
            if out_scale is not None:
                weight = weight * out_scale[:, None]
            if out is None:  # the first chunk writes the output (and its bias), the rest add
                out = _empty_nhwc(h, (h.shape[0], p.out_channels, *h.shape[2:]))
                for i in range(h.shape[0]):
                    if out_shift is None:
                        torch.mm(_matrix(h, i), weight.t(), out=_matrix(out, i))
                    else:
                        torch.addmm(out_shift, _matrix(h, i), weight.t(), out=_matrix(out, i))
            else:
                for i in range(h.shape[0]):
                    _matrix(out, i).addmm_(_matrix(h, i), weight.t())
            del h  # free the chunk before the next one is made
        assert out is not None
        out = _per_channel(out, out_post, 0, p.out_channels)
        if p.shortcut:
            out.add_(x)
        return out


class InPlaceConvStage(nn.Sequential):
    """A ``Sequential`` of padding, one convolution, BatchNorm and activations (a
    ``ConvBNAct`` outside the blocks: the stem, the last 1x1 layer) with BatchNorm and
    activation applied in place on a channels-last output.

    A plain forward holds the convolution's output and BatchNorm's copy of it at once,
    and oneDNN adds a blocked copy of the output for an NCHW tensor; here only the
    input and the output exist. Same children, same names, same parameters.
    """

    def __init__(self, layer: nn.Sequential) -> None:
        stages = _stages(_leaves(layer))
        if len(stages) != 1:
            raise UnsupportedBlock(f"expected one convolution, found {len(stages)}")
        super().__init__(OrderedDict(layer.named_children()))
        self.stage = stages[0]

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            raise RuntimeError("InPlaceConvStage is inference-only: call .eval() first")
        with torch.no_grad():
            conv = self.stage.conv
            if _is_pointwise(conv) and not self.stage.pads:
                y = _pointwise(x, conv.weight.flatten(1), conv.bias)
            else:
                depthwise = conv.groups == conv.in_channels == conv.out_channels > 1
                y = _spatial_conv(self.stage, x, conv.weight, conv.bias, depthwise)
            return _per_channel(y, _prepare(self.stage.post), 0, conv.out_channels)


def _conv_stage(module: nn.Module) -> TypeGuard[nn.Sequential]:
    if not isinstance(module, nn.Sequential):
        return False
    try:
        stages = _stages(_leaves(module))
    except UnsupportedBlock:
        return False
    return len(stages) == 1


def memory_efficient(
    model: nn.Module,
    chunks: int | str = 8,
    chunk_bytes: int | None = None,
    inplace_convs: bool = True,
    strict: bool = False,
    margin: float = 0.1,
) -> nn.Module:
    """An inference copy of ``model`` whose inverted residual blocks run in ``chunks``
    slices of their hidden channels (MobileNetV2's Section 5: the t-way split).

    ``chunks="auto"``: before a forward on an input of a new size, the analyser's
    "block as one operation" bound for that size
    (:func:`~lightnets.cost.memory.activation_memory`) plus ``margin`` (10%) becomes
    every block's budget, and each block splits its hidden channels as little as keeps
    its input, output and one chunk within it. The large early blocks are split
    finely, the small late ones not at all: the peak stays near the bound and the
    time cost of chunking is paid only where it buys memory. ``chunk_bytes`` instead
    caps one slice of each block's expanded tensor at that many bytes.

    The copy shares every parameter and buffer with ``model`` (only the module tree
    is new); it is in eval mode and computes the same outputs (to float rounding).
    ``inplace_convs`` also runs each Conv-BN-activation layer outside the blocks (the
    stem, the last 1x1 layer) with BatchNorm and activation in place, as the
    analyser's bound assumes. ``strict`` raises when a block of a known kind cannot be
    chunked (e.g. it has squeeze-excitation); otherwise such a block runs as it is,
    with a warning. Raises ``ValueError`` if the model has no block to chunk.
    """
    auto = chunks == "auto"
    if auto:
        if not margin >= 0:
            raise ValueError(f"margin must be >= 0, got {margin!r}")
        chunks = 8  # until the first forward sets the budgets
    if not isinstance(chunks, int):
        raise ValueError(f"chunks must be a positive integer or 'auto', got {chunks!r}")
    chunk_bounds(1, chunks)  # validates chunks
    _check_chunk_bytes(chunk_bytes)
    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
    new = copy.deepcopy(model, memo=shared)
    replaced = _replace(new, (chunks, chunk_bytes), inplace_convs, strict)
    if replaced == 0:
        raise ValueError(f"{type(model).__name__} has no inverted residual block to run chunked")
    if auto:
        new.register_forward_pre_hook(_AutoBudget(model, margin))
    return new.eval()


class _AutoBudget:
    """Forward pre-hook of ``memory_efficient(..., chunks="auto")``: per input size,
    the analyser's block bound (of the original model, which shares the weights) plus
    a margin becomes the budget of every chunked block."""

    def __init__(self, original: nn.Module, margin: float) -> None:
        self.original = original
        self.margin = margin
        self.key: tuple | None = None

    def __call__(self, module: nn.Module, args: tuple) -> None:
        x = args[0]
        key = (tuple(x.shape), x.dtype)
        if key == self.key:
            return
        from ..cost.memory import activation_memory

        try:
            report = activation_memory(self.original, tuple(x.shape[1:]), "block", x.element_size())
            budget = int(report.peak_bytes * x.shape[0] * (1 + self.margin))
        except ValueError as error:  # not traceable: keep the fixed count
            warnings.warn(f"chunks='auto' needs the analyser ({error}); using 8 chunks", stacklevel=2)
            budget = None
        for block in module.modules():
            if isinstance(block, ChunkedInvertedResidual):
                block.budget_bytes = budget
        self.key = key


def _check_chunk_bytes(chunk_bytes: int | None) -> None:
    if chunk_bytes is not None and (not isinstance(chunk_bytes, int) or chunk_bytes < 1):
        raise ValueError(f"chunk_bytes must be a positive integer or None, got {chunk_bytes!r}")


def _replace(module: nn.Module, chunks: tuple[int, int | None], inplace_convs: bool, strict: bool) -> int:
    count = 0
    for name, child in module.named_children():
        try:
            plan = plan_inverted_residual(child)
        except UnsupportedBlock as error:
            if strict:
                raise
            warnings.warn(f"{name} ({type(child).__name__}) runs unchunked: {error}", stacklevel=3)
            plan = None
            count += _replace(child, chunks, False, strict)
            continue
        if plan is not None:
            setattr(module, name, ChunkedInvertedResidual(child, *chunks))
            count += 1
        elif inplace_convs and _conv_stage(child):
            setattr(module, name, InPlaceConvStage(child))
        else:
            count += _replace(child, chunks, inplace_convs, strict)
    return count


# ---------------------------------------------------------------------- measurement


@dataclass
class MemoryTrace:
    """What one call allocated through PyTorch's CPU allocator.

    ``peak_bytes``: the most bytes allocated during the call and live at the same
    moment; memory that existed before the call (the input, the parameters) is not
    counted. ``end_bytes``: allocated during the call and still live at its end (the
    output). ``allocations``: how many allocations the call made.
    """

    peak_bytes: int
    end_bytes: int
    allocations: int
    timeline: list[int]  # live bytes after each allocation or free, in order


def measure_peak_memory(fn: Callable[[], object]) -> MemoryTrace:
    """Run ``fn()`` once under PyTorch's profiler with memory recording and return the
    peak of the bytes it allocated and still held, from the allocator's own records.

    Every CPU tensor allocation goes through c10's CPU allocator, which, while the
    profiler records memory, reports each allocation and free with its size and time,
    including the scratch tensors kernels make for themselves (oneDNN's reorders, the
    im2col buffer of a convolution) that a tracker at the operator level would miss.
    The running sum of those records, in time order, is the live memory the call
    added; its maximum is the peak. Memory held before the call (inputs, weights) is
    outside the sum, for every function measured the same way. Buffers that libraries
    allocate behind PyTorch's back (MKL's GEMM packing) are not seen. Measure with one
    intra-op thread (``torch.set_num_threads(1)``), after a warm-up call, for a
    deterministic figure; the call runs slower under the profiler, so do not time it.
    """
    # The autograd profiler that ``torch.profiler.profile`` wraps: the wrapper's first
    # start imports ``torch._inductor`` (seconds) for a CUDA-graph setting.
    from torch.autograd.profiler import profile

    with profile(use_cpu=True, profile_memory=True, use_kineto=True) as prof:
        result = fn()
    del result  # held until the recording stops: it counts in ``end_bytes``
    assert prof.kineto_results is not None
    cpu = torch._C._autograd.DeviceType.CPU
    events = [e for e in prof.kineto_results.events() if e.name() == "[memory]" and e.device_type() == cpu]
    events.sort(key=lambda e: e.start_ns())
    live = peak = allocations = 0
    timeline: list[int] = []
    for event in events:
        size = int(event.nbytes())
        live += size
        allocations += size > 0
        peak = max(peak, live)
        timeline.append(live)
    return MemoryTrace(peak, live, allocations, timeline)
