"""What the dense-prediction models share: a lightnets backbone and a head.

:func:`backbone_for` builds the backbone (or loads its ImageNet weights, the classifier
dropped); :class:`TaskModel` holds it with the head and keeps what files written from
the model must record: the input normalisation the backbone's weights were trained with
(``backbone_cfg``) and the padding they need (``backbone_padding``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..models import build_model
from ..models.base import Classifier
from ..weights.load import PretrainedConfig
from ..zoo import create_model


def backbone_for(family: str, weights: str | None, kwargs: dict[str, Any]) -> Classifier:
    """The backbone ``family`` built with ``kwargs``, from ``weights`` if given (its
    classifier then still there: the task model drops or bypasses it)."""
    backbone = (
        create_model(family, weights=weights, **kwargs)
        if weights
        else build_model(family, num_classes=0, **kwargs)
    )
    if not isinstance(backbone, Classifier):
        raise TypeError(f"{family} is not a lightnets backbone")
    return backbone


class TaskModel(nn.Module):
    """A backbone and a ``head`` (set by the subclass) with ``num_classes`` and ``reset``."""

    head: nn.Module

    def __init__(self, backbone: Classifier) -> None:
        super().__init__()
        config = getattr(backbone, "pretrained_cfg", None)
        self.backbone = backbone
        self.min_input_size = backbone.min_input_size
        # Recorded in files written from this model (see the module docstring).
        self.backbone_cfg: PretrainedConfig | None = config if isinstance(config, PretrainedConfig) else None
        self.backbone_padding = str(getattr(backbone, "padding", "symmetric"))

    @property
    def num_classes(self) -> int:
        return int(self.head.num_classes)  # type: ignore[arg-type]

    def check_input_size(self, height: int, width: int) -> None:
        self.backbone.check_input_size(height, width)

    def reset_classifier(self, num_classes: int) -> None:
        """New class outputs for ``num_classes``; the rest of the head stays."""
        self.head.reset(num_classes)  # type: ignore[operator]
