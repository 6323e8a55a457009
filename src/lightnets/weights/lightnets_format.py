"""lightnets' own weights file: safetensors, with the metadata needed to use it.

The tensors are the model's state dict; the safetensors header holds, as JSON under the
key ``lightnets``, the model name and arguments, the evaluation transform and the
categories. ``lightnets convert`` also writes the same JSON beside the file, for people.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from .store import WeightsError

METADATA_KEY = "lightnets"


def write_safetensors(model: nn.Module, path: Path, metadata_json: str) -> Path:
    """Write the model's state dict and metadata to ``path`` (and ``path.json``), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.part")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(partial), metadata={METADATA_KEY: metadata_json})
    partial.replace(path)
    path.with_suffix(".json").write_text(metadata_json + "\n")
    return path


def read_metadata(path: Path) -> dict:
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get(METADATA_KEY)
    except (SafetensorError, OSError) as error:
        raise WeightsError(f"{path} is not a readable safetensors file: {error}") from error
    return json.loads(raw) if raw else {}


def read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict]:
    """The tensors and metadata of a safetensors file; a damaged file raises ``WeightsError``."""
    metadata = read_metadata(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, RuntimeError) as error:
        raise WeightsError(f"{path} is damaged: {error}") from error
    return state, metadata
