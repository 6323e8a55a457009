"""The one interface every lightnets model has, and the heads that end them.

A model is ``features`` (an ``nn.Sequential`` whose every entry has a known output
stride and channel count, listed in ``feature_info``) followed by a ``head``. That is
enough for classification (``forward``), for transfer learning (``forward_features``,
``forward_head(pre_logits=True)``, ``reset_classifier``) and for dense heads that need
feature maps at chosen strides (``forward_intermediates``).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from ..layers import ConvBNAct


@dataclass(frozen=True)
class FeatureInfo:
    """What leaves entry ``index`` of ``features``: its channels and total stride."""

    index: int
    num_chs: int
    reduction: int
    module: str


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


def check_num_classes(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"num_classes must be an integer >= 0 (0: no classifier), got {value!r}")
    return value


def check_dropout(value: float) -> float:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {value!r}")
    return float(value)


class ClassifierHead(nn.Module):
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

    def reset(self, num_classes: int) -> None:
        check_num_classes(num_classes)
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

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
    methods here are the shared interface.
    """

    def __init__(
        self,
        stack: FeatureStack,
        head: nn.Module,
        min_input_size: int | None = None,
    ) -> None:
        super().__init__()
        self.features = stack.build()
        self.feature_info: list[FeatureInfo] = stack.info
        self.head = head
        self.total_stride = stack.reduction
        # The smallest input side the layers accept; by default one output pixel.
        self.min_input_size = min_input_size or stack.reduction

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    @property
    def num_features(self) -> int:
        return self.head.num_features

    def check_input_size(self, height: int, width: int) -> None:
        """Raise ``ValueError`` if an input of this size cannot pass the network."""
        smallest = min(height, width)
        if smallest < self.min_input_size:
            raise ValueError(
                f"input size {height}x{width} is too small for {type(self).__name__}: both "
                f"sides must be at least {self.min_input_size} (total stride "
                f"{self.total_stride})"
            )

    def forward_features(self, x: Tensor) -> Tensor:
        # Plain ints only: under tracing or export the shape is symbolic and checked there.
        if isinstance(x.shape[-1], int) and isinstance(x.shape[-2], int):
            self.check_input_size(int(x.shape[-2]), int(x.shape[-1]))
        return self.features(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a new one for ``num_classes`` (0: no classifier)."""
        self.head.reset(num_classes)

    def feature_strides(self) -> list[int]:
        return sorted({info.reduction for info in self.feature_info})

    def forward_intermediates(self, x: Tensor, strides: tuple[int, ...] = (8, 16, 32)) -> list[Tensor]:
        """Feature maps at the given output strides, one per stride, in that order.

        Each is the last feature map at that stride (the input of the next downsampling),
        as detection and segmentation heads expect.
        """
        available = self.feature_strides()
        missing = [s for s in strides if s not in available]
        if missing:
            raise ValueError(f"strides {missing} not available; this model has {available}")
        last_index = {}
        for info in self.feature_info:
            last_index[info.reduction] = info.index
        wanted = {last_index[s]: s for s in strides}
        found: dict[int, Tensor] = {}
        if isinstance(x.shape[-1], int):
            self.check_input_size(int(x.shape[-2]), int(x.shape[-1]))
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in wanted:
                found[wanted[index]] = x
            if len(found) == len(wanted):
                break
        return [found[s] for s in strides]
