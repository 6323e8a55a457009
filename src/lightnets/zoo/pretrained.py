"""What a model's pretrained configuration says: its evaluation transform and class names."""

from __future__ import annotations

from torch import nn

from ..data.categories import class_names
from ..data.transforms import EvalTransform
from ..weights.load import PretrainedConfig


def pretrained_config(model: nn.Module) -> PretrainedConfig | None:
    """The configuration the model's weights brought (``None`` for random weights)."""
    return getattr(model, "pretrained_cfg", None)


def transform_of(model: nn.Module) -> EvalTransform:
    """The evaluation transform of the model's weights (ImageNet defaults without)."""
    config = pretrained_config(model)
    return config.transform if config is not None else EvalTransform()


def labels_of(model: nn.Module) -> list[str]:
    """The model's class names, one per output (numbers where the weights name none)."""
    config = pretrained_config(model)
    return class_names(config.categories if config else "", model.num_classes)
