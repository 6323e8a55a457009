"""MXNet Gluon SqueezeNet weights stored as one NumPy ``.npy`` file per tensor.

The set is the ONNX model zoo's ``squeezenet1.1`` (exported from Gluon) as unpacked by
the WebNN test data: ``weights/squeezenet0_conv{N}_{weight,bias}.npy`` with N = 0..25,
float32, weights OIHW. Gluon numbers its convolutions in creation order, which is our
module order: the stem, then squeeze / expand 1x1 / expand 3x3 of each Fire module, then
the classifier. The folder's ``test_data_set`` pairs are not weights and are skipped.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
from torch import Tensor, nn

from ..store import WeightsError
from .conv_slots import check_layer_count, conv_slots, put_conv

__all__ = ["gluon_npy_files", "import_gluon_npy"]

# "squeezenet0_conv12_weight.npy" -> ("squeezenet0_", 12, "weight")
_NAME = re.compile(r"^(?P<prefix>.*?)conv(?P<index>\d+)_(?P<kind>weight|bias)\.npy$")


def gluon_npy_files(paths: list[Path]) -> dict[int, dict[str, Path]]:
    """``{conv index: {"weight": path, "bias": path}}`` from a file list or a folder.

    A single folder is searched recursively for ``*conv<N>_<weight|bias>.npy``; from a
    list, files with other names (the test pairs, a README) are ignored.
    """
    paths = [Path(p) for p in paths]
    if len(paths) == 1 and paths[0].is_dir():
        folder = paths[0]
        paths = sorted(p for p in folder.rglob("*.npy") if "test_data_set" not in p.parts)
        if not paths:
            raise WeightsError(f"{folder} holds no .npy weight files")
    found: dict[int, dict[str, Path]] = {}
    prefixes = set()
    for path in paths:
        match = _NAME.match(path.name)
        if match is None:
            continue
        prefixes.add(match["prefix"])
        slot = found.setdefault(int(match["index"]), {})
        if match["kind"] in slot:
            raise WeightsError(
                f"two files for conv{match['index']}_{match['kind']}: {slot[match['kind']]}, {path}"
            )
        slot[match["kind"]] = path
    if not found:
        names = ", ".join(p.name for p in paths[:3])
        raise WeightsError(f"no Gluon weight files (*conv<N>_weight.npy / _bias.npy) among {names} ...")
    if len(prefixes) > 1:
        raise WeightsError(f"weight files of several networks mixed: prefixes {sorted(prefixes)}")
    return found


def _load_npy(path: Path, label: str) -> np.ndarray:
    if not path.is_file():
        raise WeightsError(f"{label}: {path} is missing")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise WeightsError(f"{path} is not a readable .npy array (truncated or corrupt): {error}") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind != "f":
        raise WeightsError(f"{path} holds {getattr(array, 'dtype', type(array))}, not floating-point weights")
    return array


def import_gluon_npy(paths: list[Path], model: nn.Module) -> dict[str, Tensor]:
    """A state dict for a SqueezeNet from the Gluon ``.npy`` files (or their folder)."""
    source = os.path.commonpath([str(p) for p in paths]) if paths else "(no files)"
    slots = conv_slots(model, source)
    found = gluon_npy_files(paths)
    count = max(found) + 1
    missing = [
        f"conv{i}_{kind}.npy"
        for i in range(count)
        for kind in ("weight", "bias")
        if kind not in found.get(i, {})
    ]
    if missing:
        raise WeightsError(
            f"{source}: {len(missing)} weight file(s) missing (first: {', '.join(missing[:3])})"
        )
    check_layer_count(slots, count, source)
    state: dict[str, Tensor] = {}
    for index, slot in enumerate(slots):
        files = found[index]
        weight = _load_npy(files["weight"], source)
        bias = _load_npy(files["bias"], source)
        put_conv(state, slot, weight, bias, source, files["weight"].name.removesuffix("_weight.npy"))
    return state
