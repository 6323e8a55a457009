"""The building blocks of the four families, each written once.

Every block is made of plain ``nn.Conv2d`` / ``nn.BatchNorm2d`` / activation modules so
that the cost analyser, BatchNorm folding, quantisation and ONNX export see ordinary
layers. Residual additions go through :class:`Add`, a module of its own, so that a
quantisation pass can swap it for a quantised add without touching the block.

The blocks with an inner tensor a dense head may want (MobileNetV2's expansion,
ShuffleNet's bottleneck, SqueezeNet's squeeze, MobileNet v1's depthwise output) name it:
``inner_name`` is the child that computes it, ``inner_channels`` its channels,
``inner_stride`` its stride relative to the block's input (1: taken before the block
downsamples), and ``forward_inner(x)`` returns ``(output, inner tensor)`` in one pass.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol, TypeGuard, TypeVar

import torch
from torch import Tensor, nn

__all__ = [
    "PADDINGS",
    "Add",
    "ChannelShuffle",
    "ConvBNAct",
    "DepthwiseSeparable",
    "Fire",
    "InnerTensorBlock",
    "InvertedResidual",
    "ShuffleUnit",
    "TFSamePad",
    "channel_shuffle",
    "has_inner_tensor",
    "make_activation",
    "make_divisible",
    "to_channels_last",
]

ModuleT = TypeVar("ModuleT", bound=nn.Module)


class InnerTensorBlock(Protocol):
    """A block that names its inner tensor (see the module docstring)."""

    inner_name: str
    inner_channels: int
    inner_stride: int

    def forward_inner(self, x: Tensor) -> tuple[Tensor, Tensor]: ...


def has_inner_tensor(block: object) -> TypeGuard[InnerTensorBlock]:
    """Whether ``block`` can give its inner tensor (it has ``forward_inner``)."""
    return hasattr(block, "forward_inner")


def make_divisible(
    value: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9
) -> int:
    """Round a scaled channel count to the nearest multiple of ``divisor``.

    This is the rounding of the official MobileNet releases (TF-slim's
    ``_make_divisible``): the result is never below ``min_value`` (default ``divisor``)
    and never more than ``1 - round_limit`` (10%) below ``value``, so width 1.4 turns
    the 32-channel stem into 48, not 44.
    """
    if divisor <= 0:
        raise ValueError(f"divisor must be a positive integer, got {divisor}")
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < round_limit * value:
        rounded += divisor
    return rounded


PADDINGS = ("symmetric", "tf_same")


@torch.fx.wrap
def tf_same_pad(x: Tensor, kernel_size: int, stride: int, dilation: int = 1) -> Tensor:
    """Pad ``x`` as TensorFlow's "SAME" does: the output is ``ceil(input / stride)`` and
    any odd padding goes to the bottom and right.

    At stride 2 on an even input that is 0 pixels top/left and 1 bottom/right, where a
    symmetric ``padding=1`` would shift every window by one pixel. Wrapped for
    ``torch.fx`` because it computes the padding from the input's size.
    """
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad takes the last dimension first
        out = -(-size // stride)
        total = max((out - 1) * stride + (kernel_size - 1) * dilation + 1 - size, 0)
        pads += [total // 2, total - total // 2]
    return nn.functional.pad(x, pads)


class TFSamePad(nn.Module):
    """:func:`tf_same_pad` as a module, placed before a convolution with ``padding=0``."""

    def __init__(self, kernel_size: int, stride: int, dilation: int = 1) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.dilation = kernel_size, stride, dilation

    def forward(self, x: Tensor) -> Tensor:
        return tf_same_pad(x, self.kernel_size, self.stride, self.dilation)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


def to_channels_last(module: ModuleT) -> ModuleT:
    """``module`` with its weights stored in NHWC order (in place, as ``Module.to``)."""
    # nn.Module.to takes memory_format, but the overloads of its stub do not say so.
    return module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]


def make_activation(name: str | None) -> nn.Module:
    """An activation module by name: ``relu``, ``relu6`` or ``None`` (linear)."""
    if name is None:
        return nn.Identity()
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "relu6":
        return nn.ReLU6(inplace=True)
    raise ValueError(f"unknown activation {name!r}; expected 'relu', 'relu6' or None")


class ConvBNAct(nn.Sequential):
    """Convolution, then BatchNorm, then an activation: the unit every family uses.

    It is a ``Sequential`` with the children ``conv``, ``bn`` and ``act`` so that
    ``torch.ao.quantization.fuse_modules`` and BatchNorm folding find them by name.
    ``norm=False`` drops the BatchNorm and gives the convolution a bias (SqueezeNet,
    AlexNet and VGG have no BatchNorm). ``padding="tf_same"`` pads as TensorFlow does,
    which weights trained there need (a ``pad`` child before ``conv`` where it differs
    from the symmetric padding: strided convolutions).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int = 1,
        groups: int = 1,
        act: str | None = "relu",
        norm: bool = True,
        padding: int | tuple[int, int] | str | None = None,
        dilation: int = 1,
    ) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        if padding == "tf_same" and stride > 1:
            if not isinstance(kernel_size, int):
                raise ValueError(
                    f"padding='tf_same' at stride {stride} needs a square kernel, got {kernel_size}"
                )
            layers["pad"] = TFSamePad(kernel_size, stride, dilation)
            padding = 0
        elif padding in (None, "symmetric", "tf_same"):  # at stride 1 "SAME" is symmetric
            if isinstance(kernel_size, int):
                padding = dilation * (kernel_size - 1) // 2
            else:
                padding = (dilation * (kernel_size[0] - 1) // 2, dilation * (kernel_size[1] - 1) // 2)
        layers["conv"] = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=not norm,
        )
        if norm:
            layers["bn"] = nn.BatchNorm2d(out_channels)
        if act is not None:
            layers["act"] = make_activation(act)
        super().__init__(layers)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride


class Add(nn.Module):
    """Element-wise sum of a residual branch and its shortcut.

    A module rather than ``a + b`` so that quantisation can replace it
    (``torch.ao.nn.quantized.FloatFunctional``) and the cost analyser sees it.
    """

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return a + b


class DepthwiseSeparable(nn.Module):
    """MobileNet v1's layer: 3x3 depthwise conv, then 1x1 pointwise conv.

    Each is followed by BatchNorm and ReLU (MobileNet v1, Figure 3). Its cost is
    ``D_K^2*M*D_F^2 + M*N*D_F^2`` multiply-adds against ``D_K^2*M*N*D_F^2`` for the
    full convolution it replaces.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        act: str = "relu",
        padding: str = "symmetric",
    ) -> None:
        super().__init__()
        self.depthwise = ConvBNAct(
            in_channels, in_channels, 3, stride, groups=in_channels, act=act, padding=padding
        )
        self.pointwise = ConvBNAct(in_channels, out_channels, 1, act=act)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        # The inner tensor: the depthwise output, after the stride.
        self.inner_name = "depthwise"
        self.inner_channels = in_channels
        self.inner_stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))

    def forward_inner(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The output and the depthwise output."""
        inner = self.depthwise(x)
        return self.pointwise(inner), inner


class InvertedResidual(nn.Module):
    """MobileNetV2's bottleneck (its Table 1): expand, filter, project linearly.

    1x1 expansion to ``t*k`` channels with ReLU6 (skipped when ``t == 1``), 3x3 depthwise
    at stride ``s`` with ReLU6, then a *linear* 1x1 projection to ``k'`` channels: no
    activation, because a ReLU in the low-dimensional bottleneck destroys information
    (the paper's Section 3.2). The shortcut joins the bottlenecks when the stride is 1
    and the channel counts match. ``hidden_channels`` is given by the caller, who owns
    the rounding rule. ``project_act`` puts an activation after the projection instead,
    the non-linear bottleneck of the paper's ablation (Figure 6a); ``shortcut=False`` drops the
    shortcut, the residual-free network of Figure 6b.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        hidden_channels: int,
        act: str = "relu6",
        padding: str = "symmetric",
        project_act: str | None = None,
        shortcut: bool = True,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"InvertedResidual stride must be 1 or 2, got {stride}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.hidden_channels = hidden_channels
        self.expand = (
            ConvBNAct(in_channels, hidden_channels, 1, act=act)
            if hidden_channels != in_channels
            else nn.Identity()
        )
        self.depthwise = ConvBNAct(
            hidden_channels, hidden_channels, 3, stride, groups=hidden_channels, act=act, padding=padding
        )
        self.project = ConvBNAct(hidden_channels, out_channels, 1, act=project_act)
        self.use_shortcut = shortcut and stride == 1 and in_channels == out_channels
        self.add = Add() if self.use_shortcut else None
        # The inner tensor: the expansion, before the stride (SSDLite's attachment point).
        self.inner_name = "expand"
        self.inner_channels = hidden_channels
        self.inner_stride = 1
        # Set once models.slimming removes inner channels: the weights then record the width.
        self.narrowed = False

    def forward(self, x: Tensor) -> Tensor:
        return self._after_expand(self.expand(x), x)

    def forward_inner(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The output and the expanded tensor (``hidden_channels`` at the input's size)."""
        hidden = self.expand(x)
        return self._after_expand(hidden, x), hidden

    def _after_expand(self, hidden: Tensor, x: Tensor) -> Tensor:
        out = self.project(self.depthwise(hidden))
        if self.add is not None:
            out = self.add(out, x)
        return out


class ExpansionShortcut(nn.Module):
    """MobileNetV2's layers regrouped to run from one expanded tensor to the next: a
    block's depthwise filter and linear projection, then the following block's expansion
    (the head's 1x1 convolution after the last block), with a shortcut joining the two
    expanded tensors when their shapes agree. The "shortcut between expansions" of the
    paper's Figure 6b, the classical residual layout of its Figure 3a: the same layers as
    the inverted residual network, the additions moved to the wide tensors. ``next_expand``
    is named so that the memory-efficient rewrite, which looks for ``expand`` first, does
    not take this for an inverted residual.
    """

    def __init__(self, depthwise: ConvBNAct, project: ConvBNAct, next_expand: nn.Module) -> None:
        super().__init__()
        self.depthwise = depthwise
        self.project = project
        self.next_expand = next_expand
        # An expansion is an Identity where t = 1: the projection's channels pass through.
        first, last = depthwise.conv, (next_expand if isinstance(next_expand, ConvBNAct) else project).conv
        assert isinstance(first, nn.Conv2d) and isinstance(last, nn.Conv2d)
        self.in_channels = first.in_channels
        self.out_channels = last.out_channels
        self.stride = first.stride[0]
        self.add = Add() if self.stride == 1 and self.in_channels == self.out_channels else None

    def forward(self, x: Tensor) -> Tensor:
        out = self.next_expand(self.project(self.depthwise(x)))
        return self.add(out, x) if self.add is not None else out


class Fire(nn.Module):
    """SqueezeNet's Fire module: squeeze with 1x1 filters, expand with 1x1 and 3x3.

    The two expand outputs are concatenated (``e1x1 + e3x3`` channels; either may be 0,
    the ends of the paper's pct3x3 sweep, but not both). An optional
    bypass adds the module's input to its output: ``"simple"`` is an identity (needs
    equal channel counts), ``"complex"`` a 1x1 convolution (the paper's Section 6).
    """

    def __init__(
        self,
        in_channels: int,
        squeeze: int,
        expand1x1: int,
        expand3x3: int,
        bypass: str | None = None,
    ) -> None:
        super().__init__()
        if expand1x1 < 0 or expand3x3 < 0 or expand1x1 + expand3x3 == 0:
            raise ValueError(f"Fire needs expand filters; got e1x1={expand1x1}, e3x3={expand3x3}")
        self.in_channels = in_channels
        self.out_channels = expand1x1 + expand3x3
        self.squeeze = ConvBNAct(in_channels, squeeze, 1, norm=False)
        self.expand1x1 = ConvBNAct(squeeze, expand1x1, 1, norm=False) if expand1x1 else None
        self.expand3x3 = ConvBNAct(squeeze, expand3x3, 3, norm=False) if expand3x3 else None
        self.bypass: nn.Module | None
        if bypass is None:
            self.bypass = None
        elif bypass == "simple":
            if in_channels != self.out_channels:
                raise ValueError(
                    f"a simple bypass needs equal channel counts, got {in_channels} in and "
                    f"{self.out_channels} out; use bypass='complex'"
                )
            self.bypass = nn.Identity()
        elif bypass == "complex":
            self.bypass = ConvBNAct(in_channels, self.out_channels, 1, act=None, norm=False)
        else:
            raise ValueError(f"unknown bypass {bypass!r}; expected None, 'simple' or 'complex'")
        self.add = Add() if self.bypass is not None else None
        # The inner tensor: the squeeze output.
        self.inner_name = "squeeze"
        self.inner_channels = squeeze
        self.inner_stride = 1
        # Set once models.slimming removes inner channels: the weights then record the width.
        self.narrowed = False

    def forward(self, x: Tensor) -> Tensor:
        return self._after_squeeze(self.squeeze(x), x)

    def forward_inner(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The output and the squeeze output."""
        s = self.squeeze(x)
        return self._after_squeeze(s, x), s

    def _after_squeeze(self, s: Tensor, x: Tensor) -> Tensor:
        expands = [expand(s) for expand in (self.expand1x1, self.expand3x3) if expand is not None]
        out = torch.cat(expands, dim=1) if len(expands) > 1 else expands[0]
        if self.bypass is not None and self.add is not None:
            out = self.add(out, self.bypass(x))
        return out


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """ShuffleNet's channel shuffle: (N, g*n, H, W) -> view (N, g, n, H, W) -> transpose.

    The batch and spatial sizes are taken from the tensor with ``flatten`` / ``unflatten``
    rather than baked in, so an ONNX export keeps a dynamic batch; only the channel
    split, known when the model is built, is a constant.
    """
    channels = x.shape[1]
    x = x.unflatten(1, (groups, channels // groups))
    return x.transpose(1, 2).flatten(1, 2)


class ChannelShuffle(nn.Module):
    """:func:`channel_shuffle` as a module, so the graph and the analyser show it."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: Tensor) -> Tensor:
        return channel_shuffle(x, self.groups)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class ShuffleUnit(nn.Module):
    """ShuffleNet v1's unit (its Figure 2 b and c).

    1x1 group conv + BN + ReLU, channel shuffle, 3x3 depthwise conv + BN (no ReLU: the
    paper found it hurts), 1x1 group conv + BN. At stride 1 the input is added back; at
    stride 2 a 3x3 average pool of the input is concatenated, so the residual branch
    only produces ``out - in`` channels. ReLU follows the join.

    ``first_groups`` is the group count of the first 1x1 conv: the first unit of stage 2
    uses 1 because its input has only 24 channels. ``shuffle=False`` gives the paper's
    ablation without channel shuffle.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        groups: int,
        bottleneck_channels: int,
        first_groups: int | None = None,
        shuffle: bool = True,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"ShuffleUnit stride must be 1 or 2, got {stride}")
        first_groups = groups if first_groups is None else first_groups
        branch_out = out_channels - in_channels if stride == 2 else out_channels
        if stride == 1 and in_channels != out_channels:
            raise ValueError(
                f"a stride-1 ShuffleUnit adds its input back, so in and out channels must "
                f"match; got {in_channels} and {out_channels}"
            )
        for name, channels, g in (
            ("input", in_channels, first_groups),
            ("bottleneck", bottleneck_channels, first_groups),
            ("bottleneck", bottleneck_channels, groups),
            ("branch output", branch_out, groups),
        ):
            if channels <= 0 or channels % g:
                raise ValueError(
                    f"ShuffleUnit {name} channels ({channels}) must be a positive multiple of groups={g}"
                )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.groups = groups
        self.compress = ConvBNAct(in_channels, bottleneck_channels, 1, groups=first_groups)
        self.shuffle = ChannelShuffle(groups) if shuffle and groups > 1 else nn.Identity()
        self.depthwise = ConvBNAct(
            bottleneck_channels,
            bottleneck_channels,
            3,
            stride,
            groups=bottleneck_channels,
            act=None,
        )
        self.expand = ConvBNAct(bottleneck_channels, branch_out, 1, groups=groups, act=None)
        if stride == 2:
            self.shortcut_pool: nn.Module | None = nn.AvgPool2d(3, stride=2, padding=1)
            self.add = None
        else:
            self.shortcut_pool = None
            self.add = Add()
        self.act = nn.ReLU(inplace=True)
        # The inner tensor: the bottleneck after the first 1x1 conv, before the stride.
        self.inner_name = "compress"
        self.inner_channels = bottleneck_channels
        self.inner_stride = 1

    def forward(self, x: Tensor) -> Tensor:
        return self._after_compress(self.compress(x), x)

    def forward_inner(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The output and the bottleneck (the first 1x1 group conv's output)."""
        bottleneck = self.compress(x)
        return self._after_compress(bottleneck, x), bottleneck

    def _after_compress(self, bottleneck: Tensor, x: Tensor) -> Tensor:
        branch = self.expand(self.depthwise(self.shuffle(bottleneck)))
        if self.shortcut_pool is not None:
            out = torch.cat([self.shortcut_pool(x), branch], dim=1)
        else:
            assert self.add is not None
            out = self.add(branch, x)
        return self.act(out)
