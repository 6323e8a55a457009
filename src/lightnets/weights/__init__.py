"""Pretrained weights: typed specs, a verified local store, importers, safe loading."""

from pathlib import Path

from torch import nn

from .lightnets_format import write_safetensors
from .load import PretrainedConfig, load_weights, metadata_json
from .spec import WEIGHTS, WeightFile, WeightSpec, get_weights, list_weights
from .store import WeightsError, resolve

__all__ = [
    "WEIGHTS",
    "PretrainedConfig",
    "WeightFile",
    "WeightSpec",
    "WeightsError",
    "convert",
    "get_weights",
    "list_weights",
    "load_weights",
    "resolve",
]


def convert(model: nn.Module, path: str | Path) -> Path:
    """Write a (loaded) model as a lightnets ``.safetensors`` file plus its metadata JSON.

    ``create_model(name, weights=path)`` loads it back bit for bit.
    """
    name = getattr(model, "model_name", None)
    if name is None:
        raise ValueError("convert needs a model made by lightnets.create_model (to record how to rebuild it)")
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: the output must end in .safetensors")
    return write_safetensors(model, path, metadata_json(model, name, getattr(model, "model_kwargs", {})))
