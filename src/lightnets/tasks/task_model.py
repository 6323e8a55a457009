"""What the dense-prediction models share: a lightnets backbone and a head.

:func:`backbone_for` builds the backbone (or loads its ImageNet weights, the classifier
dropped); :class:`TaskModel` holds it with the head and keeps what files written from
the model must record: the input normalisation the backbone's weights were trained with
(``backbone_cfg``) and the padding they need (``backbone_padding``).
:func:`save_task_weights` writes such a file, :func:`normalise_of` and
:func:`input_size_of` read a model's input normalisation and side back.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from ..data.transforms import EvalTransform
from ..models import build_model, get_entry
from ..models.base import Classifier
from ..weights.lightnets_format import write_safetensors
from ..weights.load import PretrainedConfig
from ..zoo import create_model
from .segdata import Normalise


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


def normalise_of(model: nn.Module) -> Normalise:
    """The input normalisation of a task model: of its weights file, else of its
    backbone's weights, else ImageNet's mean and std."""
    for attribute in ("pretrained_cfg", "backbone_cfg"):
        config = getattr(model, attribute, None)
        transform = getattr(config, "transform", None)
        if isinstance(transform, EvalTransform):
            return Normalise(transform.mean, transform.std)
    return Normalise()


def input_size_of(model: nn.Module, default: int = 256) -> int:
    """The shorter side the model was trained at (its weights' transform ``size``)."""
    config = getattr(model, "pretrained_cfg", None)
    transform = getattr(config, "transform", None)
    return transform.size if isinstance(transform, EvalTransform) and config is not None else default


def class_names_of(model: nn.Module, count: int | None = None) -> list[str]:
    """Names of the ``count`` classes (default: the model's outputs) its weights name, or
    their numbers where the weights name no such list."""
    config = getattr(model, "pretrained_cfg", None)
    categories = getattr(config, "categories", None)
    count = int(getattr(model, "num_classes", 0)) if count is None else count
    if isinstance(categories, list) and len(categories) == count:
        return list(categories)
    return [str(i) for i in range(count)]


def save_task_weights(
    model: nn.Module,
    path: str | Path,
    model_name: str,
    model_kwargs: dict[str, Any],
    classes: Sequence[str],
    size: int,
) -> Path:
    """A lightnets ``.safetensors`` file that ``create_model(name, weights=path)`` and
    ``lightnets segment`` / ``detect --weights`` read back (a segmentation or detection
    model): the model, its arguments (the backbone's padding fixed, no backbone weights
    to load again), classes and input normalisation."""
    normalise = normalise_of(model)
    kwargs = {k: v for k, v in model_kwargs.items() if k not in ("backbone_weights", "num_classes")}
    if "padding" in _builder_parameters(model_name):
        kwargs["padding"] = getattr(model, "backbone_padding", "symmetric")
    transform = EvalTransform(size=size, resize=size, mean=normalise.mean, std=normalise.std)
    metadata = {
        "model": model_name,
        "model_kwargs": kwargs,
        "num_classes": int(getattr(model, "num_classes", len(classes))),
        "transform": transform.to_dict(),
        "categories": list(classes),
        "converted_from": None,
    }
    return write_safetensors(model, Path(path), json.dumps(metadata, indent=2, sort_keys=True))


def _builder_parameters(model_name: str) -> list[str]:
    return list(inspect.signature(get_entry(model_name).builder).parameters)
