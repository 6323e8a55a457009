"""lightnets: the light-weight CNNs of mobile vision, exactly as their papers define them."""

from .cost import CostReport, profile
from .cost.memory import activation_memory
from .layers import make_divisible
from .models import create_model, list_models

__all__ = ["CostReport", "activation_memory", "create_model", "list_models", "make_divisible", "profile"]
__version__ = "0.1.0"
