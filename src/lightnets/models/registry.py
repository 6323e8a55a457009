"""Model registry: ``build_model(name, **kwargs)`` and ``list_models(pattern)``.

A registered name is a family (``mobilenet_v2``) or a self-describing preset of it
(``mobilenet_v2_140`` = width 1.4), each a function that returns an ``nn.Module``.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn


@dataclass(frozen=True)
class ModelEntry:
    """A registered name: the builder and the keyword arguments the name fixes."""

    name: str
    builder: Callable[..., nn.Module]
    defaults: dict[str, Any] = field(default_factory=dict)
    family: str = ""
    description: str = ""


_REGISTRY: dict[str, ModelEntry] = {}

# The arguments every builder takes, described once (builders document their own).
COMMON_ARGUMENTS = {
    "num_classes": "number of classes of the classifier, an integer >= 0 (0: no classifier; the model "
    "then returns its num_features features)",
    "dropout": "dropout probability in the classifier head, in [0, 1)",
    "in_channels": "channels of the input image, an integer >= 1 (3 for RGB)",
}


def register_model(
    name: str | None = None,
    *,
    presets: dict[str, dict[str, Any]] | None = None,
    family: str = "",
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder under ``name`` (default: its function name).

    ``presets`` maps extra names to the keyword arguments they fix, e.g.
    ``{"mobilenet_v2_140": {"width": 1.4}}``.
    """

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        base = name or builder.__name__
        doc = (inspect.getdoc(builder) or "").split("\n", 1)[0]
        for entry_name, defaults in {base: {}, **(presets or {})}.items():
            if entry_name in _REGISTRY:
                raise ValueError(f"model name {entry_name!r} is registered twice")
            _REGISTRY[entry_name] = ModelEntry(entry_name, builder, dict(defaults), family or base, doc)
        return builder

    return decorate


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, sorted (``"shufflenet*"``)."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def get_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (known models: {', '.join(list_models())})") from None


def entry_arguments(name: str, kwargs: dict[str, Any]) -> tuple[ModelEntry, dict[str, Any]]:
    """The registry entry of ``name`` and the builder arguments it fixes merged with ``kwargs``.

    Raises ``ValueError`` for an unknown name or an argument the builder does not take,
    naming the arguments it does take.
    """
    entry = get_entry(name)
    accepted = inspect.signature(entry.builder).parameters
    unknown = sorted(k for k in kwargs if k not in accepted)
    if unknown:
        valid = ", ".join(k for k in accepted)
        raise ValueError(f"{name} does not take {', '.join(unknown)}; it takes: {valid}")
    return entry, {**entry.defaults, **kwargs}


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the architecture ``name`` with random weights: ``build_model("mobilenet_v2", width=0.5)``.

    The model records how it was built (``model_name``, ``model_kwargs``) for weight
    files and exports. Loading weights is the composition layer's
    (:func:`lightnets.create_model`).
    """
    entry, arguments = entry_arguments(name, kwargs)
    model = entry.builder(**arguments)
    # Plain attributes, not submodules: setattr keeps nn.Module's typed __setattr__ out of it.
    setattr(model, "model_name", entry.builder.__name__)  # noqa: B010
    setattr(model, "model_kwargs", dict(arguments))  # noqa: B010
    return model
