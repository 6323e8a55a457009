"""Loading weights into a model: by tag, or from a file in any supported format.

Nothing here unpickles code: files are read as safetensors, NumPy arrays
(``allow_pickle=False``), flatbuffers, plain binary, or ``torch.load(weights_only=True)``.
Every importer builds a complete state dict first; it is checked against the model
(same keys, same shapes) and only then loaded, so a bad file leaves the model as it was.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..data.transforms import EvalTransform
from ..models.low_rank import low_ranks
from ..models.slimming import narrowed_widths
from .spec import IMAGENET, WEIGHTS, WeightSpec, get_weights
from .store import WeightsError, resolve, sha256_of

RUN_WEIGHTS_FILE = "model.safetensors"  # what ``lightnets train --out FOLDER`` writes
# Suffixes that make an unknown name read as a mistyped path rather than a mistyped tag.
_PATH_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".tflite", ".param", ".net", ".npy", ".json")

Importer = Callable[[list[Path], nn.Module], dict[str, Tensor]]


@dataclass
class PretrainedConfig:
    """What a loaded model carries about its weights (``model.pretrained_cfg``)."""

    source: str  # the tag or the file
    transform: EvalTransform
    categories: str | list[str] = IMAGENET  # a known label set, or the class names
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
    located = locate_weights(weights)
    if isinstance(located, WeightSpec):
        spec = located
        check_architecture(model, spec)
        paths = resolve(spec, root, download)
        state = importer_for(spec.format)(paths, model)
        config = PretrainedConfig(spec.tag, spec.transform, spec.categories, spec.to_dict())
    else:
        release, mismatch = identify_release(located)
        try:
            state, config = read_file(located, model, release)
        except WeightsError as error:
            if mismatch:  # say both: what is wrong inside, and that it is not the release
                raise WeightsError(f"{error}; {mismatch}") from error
            raise
        if mismatch:
            raise WeightsError(mismatch)
    check_dtypes(model, state, str(weights))
    own = model.state_dict()
    state = {k: v.to(dtype=own[k].dtype) if k in own else v for k, v in state.items()}
    check_state_dict(model, state, str(weights))
    model.load_state_dict(state, strict=True)
    # A plain attribute, not a submodule: setattr keeps nn.Module's typed __setattr__ out of it.
    setattr(model, "pretrained_cfg", config)  # noqa: B010
    return model


def check_dtypes(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Refuse integer, boolean or complex tensors for the model's floating-point ones.

    Casting them would load numbers that were never weights (an int64 dump, a mask) and
    give a model that runs and answers wrongly; a float of another width is converted.
    """
    own = model.state_dict()
    wrong = [
        f"{k} is {str(v.dtype).removeprefix('torch.')}"
        for k, v in state.items()
        if k in own and own[k].is_floating_point() and not v.is_floating_point()
    ]
    if wrong:
        raise WeightsError(
            f"{source}: {len(wrong)} tensors are not floating point where the model's are "
            f"(first: {', '.join(wrong[:3])}); refusing to convert them"
        )


def locate_weights(weights: str | Path) -> WeightSpec | Path:
    """What ``weights`` names: a registered weight set, or the file to read.

    A tag gives its spec; a training run folder (holding ``model.safetensors``, as
    ``lightnets train --out`` writes) gives that file; an existing file or folder gives
    itself. Anything else raises :class:`WeightsError`, suggesting close tags.
    """
    if isinstance(weights, str) and weights in WEIGHTS:
        return get_weights(weights)
    path = Path(weights)
    if path.is_dir() and (path / RUN_WEIGHTS_FILE).is_file():
        return path / RUN_WEIGHTS_FILE
    if path.exists():
        return path
    text = str(weights)
    close = difflib.get_close_matches(text, list(WEIGHTS), n=3, cutoff=0.6)
    if close and os.sep not in text and "/" not in text:
        raise WeightsError(
            f"unknown weights tag {text!r}; did you mean {', '.join(close)}? (all tags: lightnets weights)"
        )
    if os.sep in text or "/" in text or text.lower().endswith(_PATH_SUFFIXES):
        raise WeightsError(f"{text}: no such weights file or folder")
    raise WeightsError(
        f"{text!r} is neither a known weights tag nor an existing file "
        f"(tags: lightnets weights, or list_weights())"
    )


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int, inode: int) -> str:
    return sha256_of(Path(path))


def _sha256(path: Path) -> str:
    info = path.stat()
    return _sha256_cached(str(path.resolve()), info.st_size, info.st_mtime_ns, info.st_ino)


def release_of(path: Path) -> WeightSpec | None:
    """The known release (a spec of ``WEIGHTS``) that ``path`` is, checked, or ``None``.

    A file (or Gluon folder) is recognised by its name or by its content (sha256). One
    that has a release file's name must also have its content: a flipped byte, a
    truncated download or another file under that name raises :class:`WeightsError`
    naming the file and both hashes. lightnets ``.safetensors`` files carry their own
    digest and are not releases.
    """
    spec, mismatch = identify_release(path)
    if mismatch:
        raise WeightsError(mismatch)
    return spec


def identify_release(path: Path) -> tuple[WeightSpec | None, str | None]:
    """(the release ``path`` is or claims to be by name, why its content is not that release)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return None, None
    if path.is_dir():
        return _release_folder(path)
    if not path.is_file():
        return None, None
    given = [path]
    if path.suffix in (".param", ".bin"):  # ncnn: the pair
        given = [p for p in (path.with_suffix(".param"), path.with_suffix(".bin")) if p.is_file()]
    found: WeightSpec | None = None
    for file in given:
        named = [(spec, f) for spec in WEIGHTS.values() for f in spec.files if Path(f.path).name == file.name]
        actual = _sha256(file)
        if named:
            matching = [spec for spec, f in named if f.sha256 == actual]
            if not matching:
                spec, expected = named[0]
                return spec, (
                    f"{file} has the name of {spec.tag}'s file but not its content: sha256 {actual}, "
                    f"expected {expected.sha256} (damaged or altered; give another file another name)"
                )
            found = found or matching[0]
            continue
        by_content = [spec for spec in WEIGHTS.values() if any(f.sha256 == actual for f in spec.files)]
        found = found or (by_content[0] if by_content else None)
    return found, None


def _release_folder(folder: Path) -> tuple[WeightSpec | None, str | None]:
    for spec in WEIGHTS.values():
        if len(spec.files) < 2:
            continue
        common = os.path.commonpath([f.path for f in spec.files])
        if Path(common).name != folder.name:
            continue
        for file in spec.files:
            local = folder / os.path.relpath(file.path, common)
            if local.is_file() and (actual := _sha256(local)) != file.sha256:
                return spec, (
                    f"{local} (a file of {spec.tag}) fails its checksum: sha256 {actual}, "
                    f"expected {file.sha256} (damaged or altered)"
                )
        return spec, None
    return None, None


def read_file(
    path: Path, model: nn.Module, release: WeightSpec | None = None
) -> tuple[dict[str, Tensor], PretrainedConfig]:
    """A state dict for ``model`` and its evaluation settings from one weights file.

    ``release``: the known release the file is (see :func:`release_of`), whose
    evaluation settings it brings.
    """
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
        from .container import read_container, state_for_model

        tensors, metadata, _ = read_container(path)
        transform = (
            EvalTransform.from_dict(metadata["transform"]) if "transform" in metadata else EvalTransform()
        )
        config = PretrainedConfig(str(path), transform, metadata.get("categories", IMAGENET), metadata)
        return state_for_model(tensors, model, str(path)), config
    if fmt == "torch":
        from .importers.torch_peers import read_torch_state_dict

        state = read_torch_state_dict(path, model)
    else:
        paths = [path]
        if fmt == "ncnn":
            paths = [path.with_suffix(".param"), path.with_suffix(".bin")]
        state = importer_for(fmt)(paths, model)
    if release is not None:
        return state, PretrainedConfig(str(path), release.transform, release.categories, release.to_dict())
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
    widths = narrowed_widths(model)
    if widths:
        data["inner_widths"] = widths
    ranks = low_ranks(model)
    if ranks:
        data["low_ranks"] = ranks
    return json.dumps(data, indent=2, sort_keys=True)


def _recorded(weights: str | Path, key: str) -> dict[str, int]:
    located = locate_weights(weights)
    if isinstance(located, WeightSpec) or release_of(located) is not None:
        return {}
    return dict(_sidecar_metadata(located).get(key, {}))


def inner_widths_of(weights: str | Path) -> dict[str, int]:
    """The narrowed blocks' inner widths a lightnets weights file records (``{}`` for a
    weight set, a foreign file or a model that was not narrowed)."""
    return _recorded(weights, "inner_widths")


def low_ranks_of(weights: str | Path) -> dict[str, int]:
    """The factorised layers' ranks a lightnets weights file records (``{}`` for a
    weight set, a foreign file or a model without low-rank layers)."""
    return _recorded(weights, "low_ranks")


def model_arguments_for(model_name: str, weights: str | Path, arguments: dict[str, Any]) -> dict[str, Any]:
    """The builder arguments a model needs to take ``weights``: the user's, with the
    configuration the weights fix (padding, activation, width ...) taking precedence.

    Raises :class:`WeightsError` when the user asked for a configuration the weights
    cannot have, or the weights belong to another model.
    """
    located = locate_weights(weights)
    spec = located if isinstance(located, WeightSpec) else release_of(located)
    if spec is not None:
        if spec.model != model_name:
            raise WeightsError(f"weights {spec.tag} ({weights}) are for {spec.model}, not {model_name}")
        fixed = dict(spec.model_kwargs)
    elif isinstance(located, Path):  # a file of no known release (a WeightSpec is its own spec)
        path = located
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
    """Checked metadata of a lightnets weights file: in the safetensors header, or its .json."""
    from .lightnets_format import read_metadata, read_sidecar

    if path.suffix == ".safetensors" and path.is_file():
        return read_metadata(path)
    if path.suffix == ".lnz" and path.is_file():
        from .container import read_container_metadata

        return read_container_metadata(path)
    sidecar = path.with_suffix(".json")
    return read_sidecar(sidecar) if sidecar.is_file() and sidecar != path else {}


def model_name_of_weights(weights: str | Path) -> str:
    """The registry model a weights tag, run folder, lightnets file or known release file is for."""
    located = locate_weights(weights)
    if isinstance(located, WeightSpec):
        return located.model
    metadata = _sidecar_metadata(located)
    if "model" in metadata:
        return metadata["model"]
    release = release_of(located)
    if release is not None:
        return release.model
    raise WeightsError(f"{weights} does not say which model it is for: give --model")
