"""Deep Compression: pruning, trained weight sharing, Huffman coding, a compact container.

* :mod:`.pruning`: magnitude pruning with per-layer sparsities, masks kept through
  fine-tuning, gradual schedules, sparsities allocated from a sensitivity scan;
* :mod:`.sensitivity`: agreement with the float model against each layer's sparsity;
* :mod:`.sharing`: per-layer k-means codebooks (linear initialisation), trained through
  their members;
* the ``.lnz`` file it writes (``docs/compressed_format.md``; relative-index encoding and
  canonical Huffman codes) is a weights format: :mod:`lightnets.weights.container`, so
  that every command reads it as ``--weights`` without the compression stage;
  :mod:`.authors_format` writes the authors' ``.net``;
* :mod:`.qat`: quantisation-aware training (per-channel weights of 2-8 bits, 8-bit
  activations), stored as integers and scales;
* :mod:`.recovery`: distillation from the uncompressed model on available images;
* :mod:`.pipeline`: :func:`compress_model`, the steps in order.

Names are imported on first use, so importing this package does not load the training stage.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "compress_model": "pipeline",
    "encode_model": "pipeline",
    "Compressed": "pipeline",
    "Recovery": "pipeline",
    "prune": "pruning",
    "finish": "pruning",
    "read_sparsities": "pruning",
    "allocate_sparsities": "pruning",
    "magnitude_mask": "pruning",
    "share_weights": "sharing",
    "kmeans_1d": "sharing",
    "write_deep_compression": "authors_format",
    "recover": "recovery",
    "sensitivity_scan": "sensitivity",
    "prepare_qat": "qat",
    "finish_qat": "qat",
}

__all__ = sorted([*_EXPORTS, "read_container", "write_container", "encode_tensor"])


def __getattr__(name: str) -> Any:
    if name in ("read_container", "write_container", "encode_tensor"):
        return getattr(importlib.import_module("..weights.container", __name__), name)
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
