"""``create_model``: a registered architecture, optionally with a weight set loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..models import build_model, entry_arguments
from ..models.low_rank import factorize_to
from ..models.slimming import narrow_to
from ..weights.load import (
    inner_widths_of,
    load_weights,
    low_ranks_of,
    model_arguments_for,
    model_name_of_weights,
)
from ..weights.store import WeightsError
from .pretrained import num_classes_of


def create_model(
    name: str, weights: str | Path | None = None, weights_root: str | Path | None = None, **kwargs: Any
) -> nn.Module:
    """Build a registered model: ``create_model("mobilenet_v2", width=1.4, num_classes=10)``.

    ``weights`` loads a weight set by tag (``lightnets.list_weights()``) or a weights
    file, building the model in the configuration the weights need; ``num_classes``
    then replaces the classifier (fine-tuning). ``weights_root`` is a local folder of
    original weight files (default ``$LIGHTNETS_WEIGHTS``). Unknown names and keyword
    arguments the model does not take raise ``ValueError``.
    """
    if weights is None:
        return build_model(name, **kwargs)
    entry, arguments = entry_arguments(name, kwargs)
    wanted_classes = arguments.pop("num_classes", None)
    builder = entry.builder.__name__
    arguments = model_arguments_for(builder, weights, arguments)
    model = build_model(builder, **arguments)
    try:  # a narrowed or factorised model is rebuilt in its own shapes first
        narrow_to(model, inner_widths_of(weights))
        factorize_to(model, low_ranks_of(weights))
    except WeightsError:
        raise
    except ValueError as error:
        raise WeightsError(f"{weights}: {error}") from None
    model = load_weights(model, weights, root=weights_root)
    if wanted_classes is not None and wanted_classes != num_classes_of(model):
        reset_classifier = getattr(model, "reset_classifier", None)
        if not callable(reset_classifier):
            raise ValueError(f"{name} cannot replace its classifier for num_classes={wanted_classes}")
        reset_classifier(wanted_classes)
    return model


def model_for_weights(
    weights: str | Path,
    model: str | None = None,
    weights_root: str | Path | None = None,
    **kwargs: Any,
) -> nn.Module:
    """The model ``weights`` describe (a tag, or a file that records its model), loaded.

    ``model`` names the registered model for files that do not say (a torchvision
    checkpoint, a foreign release file).
    """
    name = model or model_name_of_weights(weights)
    return create_model(name, weights=weights, weights_root=weights_root, **kwargs)
