"""The composition layer: models with their weights, configuration and command options.

Everything that combines the lower stages (``models``, ``weights``, ``cost``, ``data``)
for the ones above (``train``, ``deploy``, the CLI) lives here, so that no lower stage
imports a higher one:

* :func:`create_model` builds a registered model and, with ``weights=``, loads a weight
  set into the configuration those weights need;
* :func:`transform_of` and :func:`labels_of` read a model's pretrained configuration;
* :mod:`.options` turns the builders' signatures into the model options of every command.
"""

from .create import create_model, model_for_weights
from .options import (
    add_model_options,
    add_model_or_weights_options,
    add_weights_options,
    model_from_args,
    model_kwargs,
)
from .pretrained import ImageClassifier, Model, labels_of, num_classes_of, pretrained_config, transform_of

__all__ = [
    "ImageClassifier",
    "Model",
    "add_model_options",
    "add_model_or_weights_options",
    "add_weights_options",
    "create_model",
    "labels_of",
    "model_for_weights",
    "model_from_args",
    "model_kwargs",
    "num_classes_of",
    "pretrained_config",
    "transform_of",
]
