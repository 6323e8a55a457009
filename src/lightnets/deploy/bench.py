"""Latency, throughput and memory of models under several backends, measured honestly.

Every measurement runs in a fresh process (spawned, one per model x backend x thread
count), so that one backend's thread pools, caches and freed-but-kept memory never
colour the next figure, and the peak memory is that of the backend alone.

* Latency: batch 1, ``warmup`` calls, then ``runs`` (>= 50) calls timed one by one;
  the median and the 90th percentile are reported.
* Throughput: batch ``batch``, images per second of the median call.
* Peak memory: the process's peak resident memory while it runs the batch-1 calls, minus
  its resident memory before the model was built (Linux ``VmHWM``, reset through
  ``/proc/self/clear_refs`` after warm-up): weights, runtime buffers and activations
  together, the same way for every backend.
* :func:`interleaved` times several targets in one process, their calls taken in turn,
  for comparisons that a machine whose speed drifts must not decide.
* The floor: no backend computes faster than the machine multiplies and adds. The
  single-thread rate of a large fp32 matrix product (:func:`gemm_rate`) gives each model
  the latency it could reach if every multiply-add ran at that rate: MAdds / rate.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..resident import reset_peak, resident_kb

__all__ = [
    "BACKENDS",
    "FOREIGN_BACKENDS",
    "Measurement",
    "Target",
    "benchmark",
    "gemm_rate",
    "interleaved",
    "measure",
    "model_targets",
    "runner",
    "speedup_per_madds_cut",
]

# The backends a lightnets model can be timed under, in the order tables list them.
BACKENDS = {
    "eager": "PyTorch eager (contiguous)",
    "channels_last": "PyTorch eager, channels-last",
    "folded": "PyTorch, BatchNorm folded and Conv-BN-act fused (deploy())",
    "ort_fp32": "ONNX Runtime fp32 (lightnets export)",
    "ort_int8": "ONNX Runtime int8 (QDQ, calibrated on real images)",
    "torch_int8": "PyTorch int8 (x86 quantised kernels, calibrated on real images)",
    "litert_fp32": "LiteRT (XNNPACK) fp32 (lightnets export to TFLite)",
    "litert_int8": "LiteRT (XNNPACK) int8 (LiteRT's quantiser, calibrated on real images)",
}
# Files made elsewhere, timed the same way (peers: another exporter's ONNX, a TFLite file).
FOREIGN_BACKENDS = {
    "onnx_file": "ONNX Runtime running a given ONNX file",
    "tflite_file": "LiteRT interpreter (XNNPACK) running a given TFLite file",
}
INT8_BACKENDS = ("ort_int8", "torch_int8", "litert_int8")
Input = TypeVar("Input")  # what a timed call takes
MIN_RUNS = 50


@dataclass(frozen=True)
class Target:
    """One thing to time: a lightnets model under a backend, or a foreign file.

    ``file`` is the prepared artefact of the file-based backends (the ONNX file of
    ``ort_fp32``/``ort_int8``, a peer's ONNX or TFLite file); ``calibration`` the folder
    of real images ``torch_int8`` calibrates on.
    """

    label: str
    backend: str
    madds: int
    model: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None
    input_size: int | tuple[int, int] = 224  # a side, or (height, width)
    file: str | None = None
    calibration: str | None = None


@dataclass
class Measurement:
    label: str
    backend: str
    threads: int
    madds: int
    latency_ms: float  # median, batch 1
    latency_p90_ms: float
    runs: int
    batch: int
    throughput: float  # images/s at batch ``batch``
    peak_memory_mb: float | None

    @classmethod
    def of(
        cls,
        target: Target,
        threads: int,
        latencies: Sequence[float],
        batch: int,
        batch_times: Sequence[float],
        memory: float | None,
    ) -> Measurement:
        """From batch-1 call times and batch-``batch`` call times (milliseconds)."""
        return cls(
            label=target.label,
            backend=target.backend,
            threads=threads,
            madds=target.madds,
            latency_ms=statistics.median(latencies),
            latency_p90_ms=float(np.percentile(latencies, 90)),
            runs=len(latencies),
            batch=batch,
            throughput=batch / (statistics.median(batch_times) / 1e3),
            peak_memory_mb=memory,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- the measuring process -----------------------------------------------------------------


def runner(target: Target, threads: int) -> Callable[[np.ndarray], Any]:
    """A callable that classifies one float32 NCHW batch with the target's backend."""
    import torch

    torch.set_num_threads(threads)
    if target.backend in ("onnx_file", "ort_fp32", "ort_int8"):
        import onnxruntime as ort

        from .runtime import session_options

        session = ort.InferenceSession(
            target.file, session_options(threads), providers=["CPUExecutionProvider"]
        )
        name, batch = session.get_inputs()[0].name, session.get_inputs()[0].shape[0]
        if batch == 1:  # a file exported for batch 1 (a peer's): run a batch image by image
            return lambda x: [session.run(None, {name: x[i : i + 1]}) for i in range(len(x))]
        return lambda x: session.run(None, {name: x})
    if target.backend in ("tflite_file", "litert_fp32", "litert_int8"):
        return _litert_runner(target.file, threads)
    if target.backend not in BACKENDS:
        raise ValueError(f"unknown backend {target.backend!r}")

    from ..layers import to_channels_last
    from ..zoo import create_model

    if target.model is None:
        raise ValueError(f"{target.label}: the {target.backend} backend needs a lightnets model name")
    model = create_model(target.model, weights=target.weights, **target.model_kwargs).eval()
    memory_format = torch.contiguous_format
    if target.backend == "channels_last":
        memory_format = torch.channels_last
        model = to_channels_last(model)
    elif target.backend == "folded":
        from .fold import deploy

        model = deploy(model)
    elif target.backend == "torch_int8":
        from .quantize import quantize_pytorch

        if target.calibration is None:
            raise ValueError("the int8 backends need calibration images: give a folder of real images")
        # Min/max ranges: the kernels and so the latency are those of any calibration.
        model = quantize_pytorch(model, target.calibration, num_images=32, observer="minmax")

    def run(x: np.ndarray) -> Any:
        with torch.inference_mode():
            return model(torch.from_numpy(x).contiguous(memory_format=memory_format))

    return run


def _litert_runner(path: str | None, threads: int) -> Callable[[np.ndarray], Any]:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as error:
        raise ValueError(
            "timing a TFLite file needs the LiteRT interpreter: pip install ai-edge-litert"
        ) from error
    interpreter = Interpreter(model_path=path, num_threads=threads)  # XNNPACK is its default delegate
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    # A TFLite file is NHWC with a fixed batch: it is timed on its own input type and shape.
    batch = np.zeros(tuple(inp["shape"]), dtype=inp["dtype"])

    def run(x: np.ndarray) -> Any:
        results = []
        for _ in range(x.shape[0]):
            interpreter.set_tensor(inp["index"], batch)
            interpreter.invoke()
            results.append(interpreter.get_tensor(out["index"]))
        return results

    return run


def _height_width(target: Target) -> tuple[int, int]:
    size = target.input_size
    return (size, size) if isinstance(size, int) else size


def _time_calls(run: Callable[[Input], Any], x: Input, calls: int) -> list[float]:
    times = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        run(x)
        times.append((time.perf_counter_ns() - start) / 1e6)
    return times


def measure(
    target: Target, threads: int, runs: int = 100, warmup: int = 10, batch: int = 16, batch_runs: int = 10
) -> Measurement:
    """Time ``target`` in this process (see :func:`benchmark` for the fresh-process way)."""
    if runs < MIN_RUNS:
        raise ValueError(f"runs must be >= {MIN_RUNS} for a stable median and p90, got {runs}")
    if threads < 1 or batch < 1 or warmup < 1:
        raise ValueError("threads, batch and warmup must be >= 1")
    baseline = resident_kb("VmRSS")
    run = runner(target, threads)
    rng = np.random.default_rng(0)
    one = rng.standard_normal((1, 3, *_height_width(target)), dtype=np.float32)
    many = rng.standard_normal((batch, 3, *_height_width(target)), dtype=np.float32)
    _time_calls(run, one, warmup)
    peak_tracked = reset_peak()
    latencies = _time_calls(run, one, runs)
    # Read before any larger batch runs: runtimes keep the arenas a batch grew.
    peak = resident_kb("VmHWM")
    _time_calls(run, many, 2)
    batch_times = _time_calls(run, many, batch_runs)
    # In a long-lived process the allocator may hand memory freed earlier back to the system
    # while the model is built, and the peak can end below the baseline: no figure then.
    memory = (peak - baseline) / 1024 if peak_tracked and peak and baseline and peak > baseline else None
    return Measurement.of(target, threads, latencies, batch, batch_times, memory)


def _gemm_rate_here(threads: int, size: int, repeats: int) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.empty(size, size)
    torch.mm(a, b, out=out)
    best = min(_time_calls(lambda _: torch.mm(a, b, out=out), None, repeats))
    return size**3 / (best / 1e3)


# -- the driver ----------------------------------------------------------------------------


def _fresh_process(fn: Callable, *args: Any) -> Any:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(fn, *args).result()


def gemm_rate(threads: int = 1, size: int = 1024, repeats: int = 20) -> float:
    """Multiply-adds per second of the best of ``repeats`` fp32 (size x size) matrix
    products on ``threads`` threads (PyTorch's BLAS), measured in a fresh process."""
    return _fresh_process(_gemm_rate_here, threads, size, repeats)


def model_targets(
    model: str,
    model_kwargs: dict[str, Any] | None = None,
    weights: str | None = None,
    backends: Sequence[str] = tuple(BACKENDS),
    input_size: int | None = None,
    calibration: str | None = None,
    workdir: str | Path | None = None,
    label: str | None = None,
) -> list[Target]:
    """The targets of one lightnets model under ``backends``: exports the ONNX and TFLite
    files (and their int8 versions, calibrated on ``calibration``) into ``workdir`` once
    for all."""
    from ..cost import profile
    from ..zoo import create_model
    from .calibration import DEFAULT_CALIBRATION_IMAGES
    from .export import export_onnx
    from .quantize import quantize_onnx

    kwargs = dict(model_kwargs or {})
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown backend(s) {unknown}; expected some of {list(BACKENDS)}")
    if calibration is None and any(b in INT8_BACKENDS for b in backends):
        raise ValueError("the int8 backends need calibration images: give a folder of real images")
    net = create_model(model, weights=weights, **kwargs).eval()
    if input_size is None:  # the weights' side, else the model's own (a detector's paper side)
        cfg = getattr(net, "pretrained_cfg", None)
        input_size = cfg.transform.size if cfg is not None else int(getattr(net, "default_input_size", 224))
    madds = profile(net, (3, input_size, input_size)).madds
    label = label or _describe(model, kwargs, weights)
    workdir = Path(workdir or tempfile.mkdtemp(prefix="lightnets-bench-"))
    stem = workdir / re.sub(r"[^A-Za-z0-9_.=-]+", "_", label)
    fp32 = stem.with_suffix(".fp32.onnx")
    if any(b.startswith("ort_") for b in backends):
        export_onnx(net, fp32, input_size=input_size)
    if "ort_int8" in backends:
        assert calibration is not None  # refused above
        # Calibrated as `lightnets export --int8` does, so the files timed are the ones users get.
        quantize_onnx(
            fp32, stem.with_suffix(".int8.onnx"), calibration, num_images=DEFAULT_CALIBRATION_IMAGES
        )
    for backend, int8 in (("litert_fp32", False), ("litert_int8", True)):
        if backend in backends:
            from .tflite import export_tflite

            export_tflite(
                net,
                stem.with_suffix(f".{backend}.tflite"),
                input_size,
                int8,
                calibration,
                DEFAULT_CALIBRATION_IMAGES,
            )
    files = {"ort_fp32": str(fp32), "ort_int8": str(stem.with_suffix(".int8.onnx"))}
    files |= {b: str(stem.with_suffix(f".{b}.tflite")) for b in ("litert_fp32", "litert_int8")}
    return [
        Target(
            label=label,
            backend=backend,
            madds=madds,
            model=model,
            model_kwargs=kwargs,
            weights=weights,
            input_size=input_size,
            file=files.get(backend),
            calibration=str(calibration) if calibration else None,
        )
        for backend in backends
    ]


def _describe(model: str, kwargs: dict[str, Any], weights: str | None) -> str:
    if weights:
        return f"{model} ({Path(weights).name})"
    details = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    return f"{model} ({details})" if details else model


def benchmark(
    targets: Iterable[Target],
    threads: Sequence[int] = (1,),
    runs: int = 100,
    warmup: int = 10,
    batch: int = 16,
    progress: bool = True,
) -> list[Measurement]:
    """Measure every target at every thread count, each in a fresh process."""
    from tqdm import tqdm

    if runs < MIN_RUNS:
        raise ValueError(f"runs must be >= {MIN_RUNS} for a stable median and p90, got {runs}")
    jobs = [(t, n) for t in targets for n in threads]
    results = []
    bar = tqdm(jobs, desc="bench", unit="run", disable=not progress)
    for target, n in bar:
        bar.set_postfix_str(f"{target.label} / {target.backend} / {n} thread(s)")
        results.append(_fresh_process(measure, target, n, runs, warmup, batch))
    return results


GEMM_SIZE = 1024


def _interleaved_here(
    targets: Sequence[Target], threads: int, runs: int, warmup: int
) -> tuple[list[Measurement], float]:
    import torch

    runners = [runner(t, threads) for t in targets]
    a, b = torch.randn(GEMM_SIZE, GEMM_SIZE), torch.randn(GEMM_SIZE, GEMM_SIZE)
    out = torch.empty(GEMM_SIZE, GEMM_SIZE)
    runners.append(lambda _: torch.mm(a, b, out=out))
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((1, 3, *_height_width(t)), dtype=np.float32) for t in targets]
    inputs.append(np.empty(0, dtype=np.float32))  # the GEMM's, unused
    for run, x in zip(runners, inputs, strict=True):
        _time_calls(run, x, warmup)
    times: list[list[float]] = [[] for _ in runners]
    for round_ in range(runs):
        # One call of each in turn, the order rotating: drift in the machine's speed falls on all.
        shift = round_ % len(runners)
        for index in [*range(shift, len(runners)), *range(shift)]:
            times[index] += _time_calls(runners[index], inputs[index], 1)
    rate = GEMM_SIZE**3 / (statistics.median(times[-1]) / 1e3)
    rows = [Measurement.of(t, threads, ts, 1, ts, None) for t, ts in zip(targets, times, strict=False)]
    return rows, rate


def interleaved(
    targets: Sequence[Target], threads: int = 1, runs: int = 200, warmup: int = 10
) -> tuple[list[Measurement], float]:
    """Batch-1 latency of every target, their calls interleaved one by one in one fresh
    process, together with a fp32 GEMM timed the same way; returns the measurements and
    that GEMM's multiply-add rate (median). On a machine whose speed drifts (a shared or
    virtual one) this is the fair comparison: a target is never timed in a slower minute
    than the others. No memory figure: the targets share the process. One thread only:
    with more, each runtime's pool of workers (spinning after its own calls) would take
    the cores from the next one, which then looks slower than it is."""
    if threads != 1:
        raise ValueError("interleaved timing is for one thread: runtimes' thread pools would compete")
    if runs < MIN_RUNS:
        raise ValueError(f"runs must be >= {MIN_RUNS} for a stable median and p90, got {runs}")
    return _fresh_process(_interleaved_here, list(targets), threads, runs, warmup)


def speedup_per_madds_cut(measurements: Sequence[Measurement], cut: float = 4.0) -> float | None:
    """The real speed-up a ``cut``-fold reduction of MAdds gives, from a least-squares fit
    of log latency against log MAdds over ``measurements`` (one backend, one thread count)."""
    points = [(m.madds, m.latency_ms) for m in measurements if m.madds > 0]
    if len({p[0] for p in points}) < 2:
        return None
    slope = np.polyfit(np.log([p[0] for p in points]), np.log([p[1] for p in points]), 1)[0]
    return float(cut**slope)
