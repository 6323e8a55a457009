"""lightnets' own weights file: safetensors, with the metadata needed to use it.

The tensors are the model's state dict; the safetensors header holds, as JSON under the
key ``lightnets``, the model name and arguments, the evaluation transform and the
categories, and under ``lightnets_tensors_sha256`` a digest of the tensors (names,
dtypes, shapes and bytes), checked when the file is read. ``lightnets convert`` also
writes the same JSON beside the file, for people.

A weights file is untrusted input: its metadata is parsed against a schema (known keys,
types, bounds) by :func:`parse_metadata` before anything uses it, and every problem is a
:class:`~lightnets.weights.store.WeightsError` naming the file.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from ..data.transforms import EvalTransform
from ..files import atomic_path, write_text
from .store import WeightsError

METADATA_KEY = "lightnets"
DIGEST_KEY = "lightnets_tensors_sha256"

MAX_CLASSES = 100_000  # class names (and num_classes) a file may declare
MAX_NAME = 1_000  # characters of one class name or other string value
MAX_SOURCE = 4_096  # characters of converted_from (a path or tag)
MAX_NUMBER = 1e6  # magnitude of a numeric model argument
MAX_SIDECAR_BYTES = 16 << 20  # a metadata .json beside a file
MAX_BLOCKS = 10_000  # narrowed blocks named in inner_widths, factorised layers in low_ranks
MAX_WIDTH = 1 << 20  # channels of one narrowed block, the rank of one factorised layer


def tensors_sha256(state: dict[str, Tensor]) -> str:
    """A sha256 of a state dict: every tensor's name, dtype, shape and bytes, by name."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}\0{str(tensor.dtype).removeprefix('torch.')}\0{list(tensor.shape)}\0".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def write_safetensors(model: nn.Module, path: Path, metadata_json: str) -> Path:
    """Write the model's state dict and metadata to ``path`` (and ``path.json``), atomically.

    Raises :class:`~lightnets.files.OutputError` when the disk refuses (full, read-only);
    an existing file is then left as it was.
    """
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    header = {METADATA_KEY: metadata_json, DIGEST_KEY: tensors_sha256(state)}
    with atomic_path(path) as partial:
        save_file(state, str(partial), metadata=header)
    write_text(path.with_suffix(".json"), metadata_json + "\n")
    return path


def _header(path: Path) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError) as error:
        raise WeightsError(f"{path} is not a readable safetensors file: {error}") from error


def read_metadata(path: Path) -> dict:
    """The checked lightnets metadata of a safetensors file (``{}`` if it has none)."""
    return parse_metadata(_header(path).get(METADATA_KEY), path)


def read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict]:
    """The tensors and checked metadata of a safetensors file.

    A damaged file, metadata that breaks the schema, or tensors that do not match the
    digest recorded when the file was written raise ``WeightsError``.
    """
    header = _header(path)
    metadata = parse_metadata(header.get(METADATA_KEY), path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise WeightsError(f"{path} is damaged: {error}") from error
    recorded = header.get(DIGEST_KEY)
    if recorded is not None:
        actual = tensors_sha256(state)
        if actual != recorded:
            raise WeightsError(
                f"{path} is damaged or altered: its tensors hash to sha256 {actual}, "
                f"but the file records {recorded}"
            )
    return state, metadata


def read_sidecar(path: Path) -> dict:
    """The checked metadata in a ``.json`` file (beside a weights file)."""
    try:
        size = path.stat().st_size
        if size > MAX_SIDECAR_BYTES:
            raise WeightsError(f"{path}: {size:,} bytes is too large for weights metadata")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise WeightsError(f"{path}: cannot read the weights metadata ({error})") from error
    return parse_metadata(text, path)


def parse_metadata(raw: str | dict | None, source: str | Path) -> dict:
    """Lightnets weights metadata, checked against the schema before anything uses it.

    Keys: ``model`` (a registered model), ``model_kwargs`` (arguments that model's
    builder takes, JSON scalars), ``num_classes`` (1..``MAX_CLASSES``), ``transform``
    (see :meth:`EvalTransform.from_dict`), ``categories`` (a label-set name or up to
    ``MAX_CLASSES`` class names), ``converted_from`` (a string), ``inner_widths`` (the
    channels kept in each narrowed block, :mod:`lightnets.models.slimming`: block names to
    whole numbers), ``low_ranks`` (the rank of each factorised layer,
    :mod:`lightnets.models.low_rank`: layer names to whole numbers). Other keys are dropped.
    Raises :class:`WeightsError` naming ``source`` and the problem.
    """
    if raw is None or raw == "":
        return {}
    data: Any = raw
    if isinstance(raw, str):
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, RecursionError) as error:
            raise WeightsError(f"{source}: its lightnets metadata is not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise WeightsError(
            f"{source}: its lightnets metadata must be a JSON object, not {type(data).__name__}"
        )

    def bad(problem: str) -> WeightsError:
        return WeightsError(f"{source}: bad lightnets metadata: {problem}")

    out: dict[str, Any] = {}
    model = data.get("model")
    if model is not None:
        if not isinstance(model, str) or len(model) > 200:
            raise bad(f"'model' must be a model name, got {_show(model)}")
        out["model"] = model
        parameters = _builder_parameters(model, bad)
    if "model_kwargs" in data and data["model_kwargs"] is not None:
        kwargs = data["model_kwargs"]
        if not isinstance(kwargs, dict):
            raise bad(f"'model_kwargs' must be an object, got {_show(kwargs)}")
        if model is None:
            raise bad("'model_kwargs' without 'model'")
        unknown = sorted(str(k) for k in kwargs if k not in parameters)
        if unknown:
            raise bad(f"{model} does not take {', '.join(unknown)}; it takes: {', '.join(parameters)}")
        for key, value in kwargs.items():
            _check_scalar(value, f"model_kwargs.{key}", bad)
        if "num_classes" in kwargs:
            _check_classes(kwargs["num_classes"], "model_kwargs.num_classes", bad)
        out["model_kwargs"] = dict(kwargs)
    if data.get("num_classes") is not None:
        out["num_classes"] = _check_classes(data["num_classes"], "num_classes", bad)
    if "transform" in data and data["transform"] is not None:
        try:
            out["transform"] = EvalTransform.from_dict(data["transform"]).to_dict()
        except (ValueError, TypeError) as error:
            raise bad(str(error)) from None
    if "categories" in data and data["categories"] is not None:
        out["categories"] = _check_categories(data["categories"], bad)
    if data.get("converted_from") is not None:
        source_value = data["converted_from"]
        if not isinstance(source_value, str) or len(source_value) > MAX_SOURCE:
            raise bad(f"'converted_from' must be a string of at most {MAX_SOURCE} characters")
        out["converted_from"] = source_value
    for key in ("inner_widths", "low_ranks"):
        if data.get(key) is not None:
            out[key] = _check_widths(data[key], key, bad)
    return out


def _check_widths(widths: object, key: str, bad) -> dict[str, int]:
    """Layer or block names to channel counts (narrowed widths, factorised ranks)."""
    if not isinstance(widths, dict) or len(widths) > MAX_BLOCKS:
        raise bad(f"'{key}' must be an object of at most {MAX_BLOCKS} layer names")
    for name, width in widths.items():
        if (
            len(name) > 200
            or isinstance(width, bool)
            or not isinstance(width, int)
            or not 1 <= width <= MAX_WIDTH
        ):
            raise bad(f"{key}.{name[:200]} must be a whole number in 1..{MAX_WIDTH}, got {_show(width)}")
    return dict(widths)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _builder_parameters(model: str, bad) -> list[str]:
    from ..models.registry import get_entry

    try:
        entry = get_entry(model)
    except ValueError as error:
        raise bad(str(error).split(" (known models")[0]) from None
    return list(inspect.signature(entry.builder).parameters)


def _check_scalar(value: object, what: str, bad) -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int | float):
        if not math.isfinite(value) or abs(value) > MAX_NUMBER:
            raise bad(f"{what} = {_show(value)} is out of range")
        return
    if isinstance(value, str):
        if len(value) > MAX_NAME:
            raise bad(f"{what} is a string of {len(value):,} characters")
        return
    raise bad(f"{what} must be a number, string, true/false or null, got {_show(value)}")


def _check_classes(value: object, what: str, bad) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CLASSES:
        raise bad(f"{what} must be a whole number in 1..{MAX_CLASSES:,}, got {_show(value)}")
    return value


def _check_categories(value: object, bad) -> str | list[str]:
    if isinstance(value, str):
        if len(value) > MAX_NAME:
            raise bad(f"'categories' is a string of {len(value):,} characters")
        return value
    if isinstance(value, list):
        if len(value) > MAX_CLASSES:
            raise bad(f"'categories' lists {len(value):,} classes, more than {MAX_CLASSES:,}")
        if not all(isinstance(name, str) and len(name) <= MAX_NAME for name in value):
            raise bad(f"'categories' must be class names (strings of at most {MAX_NAME} characters)")
        return list(value)
    raise bad(f"'categories' must be a label-set name or a list of class names, got {_show(value)}")
