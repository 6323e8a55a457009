"""Loading weights into a model: by tag, or from a file in any supported format.

Nothing here unpickles code: files are read as safetensors, NumPy arrays
(``allow_pickle=False``), flatbuffers, plain binary, or ``torch.load(weights_only=True)``.
Every importer builds a complete state dict first; it is checked against the model
(same keys, same shapes) and only then loaded, so a bad file leaves the model as it was.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..data.transforms import EvalTransform
from .spec import IMAGENET, WEIGHTS, WeightSpec, get_weights
from .store import WeightsError, resolve, sha256_of

Importer = Callable[[list[Path], nn.Module], dict[str, Tensor]]


@dataclass
class PretrainedConfig:
    """What a loaded model carries about its weights (``model.pretrained_cfg``)."""

    source: str  # the tag or the file
    transform: EvalTransform
    categories: str = IMAGENET
    metadata: dict[str, Any] = field(default_factory=dict)


def importer_for(fmt: str) -> Importer:
    """The function that turns files of format ``fmt`` into a state dict for a model."""
    from . import importers

    try:
        return importers.IMPORTERS[fmt]
    except KeyError:
        raise WeightsError(f"no importer for format {fmt!r}; known: {sorted(importers.IMPORTERS)}") from None


def check_architecture(model: nn.Module, spec: WeightSpec) -> None:
    """Refuse weights made for another model or configuration (other padding, width ...)."""
    name = getattr(model, "model_name", None)
    if name is not None and name != spec.model:
        raise WeightsError(f"weights {spec.tag} are for {spec.model}, not {name}")
    for key, value in spec.model_kwargs.items():
        have = getattr(model, key, value)
        if have != value:
            raise WeightsError(
                f"weights {spec.tag} need {spec.model}({key}={value!r}); this model has {key}={have!r}. "
                f"Use create_model({spec.model!r}, weights={spec.tag!r})"
            )


def check_state_dict(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Raise :class:`WeightsError` unless ``state`` has exactly the model's keys and shapes."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k}: file {tuple(state[k].shape)}, model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches (first: {'; '.join(wrong[:3])})")
        if missing:
            parts.append(f"{len(missing)} missing tensors (first: {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (first: {', '.join(unexpected[:3])})")
        raise WeightsError(f"{source} does not fit {type(model).__name__}: {'; '.join(parts)}")
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise WeightsError(f"{source} holds non-finite values in {', '.join(bad[:3])}")


def load_weights(
    model: nn.Module, weights: str | Path, root: str | Path | None = None, download: bool = True
) -> nn.Module:
    """Load a weight set (a tag from :func:`list_weights`) or a weights file into ``model``.

    Files: a lightnets ``.safetensors`` (from ``lightnets convert``), a PyTorch state dict
    (``.pth``/``.pt``/``.bin``, lightnets', torchvision's or timm's key layout), or one of
    the original formats (``.tflite``, a folder of Gluon ``.npy``, an ncnn ``.param``
    with its ``.bin``, a Deep Compression ``.net``). The model is changed only if the
    whole file loads and fits; otherwise :class:`WeightsError` (a ``ValueError``) says why.
    """
    if isinstance(weights, str) and weights in WEIGHTS:
        spec = get_weights(weights)
        check_architecture(model, spec)
        paths = resolve(spec, root, download)
        state = importer_for(spec.format)(paths, model)
        config = PretrainedConfig(spec.tag, spec.transform, spec.categories, spec.to_dict())
    else:
        path = Path(weights)
        if not path.exists():
            raise WeightsError(
                f"{weights!s} is neither a known weights tag nor an existing file "
                f"(tags: lightnets weights, or list_weights())"
            )
        state, config = read_file(path, model)
    state = {
        k: v.to(dtype=model.state_dict()[k].dtype) if k in model.state_dict() else v for k, v in state.items()
    }
    check_state_dict(model, state, str(weights))
    model.load_state_dict(state, strict=True)
    model.pretrained_cfg = config
    return model


def read_file(path: Path, model: nn.Module) -> tuple[dict[str, Tensor], PretrainedConfig]:
    """A state dict for ``model`` and its evaluation settings from one weights file."""
    from .importers import format_of_path

    fmt = format_of_path(path)
    if fmt == "safetensors":
        from .lightnets_format import read_safetensors

        state, metadata = read_safetensors(path)
        transform = (
            EvalTransform.from_dict(metadata["transform"]) if "transform" in metadata else EvalTransform()
        )
        return state, PretrainedConfig(str(path), transform, metadata.get("categories", IMAGENET), metadata)
    if fmt == "lightnets_compressed":
        from ..compress.container import read_container, state_for_model

        tensors, metadata, _ = read_container(path)
        transform = (
            EvalTransform.from_dict(metadata["transform"]) if "transform" in metadata else EvalTransform()
        )
        config = PretrainedConfig(str(path), transform, metadata.get("categories", IMAGENET), metadata)
        return state_for_model(tensors, model, str(path)), config
    if fmt == "torch":
        from .importers.torch_peers import read_torch_state_dict

        return read_torch_state_dict(path, model), PretrainedConfig(str(path), EvalTransform())
    paths = [path]
    if fmt == "ncnn":
        paths = [path.with_suffix(".param"), path.with_suffix(".bin")]
    state = importer_for(fmt)(paths, model)
    # A file of a known release brings that release's evaluation settings.
    digest = sha256_of(paths[-1]) if paths[-1].is_file() else None
    spec = next((s for s in WEIGHTS.values() if any(f.sha256 == digest for f in s.files)), None)
    if spec is not None:
        return state, PretrainedConfig(str(path), spec.transform, spec.categories, spec.to_dict())
    return state, PretrainedConfig(str(path), EvalTransform())


def metadata_json(model: nn.Module, model_name: str, model_kwargs: dict) -> str:
    """The JSON written beside a converted file: enough to rebuild and use the model."""
    config: PretrainedConfig | None = getattr(model, "pretrained_cfg", None)
    data = {
        "model": model_name,
        "model_kwargs": model_kwargs,
        "num_classes": getattr(model, "num_classes", None),
        "transform": (config.transform if config else EvalTransform()).to_dict(),
        "categories": config.categories if config else IMAGENET,
        "converted_from": config.source if config else None,
    }
    return json.dumps(data, indent=2, sort_keys=True)


def model_arguments_for(model_name: str, weights: str | Path, arguments: dict[str, Any]) -> dict[str, Any]:
    """The builder arguments a model needs to take ``weights``: the user's, with the
    configuration the weights fix (padding, activation, width ...) taking precedence.

    Raises :class:`WeightsError` when the user asked for a configuration the weights
    cannot have, or the weights belong to another model.
    """
    if isinstance(weights, str) and weights in WEIGHTS:
        spec = get_weights(weights)
        if spec.model != model_name:
            raise WeightsError(f"weights {spec.tag} are for {spec.model}, not {model_name}")
        fixed = dict(spec.model_kwargs)
    else:
        path = Path(weights)
        metadata = _sidecar_metadata(path)
        if metadata.get("model") not in (None, model_name):
            raise WeightsError(f"{path} holds {metadata['model']} weights, not {model_name}")
        fixed = dict(metadata.get("model_kwargs", {}))
        fixed.pop("num_classes", None)
        if metadata.get("num_classes") is not None:
            fixed["num_classes"] = metadata["num_classes"]
    for key, value in fixed.items():
        if key in arguments and arguments[key] != value and key != "num_classes":
            raise WeightsError(f"{weights} need {key}={value!r}, but {key}={arguments[key]!r} was asked for")
    return {**arguments, **fixed}


def _sidecar_metadata(path: Path) -> dict:
    """Metadata of a lightnets weights file: in the safetensors header, or its .json."""
    if path.suffix == ".safetensors" and path.is_file():
        from .lightnets_format import read_metadata

        return read_metadata(path)
    if path.suffix == ".lnz" and path.is_file():
        from ..compress.container import read_container_metadata

        return read_container_metadata(path)
    sidecar = path.with_suffix(".json")
    return json.loads(sidecar.read_text()) if sidecar.is_file() else {}


def model_name_of_weights(weights: str | Path) -> str:
    """The registry model a weights tag or lightnets file is for."""
    if isinstance(weights, str) and weights in WEIGHTS:
        return get_weights(weights).model
    metadata = _sidecar_metadata(Path(weights)) if Path(weights).exists() else {}
    if "model" in metadata:
        return metadata["model"]
    raise WeightsError(f"{weights} does not say which model it is for: give --model")
