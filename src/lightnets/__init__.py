"""lightnets: the light-weight CNNs of mobile vision, exactly as their papers define them."""

from . import tasks  # noqa: F401  (registers the task models: deeplabv3_*, ssd*)
from .classify import evaluate, predict
from .cost import CostReport, profile
from .cost.memory import activation_memory
from .layers import make_divisible
from .models import list_models
from .version import __version__
from .weights import convert, get_weights, list_weights, load_weights
from .zoo import create_model

__all__ = [
    "__version__",
    "CostReport",
    "activation_memory",
    "convert",
    "create_model",
    "evaluate",
    "get_weights",
    "list_models",
    "list_weights",
    "load_weights",
    "make_divisible",
    "predict",
    "profile",
]
