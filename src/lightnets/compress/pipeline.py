"""Deep Compression of a trained model: fold, prune, recover, share, recover, encode.

Or, instead of pruning and sharing, quantisation-aware training (:mod:`.qat`): fold,
put quantisers on every layer, recover through them, encode each weight as a low-bit
integer times its channel's scale.

:func:`compress_model` runs the steps the options ask for on a copy of the model and
returns a :class:`Compressed` result: the compressed model (BatchNorm folded, pruned
weights zero, shared weights equal to their centroids), its encoded tensors and a
per-layer summary, ready for :meth:`Compressed.save` as a lightnets container.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn
from tqdm import tqdm

from ..data.transforms import EvalTransform
from ..deploy.fold import fold_batchnorm
from ..resident import reset_peak, resident_kb
from ..weights.container import EncodedTensor, encode_grid, encode_tensor, write_container
from .pruning import finish, gradual_sparsity, prunable_layers, prune, resolve_sparsities
from .qat import calibrate_ranges, check_qat_bits, finish_qat, prepare_qat, set_observing
from .reconstruction import reconstruct
from .recovery import recover
from .sharing import SharedLayer, check_bits, codebooks, share_weights

__all__ = ["Compressed", "LayerRow", "Recovery", "compress_model", "encode_model"]


@dataclass
class Recovery:
    """Where and how long a compressed model recovers (see :func:`.recovery.recover`)."""

    paths: Sequence[Path]
    transform: EvalTransform
    steps: int  # per recovery phase (after pruning, after sharing)
    batch_size: int = 32
    lr: float = 1e-4
    temperature: float = 2.0
    cache_dir: str | Path | None = None


@dataclass
class LayerRow:
    """One line of the summary table."""

    name: str
    params: int
    nonzeros: int
    bits: int  # bits per stored value before entropy coding (32 for float)
    bytes: int
    encoding: str


@dataclass
class Compressed:
    """A compressed model, its encoded tensors and what each step cost."""

    model: nn.Module
    tensors: list[EncodedTensor]
    shared: dict[str, SharedLayer]
    sparsities: dict[str, float]
    timings: dict[str, float] = field(default_factory=dict)  # step -> seconds
    # step -> the process's peak resident bytes during it (Linux; empty elsewhere)
    peak_memory: dict[str, int] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)
    grids: dict[str, tuple[int, np.ndarray]] = field(default_factory=dict)  # QAT: (bits, scales)

    def rows(self) -> list[LayerRow]:
        rows = []
        for t in self.tensors:
            e = t.entry
            params = int(np.prod(e["shape"])) if e["shape"] else 1
            bits = int(e.get("bits", 32))
            rows.append(LayerRow(e["name"], params, int(e["nonzeros"]), bits, t.nbytes, e["encoding"]))
        return rows

    @property
    def params(self) -> int:
        return sum(r.params for r in self.rows())

    @property
    def payload_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    def save(self, path: str | Path, metadata: Mapping[str, Any]) -> int:
        """Write the container (atomically); returns its size in bytes."""
        write_container(path, self.tensors, dict(metadata))
        return Path(path).stat().st_size


def encode_model(
    model: nn.Module,
    shared: Mapping[str, SharedLayer],
    use_huffman: bool,
    progress: bool = False,
    grids: Mapping[str, tuple[int, np.ndarray]] | None = None,
) -> list[EncodedTensor]:
    """Every tensor of ``model``'s state dict encoded: shared layers with their codebook,
    quantisation-aware trained layers (``grids``: bits and per-channel scales) as integers,
    other multi-dimensional weights as dense or sparse float32 (the smaller), the rest dense."""
    grids = grids or {}
    out = []
    pruned = {f"{name}.weight" for name in prunable_layers(model)}
    state = model.state_dict()
    for key in tqdm(state, desc="encode", unit="tensor", disable=not progress):
        array = state[key].detach().cpu().numpy()
        layer = key.removesuffix(".weight")
        if key.endswith(".weight") and layer in grids:
            bits, scales = grids[layer]
            out.append(encode_grid(key, array, scales, bits, use_huffman=use_huffman))
        elif key.endswith(".weight") and layer in shared:
            out.append(
                encode_tensor(key, array, shared[layer].codebook, shared[layer].bits, use_huffman=use_huffman)
            )
        elif key in pruned and array.ndim >= 2:
            out.append(encode_tensor(key, array, use_huffman=use_huffman))
        else:
            out.append(encode_tensor(key, array, sparse=False, use_huffman=use_huffman))
    return out


class _Steps:
    """Seconds and peak resident memory of each named step (summed / maxed over repeats)."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.memory: dict[str, int] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        tracked = reset_peak()
        start = time.perf_counter()
        yield
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start
        peak = resident_kb("VmHWM")
        if tracked and peak is not None:
            self.memory[name] = max(self.memory.get(name, 0), peak * 1024)


def _folded_copies(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """A copy of ``model`` with BatchNorm folded, to compress, and a frozen one to learn from."""
    work = fold_batchnorm(copy.deepcopy(model), inplace=True)
    return work, copy.deepcopy(work).eval().requires_grad_(False)


def run_recovery(
    work: nn.Module, teacher: nn.Module, recovery: Recovery, steps: int, seed: int, desc: str, progress: bool
) -> list[float]:
    return recover(
        work,
        teacher,
        recovery.paths,
        recovery.transform,
        steps,
        recovery.batch_size,
        recovery.lr,
        recovery.temperature,
        recovery.cache_dir,
        seed=seed,
        progress=progress,
        desc=desc,
    )


def compress_model(
    model: nn.Module,
    sparsity: float | None = None,
    sparsities: Mapping[str, float] | None = None,
    bits: int | Mapping[str, int] | None = None,
    use_huffman: bool = True,
    recovery: Recovery | None = None,
    prune_stages: int = 1,
    calibration: Sequence[Tensor] | None = None,
    progress: bool = True,
    qat_bits: int | None = None,
) -> Compressed:
    """Compress a copy of ``model`` (``model`` itself is not changed).

    BatchNorm is folded first. Pruning (``sparsity`` for every layer, ``sparsities`` per
    layer) runs in ``prune_stages`` stages on the cubic schedule, each followed by
    ``recovery.steps / prune_stages`` distillation steps; then weight sharing with
    ``bits`` (one width or per layer) and another ``recovery.steps`` steps that train the
    centroids. ``use_huffman`` Huffman-codes indices and gaps.

    With ``calibration`` (normalised image batches), every layer is first refitted to the
    float model by least squares right after pruning, and shared right after its refit
    (:func:`.reconstruction.reconstruct`); distillation, if asked, then trains the
    centroids and biases.

    ``qat_bits`` (2-8) trains with quantised weights and activations instead
    (:mod:`.qat`): the activation ranges are set on ``calibration`` (else followed as
    moving averages), then ``recovery.steps`` steps train through the quantisers, and
    every weight is stored as a ``qat_bits``-bit integer times its channel's scale. It
    excludes pruning and sharing.
    """
    if isinstance(bits, int) or isinstance(bits, bool):
        check_bits(bits)
    if qat_bits is not None:
        check_qat_bits(qat_bits)
        if bits is not None or sparsity or sparsities:
            raise ValueError(
                "quantisation-aware training replaces pruning and weight sharing: ask for it alone"
            )
        return _quantisation_aware(model, qat_bits, use_huffman, recovery, calibration, progress)
    if prune_stages < 1:
        raise ValueError(f"prune_stages must be at least 1, got {prune_stages}")
    step = _Steps()
    with step("fold"):
        work, teacher = _folded_copies(model)
    table = resolve_sparsities(work, sparsity, sparsities)
    losses: list[float] = []
    shared: dict[str, SharedLayer] = {}
    if calibration is not None:
        with step("prune"):
            prune(work, sparsities=table)
        with step("reconstruct"):
            reconstruct(work, teacher, calibration, bits, progress=progress)
        if recovery is not None and recovery.steps:
            with step("recovery"):
                losses += run_recovery(work, teacher, recovery, recovery.steps, 100, "recovery", progress)
        if bits is not None:
            shared = codebooks(work)
    else:
        if any(table.values()):
            for stage in range(1, prune_stages + 1):
                with step("prune"):
                    prune(
                        work,
                        sparsities={k: gradual_sparsity(v, stage, prune_stages) for k, v in table.items()},
                    )
                if recovery is not None and recovery.steps:
                    steps = max(1, recovery.steps // prune_stages)
                    desc = f"recovery after pruning ({stage}/{prune_stages})"
                    with step("recovery (pruning)"):
                        losses += run_recovery(work, teacher, recovery, steps, stage, desc, progress)
        if bits is not None:
            with step("share (k-means)"):
                share_weights(work, bits, trainable=True)
            if recovery is not None and recovery.steps:
                desc = "recovery of the shared weights"
                with step("recovery (sharing)"):
                    losses += run_recovery(work, teacher, recovery, recovery.steps, 100, desc, progress)
            shared = codebooks(work)
    finish(work)
    work.requires_grad_(False)
    work.eval()
    with step("encode (Huffman)" if use_huffman else "encode"):
        tensors = encode_model(work, shared, use_huffman, progress=progress)
    return Compressed(work, tensors, shared, table, step.timings, step.memory, losses)


def _quantisation_aware(
    model: nn.Module,
    bits: int,
    use_huffman: bool,
    recovery: Recovery | None,
    calibration: Sequence[Tensor] | None,
    progress: bool,
) -> Compressed:
    step = _Steps()
    with step("fold"):
        work, teacher = _folded_copies(model)
    with step("quantisers"):
        prepare_qat(work, bits)
        if calibration is not None:
            calibrate_ranges(work, calibration)
    losses: list[float] = []
    if recovery is not None and recovery.steps:
        with step("quantisation-aware training"):
            losses = run_recovery(
                work, teacher, recovery, recovery.steps, 100, "quantisation-aware training", progress
            )
    set_observing(work, False)
    grids = finish_qat(work)
    work.requires_grad_(False)
    work.eval()
    with step("encode (Huffman)" if use_huffman else "encode"):
        tensors = encode_model(work, {}, use_huffman, progress=progress, grids=grids)
    return Compressed(work, tensors, {}, {}, step.timings, step.memory, losses, grids=grids)
