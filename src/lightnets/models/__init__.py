"""The model zoo: one file per family, all built from their papers' tables."""

from . import mobilenet_v1, mobilenet_v2, reference, shufflenet_v1, squeezenet  # noqa: F401  (registers)
from .base import Classifier, ClassifierHead, ConvClassifierHead, FeatureInfo
from .registry import COMMON_ARGUMENTS, build_model, entry_arguments, get_entry, list_models, register_model

__all__ = [
    "COMMON_ARGUMENTS",
    "Classifier",
    "ClassifierHead",
    "ConvClassifierHead",
    "FeatureInfo",
    "build_model",
    "entry_arguments",
    "get_entry",
    "list_models",
    "register_model",
]
