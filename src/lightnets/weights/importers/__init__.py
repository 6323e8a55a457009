"""Importers: each turns the files of one original format into a state dict for a model.

An importer is ``(paths, model) -> state dict``: it reads the files (never unpickling
code), maps their tensors onto the model's parameter and buffer names, and returns a
complete state dict with the model's keys and shapes, or raises ``WeightsError``. It
never modifies the model; :func:`lightnets.weights.load.load_weights` checks and loads.
"""

from __future__ import annotations

from pathlib import Path

from ..store import WeightsError


def _tflite(paths, model):
    from .tflite import import_tflite

    return import_tflite(paths, model)


def _gluon_npy(paths, model):
    from .gluon_npy import import_gluon_npy

    return import_gluon_npy(paths, model)


def _ncnn(paths, model):
    from .ncnn import import_ncnn

    return import_ncnn(paths, model)


def _deep_compression(paths, model):
    from .deep_compression import import_deep_compression

    return import_deep_compression(paths, model)


def _lightnets_compressed(paths, model):
    # The container's codec lives with the compression stage that writes it.
    from ..container import import_container

    return import_container(paths, model)


IMPORTERS = {
    "tflite": _tflite,
    "gluon_npy": _gluon_npy,
    "ncnn": _ncnn,
    "deep_compression": _deep_compression,
    "lightnets_compressed": _lightnets_compressed,
}


def format_of_path(path: Path) -> str:
    """The format of a weights file or folder, from its name and contents."""
    if path.is_dir():
        if list(path.glob("**/*.npy")):
            return "gluon_npy"
        raise WeightsError(f"{path} is a folder without .npy tensors")
    suffix = path.suffix.lower()
    formats = {
        ".safetensors": "safetensors",
        ".pth": "torch",
        ".pt": "torch",
        ".bin": "torch",
        ".tflite": "tflite",
        ".param": "ncnn",
        ".net": "deep_compression",
        ".lnz": "lightnets_compressed",
    }
    if suffix == ".bin" and path.with_suffix(".param").is_file():
        return "ncnn"
    if suffix not in formats:
        raise WeightsError(f"{path}: unknown weights format {suffix!r}; expected one of {sorted(formats)}")
    return formats[suffix]
