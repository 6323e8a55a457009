"""The one interface every lightnets model has, and the heads that end them.

A model is ``features`` (an ``nn.Sequential`` whose every entry has a known output
stride and channel count, listed in ``layer_info``) followed by a ``head``. That is
enough for classification (``forward``), for transfer learning (``forward_features``,
``forward_head(pre_logits=True)``, ``reset_classifier``) and for dense heads that need
feature maps at several strides (``feature_info``, ``forward_intermediates``, as in
timm).

Feature levels
--------------
``feature_info`` has one entry, a *level*, per output stride: the last map at that
stride (for MobileNetV2 at strides 2, 4, 8, 16 and 32: ``features.1``, ``.3``, ``.6``,
``.13`` and ``.18``). ``forward_intermediates(x, indices=...)`` returns the maps of
the chosen levels.

``model.feature_location`` chooses which tensor each level gives:

* ``"output"`` (default): the level's last map, as above;
* ``"expansion"``: the inner tensor of a block at the level's stride (timm's
  ``feature_location="expansion"``). First choice is the block that leaves the level,
  taken before its stride: for MobileNetV2 the 1x1 expansion of the first block at the
  next stride, so the stride-16 level is ``features.14.expand`` with 576 channels,
  where SSDLite attaches its first layer (the paper's "expansion of layer 15"); for
  ShuffleNet the bottleneck (first 1x1 group conv) of the next stage's first unit.
  Where that block has no inner tensor at the level's stride (a pool, a strided
  depthwise conv) or there is none (the last level), the level's own last block gives
  its inner tensor if it has one at that stride: SqueezeNet's Fire gives its squeeze
  output, MobileNet v1's separable layer its depthwise output. Levels with neither
  (the stems, MobileNetV2's last 1x1 conv to 1280, the reference models) keep their
  output, and their ``FeatureInfo.location`` says ``"output"``.

The blocks name their inner tensors themselves (``inner_name``, ``inner_channels``,
``inner_stride``, ``forward_inner`` in :mod:`lightnets.layers`), so the rule lives here
once and every family follows it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol

from torch import Tensor, nn

from ..layers import ConvBNAct, has_inner_tensor

FEATURE_LOCATIONS = ("output", "expansion")
OUTPUT_FORMATS = ("NCHW", "NHWC")


@dataclass(frozen=True)
class FeatureInfo:
    """One feature map: where it comes from, its channels and its total stride.

    ``index`` is the entry of ``features`` that computes it and ``module`` the dotted
    name of the module whose output it is (``features.14.expand`` for an inner
    tensor); ``location`` is ``"output"`` (the entry's output) or ``"expansion"`` (the
    entry's inner tensor). Read as attributes or, as timm's dicts, by key:
    ``info["num_chs"]``, ``info.get("reduction")``, ``dict(info)``.
    """

    index: int
    num_chs: int
    reduction: int
    module: str
    location: str = "output"

    def keys(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self))

    def __getitem__(self, key: str) -> Any:
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self.keys() else default


class FeatureInfoList(list):
    """A list of :class:`FeatureInfo` with timm's ``FeatureInfo`` accessors."""

    def _pick(self, key: str, idx: int | Sequence[int] | None) -> Any:
        if idx is None:
            return [info[key] for info in self]
        if isinstance(idx, int):
            return self[idx][key]
        return [self[i][key] for i in idx]

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        """Channel counts (of level ``idx``, of several, or of all)."""
        return self._pick("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        """Total strides (of level ``idx``, of several, or of all)."""
        return self._pick("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        """Module names (of level ``idx``, of several, or of all)."""
        return self._pick("module", idx)


class FeatureStack:
    """Collects the entries of ``features`` while tracking stride and channels."""

    def __init__(self, in_channels: int = 3) -> None:
        self.layers: list[nn.Module] = []
        self.info: list[FeatureInfo] = []
        self.channels = in_channels
        self.reduction = 1

    def add(self, layer: nn.Module, out_channels: int, stride: int = 1) -> None:
        self.reduction *= stride
        self.channels = out_channels
        index = len(self.layers)
        self.layers.append(layer)
        self.info.append(FeatureInfo(index, out_channels, self.reduction, f"features.{index}"))

    def build(self) -> nn.Sequential:
        return nn.Sequential(*self.layers)


def _inner(
    layers: Sequence[nn.Module] | nn.Sequential, entry: FeatureInfo, reduction: int, stride: int
) -> FeatureInfo | None:
    """The inner tensor of ``layers[entry.index]`` if it lies at ``reduction``.

    ``stride`` is the block's own stride: its inner tensor is at the level's stride
    when taken before that stride (``inner_stride == 1``) for the block that leaves the
    level, or after it (``inner_stride == stride``) for the level's own last block.
    """
    block = layers[entry.index]
    if getattr(block, "inner_stride", None) != stride or not has_inner_tensor(block):
        return None
    module = f"{entry.module}.{block.inner_name}"
    return FeatureInfo(entry.index, block.inner_channels, reduction, module, "expansion")


def feature_levels(
    layers: Sequence[nn.Module] | nn.Sequential, info: Sequence[FeatureInfo], location: str
) -> FeatureInfoList:
    """One :class:`FeatureInfo` per output stride of ``layers`` at ``location``.

    ``info`` describes each entry of ``layers`` (``FeatureStack.info``); see the module
    docstring for what each location gives.
    """
    if location not in FEATURE_LOCATIONS:
        raise ValueError(f"unknown feature location {location!r}; expected one of {FEATURE_LOCATIONS}")
    last: dict[int, int] = {}
    for entry in info:
        last[entry.reduction] = entry.index
    levels = FeatureInfoList()
    for reduction, index in last.items():
        level = info[index]
        if location == "expansion":
            leaving = info[index + 1] if index + 1 < len(info) else None
            own_stride = reduction // (info[index - 1].reduction if index else 1)
            level = (
                (_inner(layers, leaving, reduction, 1) if leaving is not None else None)
                or _inner(layers, level, reduction, own_stride)
                or level
            )
        levels.append(level)
    return levels


def feature_take_indices(
    num_levels: int, indices: int | Sequence[int] | None = None
) -> tuple[list[int], int]:
    """timm's level selection: ``None`` all, an int ``n`` the last ``n``, a sequence those
    (negative ones count from the end). Returns the indices and the largest."""
    if indices is None:
        indices = num_levels
    if isinstance(indices, int):
        if not 0 < indices <= num_levels:
            raise ValueError(f"last-n indices={indices} is out of range: this model has {num_levels} levels")
        take = list(range(num_levels - indices, num_levels))
    else:
        take = []
        for i in indices:
            absolute = num_levels + i if i < 0 else i
            if not 0 <= absolute < num_levels:
                raise ValueError(f"feature level {i} is out of range: this model has {num_levels} levels")
            take.append(absolute)
        if not take:
            raise ValueError("indices selects no feature level")
    return take, max(take)


def check_num_classes(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"num_classes must be an integer >= 0 (0: no classifier), got {value!r}")
    return value


def check_dropout(value: float) -> float:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {value!r}")
    return float(value)


class Head(Protocol):
    """What :class:`Classifier` needs of its head (:class:`ClassifierHead` and the others)."""

    num_features: int
    num_classes: int

    def reset(self, num_classes: int) -> None: ...

    def __call__(self, x: Tensor, pre_logits: bool = False) -> Tensor: ...


class LinearClassifier(nn.Module):
    """A head whose last layer is a linear classifier over ``num_features`` features."""

    num_features: int
    num_classes: int
    fc: nn.Module

    def reset(self, num_classes: int) -> None:
        """A new classifier for ``num_classes`` (0: none, the features are the output)."""
        check_num_classes(num_classes)
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()


class ClassifierHead(LinearClassifier):
    """Global average pool, dropout, fully connected layer.

    ``num_classes=0`` leaves the pooled features as the output (no classifier).
    """

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_features = in_channels
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(check_dropout(dropout))
        self.fc: nn.Module = nn.Identity()
        self.reset(num_classes)

    def forward(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.dropout(self.flatten(self.pool(x)))
        return x if pre_logits else self.fc(x)


class ConvClassifierHead(nn.Module):
    """SqueezeNet's head: dropout, 1x1 convolution to the classes, ReLU, average pool.

    The classifier is a convolution, so the class scores exist at every position before
    pooling. ``pre_logits`` returns the pooled input of that convolution.
    """

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.num_features = in_channels
        self.dropout = nn.Dropout(check_dropout(dropout))
        self.conv: nn.Module = nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.reset(num_classes)

    def reset(self, num_classes: int) -> None:
        check_num_classes(num_classes)
        self.num_classes = num_classes
        self.conv = ConvBNAct(self.num_features, num_classes, 1, norm=False) if num_classes else nn.Identity()

    def forward(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        if pre_logits:
            return self.flatten(self.pool(x))
        return self.flatten(self.pool(self.conv(self.dropout(x))))


class Classifier(nn.Module):
    """Base of every lightnets model: ``features`` then ``head``.

    Subclasses build ``features`` with a :class:`FeatureStack` and pick a head; the
    methods here are the shared interface. ``layer_info`` describes every entry of
    ``features``; ``feature_info`` the feature levels, one per output stride, at
    ``feature_location`` (see the module docstring).
    """

    def __init__(
        self,
        stack: FeatureStack,
        head: Head,
        min_input_size: int | None = None,
    ) -> None:
        super().__init__()
        self.features = stack.build()
        self.layer_info: list[FeatureInfo] = list(stack.info)
        self._levels = {loc: feature_levels(self.features, self.layer_info, loc) for loc in FEATURE_LOCATIONS}
        self._feature_location = "output"
        self.feature_info = self._levels["output"]
        self.head: Head = head
        self.total_stride = stack.reduction
        # The smallest input side the layers accept; by default one output pixel.
        self.min_input_size = min_input_size or stack.reduction

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    @property
    def num_features(self) -> int:
        return self.head.num_features

    def refresh_feature_info(self) -> None:
        """Describe the feature levels again from the layers, after they changed in place
        (narrowed inner channels, layers cut off); the location and level count stay."""
        self._levels = {loc: feature_levels(self.features, self.layer_info, loc) for loc in FEATURE_LOCATIONS}
        self.feature_info = FeatureInfoList(self._levels[self._feature_location][: len(self.feature_info)])

    @property
    def feature_location(self) -> str:
        """Which tensor each feature level gives: ``"output"`` or ``"expansion"``.

        Setting it replaces ``feature_info`` (same levels and strides, the channels of
        the new location); the modules and weights do not change.
        """
        return self._feature_location

    @feature_location.setter
    def feature_location(self, location: str) -> None:
        if location not in FEATURE_LOCATIONS:
            raise ValueError(f"unknown feature location {location!r}; expected one of {FEATURE_LOCATIONS}")
        levels = FeatureInfoList(self._levels[location][: len(self.feature_info)])
        pruned = [level.module for level in levels if level.index >= len(self.features)]
        if pruned:
            raise ValueError(f"{', '.join(pruned)} was pruned by prune_intermediate_layers")
        self._feature_location = location
        self.feature_info = levels

    def check_input_size(self, height: int, width: int) -> None:
        """Raise ``ValueError`` if an input of this size cannot pass the network."""
        smallest = min(height, width)
        if smallest < self.min_input_size:
            raise ValueError(
                f"input size {height}x{width} is too small for {type(self).__name__}: both "
                f"sides must be at least {self.min_input_size} (total stride "
                f"{self.total_stride})"
            )

    def _check_input(self, x: Tensor) -> None:
        # Plain ints only: under tracing or export the shape is symbolic and checked there.
        if isinstance(x.shape[-1], int) and isinstance(x.shape[-2], int):
            self.check_input_size(int(x.shape[-2]), int(x.shape[-1]))

    def forward_features(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return self.features(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a new one for ``num_classes`` (0: no classifier)."""
        self.head.reset(num_classes)

    def feature_strides(self) -> list[int]:
        """The output strides of the feature levels, increasing."""
        return [info.reduction for info in self.feature_info]

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """Feature maps of chosen levels of ``feature_info``, with timm's signature.

        Args:
            x: input batch, NCHW.
            indices: the levels: ``None`` all, an int ``n`` the last ``n``, a sequence
                of level indices (negative ones count from the end).
            norm: accepted for timm compatibility; these models have no final norm
                apart from ``features``, so it changes nothing.
            stop_early: stop after the last layer the chosen levels need; the final
                features are then that layer's output.
            output_fmt: ``"NCHW"`` or ``"NHWC"`` (a permuted view) for the intermediates.
            intermediates_only: return only the list of maps.

        Returns:
            ``(final features, maps)``, or only ``maps`` with ``intermediates_only``;
            the maps come in increasing level order, one per chosen level, each as
            described by ``feature_info[level]`` (at ``feature_location``).
        """
        del norm  # nothing to normalise: see the docstring
        if output_fmt not in OUTPUT_FORMATS:
            raise ValueError(f"output_fmt must be one of {OUTPUT_FORMATS}, got {output_fmt!r}")
        take, max_index = feature_take_indices(len(self.feature_info), indices)
        levels = [self.feature_info[i] for i in sorted(set(take))]
        outputs = {level.index for level in levels if level.location == "output"}
        inners = {level.index for level in levels if level.location != "output"}
        last = (
            self.feature_info[max_index].index if stop_early or intermediates_only else len(self.features) - 1
        )
        self._check_input(x)
        found: dict[tuple[int, bool], Tensor] = {}
        for index, layer in enumerate(self.features):
            if index > last:
                break
            if index in inners:
                if not has_inner_tensor(layer):
                    raise TypeError(f"features.{index} ({type(layer).__name__}) cannot give its inner tensor")
                x, found[(index, False)] = layer.forward_inner(x)
            else:
                x = layer(x)
            if index in outputs:
                found[(index, True)] = x
        maps = [found[(level.index, level.location == "output")] for level in levels]
        if output_fmt == "NHWC":
            maps = [m.permute(0, 2, 3, 1) for m in maps]
        return maps if intermediates_only else (x, maps)

    def prune_intermediate_layers(
        self,
        indices: int | Sequence[int] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """Drop the layers and levels after the last chosen level (timm's method).

        ``features`` then ends at the layer the last chosen level needs, ``feature_info``
        at that level, and ``prune_head`` replaces the head by global pooling on the new
        last layer (``num_classes`` 0). Keeping the head is refused when layers go, since
        it no longer fits. ``prune_norm`` is accepted for timm compatibility (there is no
        final norm apart from ``features``). Returns the chosen level indices.
        """
        del prune_norm
        take, max_index = feature_take_indices(len(self.feature_info), indices)
        keep = self.feature_info[max_index].index + 1
        if keep < len(self.features) and not prune_head:
            raise ValueError("the classifier head needs every layer: prune with prune_head=True")
        if keep < len(self.features):
            # Sequential.__getitem__ is hinted "Sequential | Module" for any index; a slice gives a Sequential.
            self.features = self.features[:keep]  # type: ignore[assignment]
            self.layer_info = self.layer_info[:keep]
            self.total_stride = self.layer_info[-1].reduction
        self.feature_info = FeatureInfoList(self.feature_info[: max_index + 1])
        if prune_head:  # pooling only: no parameters, so no device to match
            self.head = ClassifierHead(self.layer_info[-1].num_chs, 0)
        return take
