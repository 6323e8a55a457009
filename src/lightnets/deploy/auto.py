"""The ``auto`` backend: the fastest runtime for this model on this machine, measured once.

No runtime wins everywhere (on a 2-core AVX-512 machine LiteRT's XNNPACK leads on the
MobileNets and ShuffleNets, ONNX Runtime on the SqueezeNets), so :func:`fastest_runtime` times every runtime that
is installed on the model at hand (PyTorch with BatchNorm folded, ONNX Runtime, LiteRT),
batch 1 at the asked thread count, their calls interleaved so that a drift in the
machine's speed falls on all, and keeps the fastest. The choice is cached
(``$LIGHTNETS_CACHE/backends/choices.json``) per weights (a file by its content), model,
thread count, CPU and library versions: a choice made on another machine or with other
versions does not match its key and is measured again. All contenders are fp32: the
choice changes the speed, never the precision.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..cpu import all_threads, cpu_flags, cpu_model
from ..files import write_text
from .runtime import ModelFile, open_runtime

__all__ = ["CONTENDERS", "choice_key", "fastest_runtime"]

CONTENDERS = ("pytorch", "onnxruntime", "litert")
_PACKAGES = ("lightnets", "torch", "onnxruntime", "ai-edge-litert", "litert-torch")


def _installed(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def _weights_identity(weights: str | Path) -> str:
    """A tag as itself; a file by its content (a retrained file at the same path differs)."""
    path = Path(weights)
    if not path.is_file():
        return str(weights)
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def machine_identity(packages: tuple[str, ...] = _PACKAGES) -> dict[str, Any]:
    """This CPU (model and flags) and the versions of ``packages``: what a measurement kept
    in the cache must match to be reused."""
    return {
        "cpu": cpu_model(),
        "cpu_flags": hashlib.sha256(" ".join(sorted(cpu_flags())).encode()).hexdigest()[:16],
        "versions": {package: _installed(package) for package in packages},
    }


def choice_key(weights: str | Path, model: str | None, threads: int) -> dict[str, Any]:
    """What a cached choice must match to be reused."""
    return {"weights": _weights_identity(weights), "model": model, "threads": threads, **machine_identity()}


def _choices_file() -> Path:
    from ..weights.store import cache_folder

    return cache_folder("backends") / "choices.json"


def _read_choices(path: Path) -> list[dict[str, Any]]:
    try:
        choices = json.loads(path.read_text())
    except (OSError, ValueError):
        return []  # none yet, or unreadable: measure again
    return [c for c in choices if isinstance(c, dict)] if isinstance(choices, list) else []


def _runner(
    backend: str, weights: str | Path, model: str | None, weights_root: str | Path | None, threads: int | None
) -> ModelFile | nn.Module:
    """What classifies with ``backend``: the folded PyTorch model, or an exported file's runtime."""
    if backend == "pytorch":
        from ..zoo import model_for_weights
        from .fold import deploy

        return deploy(model_for_weights(weights, model, weights_root))
    return open_runtime(weights, model, weights_root, threads=threads, backend=backend)


def _installed_contenders() -> list[str]:
    from .tflite import require_tflite_extra

    try:
        require_tflite_extra()
    except ValueError as missing:
        print(f"auto: LiteRT not measured ({missing})", file=sys.stderr)
        return [c for c in CONTENDERS if c != "litert"]
    return list(CONTENDERS)


def _median_latencies(runners: dict[str, Any], image: torch.Tensor, rounds: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in runners}
    with torch.inference_mode():
        for run in runners.values():  # warm-up: first calls allocate and plan
            for _ in range(3):
                run(image)
        for _ in range(rounds):
            for name, run in runners.items():
                start = time.perf_counter()
                run(image)
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def fastest_runtime(
    weights: str | Path,
    model: str | None = None,
    weights_root: str | Path | None = None,
    threads: int | None = None,
    rounds: int = 30,
) -> tuple[str, ModelFile | nn.Module]:
    """The fastest fp32 runtime for ``weights`` at ``threads`` (None: every core), from
    the cache or measured now; returns its name and the object to classify with."""

    count = threads or all_threads()
    key = choice_key(weights, model, count)
    path = _choices_file()
    choices = _read_choices(path)
    cached = next((c for c in choices if c.get("key") == key and c.get("backend") in CONTENDERS), None)
    if threads is not None:
        torch.set_num_threads(threads)  # the PyTorch contender's (its default is every core)
    if cached is not None:
        return cached["backend"], _runner(cached["backend"], weights, model, weights_root, threads)
    runners = {b: _runner(b, weights, model, weights_root, count) for b in _installed_contenders()}
    probe = next(r for r in runners.values() if isinstance(r, ModelFile))
    image = torch.from_numpy(
        np.random.default_rng(0).standard_normal((1, *probe.input_size), dtype=np.float32)
    )
    print(
        f"auto: timing {', '.join(runners)} at {count} thread(s) (once per model and machine) ...",
        file=sys.stderr,
    )
    latencies = _median_latencies(runners, image, rounds)
    backend = min(latencies, key=latencies.__getitem__)
    print(
        "auto: " + ", ".join(f"{name} {ms:.2f} ms" for name, ms in latencies.items()) + f" -> {backend}",
        file=sys.stderr,
    )
    entry = {"key": key, "backend": backend, "latency_ms": latencies}
    choices = [c for c in choices if c.get("key") != key] + [entry]
    write_text(path, json.dumps(choices, indent=1))
    return backend, runners[backend]
