"""A lightnets weights file with its metadata changed: how the tests make bad files."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file, save_file


def recorded(path: Path) -> dict:
    """The lightnets metadata a ``.safetensors`` file records."""
    with safe_open(path, "pt") as handle:
        return json.loads(handle.metadata()["lightnets"])


def with_metadata(path: Path, out: Path, **changes: object) -> Path:
    """A copy of the weights file ``path`` at ``out`` with ``changes`` in its lightnets metadata."""
    with safe_open(path, "pt") as handle:
        metadata = handle.metadata()
    data = {**json.loads(metadata["lightnets"]), **changes}
    save_file(load_file(path), out, {**metadata, "lightnets": json.dumps(data)})
    return out
