"""What a model's pretrained configuration says: its evaluation transform and class names."""

from __future__ import annotations

from typing import Any, Protocol

from torch import Tensor, nn

from ..data.categories import class_names
from ..data.transforms import EvalTransform
from ..weights.load import PretrainedConfig


class ImageClassifier(Protocol):
    """What classifying needs of a model besides an ``nn.Module``: an ONNX Runtime
    session wrapper, for one, takes images and gives class scores the same way."""

    @property
    def num_classes(self) -> int: ...

    def __call__(self, images: Tensor, /) -> Tensor: ...

    def eval(self) -> Any: ...


Model = nn.Module | ImageClassifier


def num_classes_of(model: Model) -> int:
    """The number of classes ``model`` scores (``TypeError`` if it does not say)."""
    value = getattr(model, "num_classes", None)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{type(model).__name__} does not say how many classes it scores (num_classes)")
    return value


def pretrained_config(model: Model) -> PretrainedConfig | None:
    """The configuration the model's weights brought (``None`` for random weights)."""
    config = getattr(model, "pretrained_cfg", None)
    return config if isinstance(config, PretrainedConfig) else None


def transform_of(model: Model) -> EvalTransform:
    """The evaluation transform of the model's weights (ImageNet defaults without)."""
    config = pretrained_config(model)
    return config.transform if config is not None else EvalTransform()


def labels_of(model: Model) -> list[str]:
    """The model's class names, one per output (numbers where the weights name none)."""
    config = pretrained_config(model)
    return class_names(config.categories if config else "", num_classes_of(model))
