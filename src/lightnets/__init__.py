"""lightnets: the light-weight CNNs of mobile vision, exactly as their papers define them."""

from .models import create_model, list_models

__all__ = ["create_model", "list_models"]
__version__ = "0.1.0"
