"""A latency model of this machine: per-operator lookup tables, summed over a network.

Search and ``lightnets search --max-latency`` must know how fast thousands of networks
run without building and timing each one. The mobile search literature (FBNet,
ProxylessNAS) does it with a lookup table: a network is the sum of its operators, and an
operator's latency depends only on its type, its hyper-parameters and its input shape,
so each distinct operator is timed once, in isolation, and the table is kept.

Here the operators are those of the deployed network (:func:`~lightnets.deploy.deploy`:
BatchNorm folded, Conv-BN-act fused), traced with ``torch.fx``; a convolution, linear
layer or addition whose only consumer is an activation is one operator with it, as every
runtime fuses them. Each operator becomes a graph of its own, timed batch 1 under a
backend at a thread count. ``folded`` (PyTorch eager) times calls of it; a runtime's fixed
cost per call (dispatch, allocating the output) is in every isolated call but once in a
network's, so it is measured on a one-element operator, taken off each operator and
counted once. ``ort_fp32`` (ONNX Runtime, the operator exported to ONNX) takes the
operator's kernel times from ONNX Runtime's own profile instead, leaving out the layout
conversions the runtime wraps around a lone operator (blocked NCHWc convolutions), which
a network pays only at the edges of its runs of blocked operators: timed as whole calls,
the many small operators of the small networks made them come out far too slow.

What a sum of lone operators misses (caches that a network's larger working set
overflows, allocation, the framework's steps between operators) is taken up by a
calibration made once per table: the networks of :data:`CALIBRATION_NETWORKS` are timed
whole and a least-squares line relates the sums to them (:class:`Calibration`).
``benchmarks/latency_model.py`` measures the result against every registered model. The
tables live in ``$LIGHTNETS_CACHE/latency/``, one file per backend, thread count and
machine (CPU model, its flags and the library versions), so a table made elsewhere is
never used here.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import math
import operator
import re
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..cost.kinds import layer_kind
from ..files import write_json
from ..layers import Add, ChannelShuffle
from .auto import machine_identity
from .fold import FusedConvAct, deploy

__all__ = [
    "CALIBRATION_NETWORKS",
    "LATENCY_BACKENDS",
    "Calibration",
    "LatencyPrediction",
    "LatencyTable",
    "Operator",
    "network_operators",
]

LATENCY_BACKENDS = {
    "ort_fp32": "ONNX Runtime fp32, each operator exported to ONNX on its own",
    "folded": "PyTorch eager, BatchNorm folded and Conv-BN-act fused",
}
_PACKAGES = ("torch", "onnxruntime")
_ACTIVATION_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardtanh)
_ACTIVATION_FUNCTIONS = (
    torch.relu,
    torch.nn.functional.relu,
    torch.nn.functional.relu6,
    torch.nn.functional.hardtanh,
)
# Operators timed together with an activation that consumes them alone.
_FUSES_ACTIVATION = (nn.Conv2d, nn.Linear, FusedConvAct, Add)
_ADDS = (operator.add, torch.add)
_TIMED_SECONDS = 0.05  # per operator: enough calls for a stable median of small ones
_MIN_CALLS, _MAX_CALLS = 7, 200
# A whole network, the calibration's truth, is timed as the lowest of a few rounds' medians:
# a shared machine's noise only ever adds time, and one round in a slow spell would pull the
# fit off. The method is stored with the calibration, and one fitted to networks timed
# another way is fitted again.
_NETWORK_ROUNDS, _NETWORK_CALLS = 3, 50
_CALIBRATION_METHOD = f"lowest median of {_NETWORK_ROUNDS} rounds of >= {_NETWORK_CALLS} calls"


class _OperatorTracer(fx.Tracer):
    """Keeps lightnets' fused and named blocks whole: each is one operator of a runtime."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, FusedConvAct | Add | ChannelShuffle) or super().is_leaf_module(
            m, module_qualified_name
        )


@dataclass
class Operator:
    """One operator of a deployed network: what identifies its latency, and a graph that runs
    it alone on inputs of ``input_shapes`` (batch 1)."""

    key: str
    name: str  # the node of the network it was first found at
    kind: str  # as the cost reports group layers ("pointwise", "depthwise", "add" ...)
    module: fx.GraphModule
    input_shapes: tuple[tuple[int, ...], ...]


def _is_activation(module: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(module.get_submodule(str(node.target)), _ACTIVATION_MODULES)
    if node.op == "call_function":
        return node.target in _ACTIVATION_FUNCTIONS
    return node.op == "call_method" and node.target in ("relu", "relu_", "clamp")


def _fuses_activation(module: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(module.get_submodule(str(node.target)), _FUSES_ACTIVATION)
    return node.op == "call_function" and node.target in _ADDS


def _describe(module: fx.GraphModule, node: fx.Node, inputs: list[fx.Node]) -> str:
    """The node's code, with its tensor inputs as their positions: equal texts, equal latency."""

    def argument(value: Any) -> str:
        if isinstance(value, fx.Node):
            return f"%{inputs.index(value)}" if value in inputs else "%inner"
        if isinstance(value, tuple | list):
            return "(" + ",".join(argument(v) for v in value) + ")"
        return repr(value)

    if node.op == "call_module":
        what = re.sub(r"\s+", " ", repr(module.get_submodule(str(node.target))))
    else:
        target = node.target
        what = f"{node.op}:{getattr(target, '__name__', target)}"
    arguments = [argument(a) for a in node.args] + [f"{k}={argument(v)}" for k, v in node.kwargs.items()]
    return f"{what}[{','.join(arguments)}]"


def _kind(module: fx.GraphModule, node: fx.Node) -> str:
    if node.op == "call_module":
        layer = module.get_submodule(str(node.target))
        return layer_kind(layer.conv if isinstance(layer, FusedConvAct) else layer)
    if node.target in _ADDS:
        return "add"
    if node.target is torch.cat:
        return "concat"
    return str(getattr(node.target, "__name__", node.target))


def _tensor_shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(int(d) for d in meta.shape) if meta is not None and hasattr(meta, "shape") else None


def network_operators(model: nn.Module, input_size: tuple[int, int, int] = (3, 224, 224)) -> list[Operator]:
    """The operators of ``model`` deployed, in execution order, each with a graph of its own.

    Views (``flatten``, ``reshape``), identities and nodes that give no tensor are left out:
    runtimes do not compute them."""
    deployed = deploy(model)
    try:
        graph = _OperatorTracer().trace(deployed)
    except Exception as error:  # fx raises many types for untraceable code
        raise ValueError(
            f"the latency model needs a model torch.fx can trace; {type(model).__name__} is not: {error}"
        ) from error
    traced = fx.GraphModule(deployed, graph)
    with torch.inference_mode():
        ShapeProp(traced).propagate(torch.zeros(1, *input_size))
    nodes = [n for n in traced.graph.nodes if n.op in ("call_module", "call_function", "call_method")]
    absorbed: set[fx.Node] = set()
    operators = []
    for node in nodes:
        if node in absorbed or _tensor_shape(node) is None or _is_view(traced, node):
            continue
        group = [node]
        users = list(node.users)
        if _fuses_activation(traced, node) and len(users) == 1 and _is_activation(traced, users[0]):
            group.append(users[0])
            absorbed.add(users[0])
        operators.append(_operator(traced, group))
    return operators


def _is_view(module: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(module.get_submodule(str(node.target)), nn.Identity | nn.Flatten | nn.Dropout)
    if node.op == "call_method":
        return node.target in ("view", "reshape", "flatten", "size", "unflatten")
    return node.target in (torch.flatten, torch.reshape, operator.getitem)


def _operator(traced: fx.GraphModule, group: list[fx.Node]) -> Operator:
    inputs: list[fx.Node] = []
    for node in group:
        for source in node.all_input_nodes:
            if source not in group and source not in inputs:
                inputs.append(source)
    graph = fx.Graph()
    mapping: dict[fx.Node, fx.Node] = {}
    for index, source in enumerate(inputs):
        mapping[source] = graph.placeholder(f"input{index}")
    for node in group:
        mapping[node] = graph.node_copy(node, lambda n: mapping[n])
    graph.output(mapping[group[-1]])
    shapes = tuple(_tensor_shape(source) or () for source in inputs)
    text = " ".join(_describe(traced, node, inputs) for node in group)
    key = f"{text} on {' '.join('x'.join(map(str, s)) for s in shapes)}"
    return Operator(key, group[0].name, _kind(traced, group[0]), fx.GraphModule(traced, graph), shapes)


@dataclass(frozen=True)
class Calibration:
    """How the sums of a table relate to whole networks on this machine, fitted by least
    squares on :data:`CALIBRATION_NETWORKS`: measured = ``scale`` x (the operators' sum) +
    ``per_operator`` x (their number) + ``constant``."""

    scale: float
    per_operator: float
    constant: float
    median_error: float  # on the calibration networks themselves, as a fraction

    def apply(self, total_ms: float, count: int) -> float:
        return self.scale * total_ms + self.per_operator * count + self.constant

    @classmethod
    def fit(cls, rows: Sequence[tuple[float, int, float]], overhead_ms: float | None = None) -> Calibration:
        """Fit to (operators' sum, number of operators, measured ms) rows by least squares
        with every coefficient non-negative: none can be negative on a real machine, and an
        unconstrained fit can give the constant a negative value that turns every network
        smaller than the calibration ones into a prediction of zero. With three coefficients
        the constrained optimum is the best unconstrained fit on one of the seven subsets
        of them whose coefficients all come out non-negative (written here: SciPy's nnls
        would be the only use of SciPy). With ``overhead_ms``, the plain sum (scale 1, the
        runtime's cost per call as the constant) is kept instead when it has the smaller
        median relative error on the rows: the fit minimises squared milliseconds, which
        the largest networks dominate."""
        design = np.array([[total, count, 1.0] for total, count, _ in rows])
        measured = np.array([ms for _, _, ms in rows])
        best: tuple[float, np.ndarray] | None = None
        for subset in itertools.chain.from_iterable(itertools.combinations(range(3), k) for k in (1, 2, 3)):
            columns = list(subset)
            solution, *_ = np.linalg.lstsq(design[:, columns], measured, rcond=None)
            if (solution < 0).any():
                continue
            coefficients = np.zeros(3)
            coefficients[columns] = solution
            residual = float(np.sum((design @ coefficients - measured) ** 2))
            if best is None or residual < best[0]:
                best = (residual, coefficients)
        assert best is not None  # the constant alone is non-negative for positive timings
        candidates = [best[1]] + ([np.array([1.0, 0.0, overhead_ms])] if overhead_ms is not None else [])
        scored = [(float(np.median(np.abs(design @ c / measured - 1))), c) for c in candidates]
        error, coefficients = min(scored, key=lambda pair: pair[0])
        scale, per_operator, constant = (float(c) for c in coefficients)
        return cls(scale, per_operator, constant, error)


@dataclass
class LatencyPrediction:
    """A network's predicted batch-1 latency: per operator of the network its latency in the
    table, the runtime's fixed cost per call, and the table's calibration if it has one."""

    backend: str
    threads: int
    overhead_ms: float
    operators: list[tuple[str, str, float]] = field(default_factory=list)  # (name, kind, ms)
    calibration: Calibration | None = None

    @property
    def raw_ms(self) -> float:
        """The operators' sum and the cost of one call, uncalibrated."""
        return self.overhead_ms + sum(ms for _, _, ms in self.operators)

    @property
    def latency_ms(self) -> float:
        if self.calibration is None:
            return self.raw_ms
        total = sum(ms for _, _, ms in self.operators)
        return max(self.calibration.apply(total, len(self.operators)), self.overhead_ms)

    def by_kind(self) -> dict[str, float]:
        """The operators' uncalibrated latency summed by kind."""
        totals: dict[str, float] = {}
        for _, kind, ms in self.operators:
            totals[kind] = totals.get(kind, 0.0) + ms
        return totals


# The networks whose whole latency calibrates a table: every family at several widths, at
# input sides other than 224, so the registered models at their own side stay unseen.
CALIBRATION_NETWORKS: tuple[tuple[str, dict[str, Any], int], ...] = (
    ("mobilenet_v1", {"width": 0.5}, 160),
    ("mobilenet_v1", {"width": 1.0}, 128),
    ("mobilenet_v1", {"width": 0.25, "variant": "shallow"}, 192),
    ("mobilenet_v2", {"width": 0.35}, 128),
    ("mobilenet_v2", {"width": 0.75, "expansion": 4.0}, 160),
    ("mobilenet_v2", {"width": 1.4}, 96),
    ("shufflenet_v1", {"groups": 8, "scale": 0.25}, 160),
    ("shufflenet_v1", {"groups": 2, "scale": 1.5}, 128),
    ("shufflenet_v1", {"groups": 4, "scale": 0.5}, 192),
    ("squeezenet1_1", {}, 160),
    ("squeezenet1_0", {"sr": 0.25}, 128),
    ("squeezenet1_1", {"bypass": "simple"}, 192),
)


def _median_ms(run: Callable[[], Any], min_calls: int = _MIN_CALLS) -> float:
    """Median latency of ``run()``: a few warm-up calls, then as many as fit in a short time
    (at least ``min_calls``)."""
    for _ in range(3):
        run()
    start = time.perf_counter()
    run()
    first = time.perf_counter() - start
    calls = min(_MAX_CALLS, max(min_calls, math.ceil(_TIMED_SECONDS / max(first, 1e-6))))
    times = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        run()
        times.append((time.perf_counter_ns() - start) / 1e6)
    return statistics.median(times)


def _inputs(shapes: Iterable[tuple[int, ...]]) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal(shape, dtype=np.float32) for shape in shapes]


def _time_pytorch(module: nn.Module, shapes: tuple[tuple[int, ...], ...], threads: int) -> float:
    tensors = [torch.from_numpy(a) for a in _inputs(shapes)]
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            return _median_ms(lambda: module(*tensors))
    finally:
        torch.set_num_threads(previous)


def _onnx_session(
    module: nn.Module, shapes: tuple[tuple[int, ...], ...], threads: int, folder: Path, profile: bool = False
):
    """An ONNX Runtime session of ``module`` (its file and, with ``profile``, its profile in
    ``folder``) and the feed of random inputs of ``shapes``."""
    import onnxruntime as ort

    from .export import DEFAULT_OPSET
    from .runtime import session_options

    arrays = _inputs(shapes)
    names = [f"input{i}" for i in range(len(arrays))]
    examples = tuple(torch.from_numpy(a) for a in arrays)
    path = folder / "operator.onnx"
    quiet = contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO())
    with warnings.catch_warnings(), quiet[0], quiet[1]:
        warnings.simplefilter("ignore")  # the exporters' deprecation notices and failure dumps
        try:
            # The TorchScript exporter: one operator exports in milliseconds, not seconds.
            torch.onnx.export(
                module, examples, path, dynamo=False, input_names=names, opset_version=DEFAULT_OPSET
            )
        except Exception:  # an operator only the newer exporter lowers (adaptive pooling 5 -> 6)
            program = torch.onnx.export(
                module, examples, dynamo=True, input_names=names, opset_version=DEFAULT_OPSET, verbose=False
            )
            assert program is not None
            program.save(path)
    options = session_options(threads)
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = str(folder / "profile")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session, dict(zip(names, arrays, strict=True))


def _time_onnxruntime(module: nn.Module, shapes: tuple[tuple[int, ...], ...], threads: int) -> float:
    """The median latency of whole calls (the runtime's cost per call included)."""
    with tempfile.TemporaryDirectory() as folder:
        session, feed = _onnx_session(module, shapes, threads, Path(folder))
    return _median_ms(lambda: session.run(None, feed))


# Layout conversions ONNX Runtime puts around an operator that runs in a blocked layout
# (NCHWc on AVX-512 and AVX2): around one operator alone they are paid on every call, in a
# network only where a run of blocked operators begins or ends.
_LAYOUT_NODES = ("ReorderInput", "ReorderOutput")


def _kernel_time_onnxruntime(module: nn.Module, shapes: tuple[tuple[int, ...], ...], threads: int) -> float:
    """The operator's own kernels, from ONNX Runtime's profile: the median time of each node
    over the calls after warm-up, summed over the nodes that are not layout conversions."""
    with tempfile.TemporaryDirectory() as folder:
        session, feed = _onnx_session(module, shapes, threads, Path(folder), profile=True)
        warm, calls = 3, 1 + max(_MIN_CALLS, min(_MAX_CALLS // 4, 25))
        for _ in range(warm + calls):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    durations: dict[str, list[float]] = {}
    for event in events:
        if event.get("cat") == "Node" and str(event.get("name", "")).endswith("_kernel_time"):
            if event.get("args", {}).get("op_name") not in _LAYOUT_NODES:
                durations.setdefault(event["name"], []).append(event["dur"] / 1e3)
    return sum(statistics.median(times[warm:] or times) for times in durations.values())


def _network_ms(name: str, kwargs: dict[str, Any], side: int, backend: str, threads: int) -> float:
    """A registered network's whole batch-1 latency, built and run as ``lightnets bench`` does."""
    from .bench import model_targets, runner

    previous = torch.get_num_threads()  # the runner sets PyTorch's threads for its process
    try:
        with tempfile.TemporaryDirectory() as folder:
            (target,) = model_targets(name, kwargs, backends=[backend], input_size=side, workdir=folder)
            run = runner(target, threads)  # an ONNX file is loaded here, before its folder goes
        (image,) = _inputs([(1, 3, side, side)])
        return min(_median_ms(lambda: run(image), _NETWORK_CALLS) for _ in range(_NETWORK_ROUNDS))
    finally:
        torch.set_num_threads(previous)


class _OneElement(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


class LatencyTable:
    """The latency lookup table of one backend at one thread count on this machine.

    :meth:`predict` times the operators the table does not hold yet (and keeps them), so
    the first network of a kind costs some seconds and later ones almost nothing.
    """

    def __init__(self, backend: str = "ort_fp32", threads: int = 1, path: str | Path | None = None) -> None:
        if backend not in LATENCY_BACKENDS:
            raise ValueError(f"unknown latency backend {backend!r}; expected one of {list(LATENCY_BACKENDS)}")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.backend, self.threads = backend, threads
        self.key = {"backend": backend, "threads": threads, **machine_identity(_PACKAGES)}
        digest = hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()[:12]
        if path is None:
            from ..weights.store import cache_folder

            path = cache_folder("latency") / f"{backend}-{threads}t-{digest}.json"
        self.path = Path(path)
        self.entries: dict[str, float] = {}
        self.overhead_ms: float | None = None
        self.calibration: Calibration | None = None
        self._read()

    def _read(self) -> None:
        try:
            stored = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return  # none yet, or unreadable: measured again
        if not isinstance(stored, dict) or stored.get("key") != self.key:
            return
        entries = stored.get("operators", {})
        if isinstance(entries, dict):
            self.entries = {k: float(v) for k, v in entries.items() if isinstance(v, int | float) and v >= 0}
        overhead = stored.get("overhead_ms")
        self.overhead_ms = float(overhead) if isinstance(overhead, int | float) and overhead >= 0 else None
        try:
            self.calibration = Calibration(**stored["calibration"])
        except (KeyError, TypeError):
            self.calibration = None  # none yet, or not one: calibrated again
        if self.calibration is not None and (
            min(self.calibration.scale, self.calibration.per_operator, self.calibration.constant) < 0
            or stored.get("calibration_method") != _CALIBRATION_METHOD
        ):
            self.calibration = None  # fitted before coefficients were kept non-negative, or to other timings

    def save(self) -> Path:
        calibration = asdict(self.calibration) if self.calibration is not None else None
        stored = {
            "key": self.key,
            "overhead_ms": self.overhead_ms,
            "calibration": calibration,
            "calibration_method": _CALIBRATION_METHOD,
        }
        return write_json(self.path, {**stored, "operators": self.entries})

    def time(self, op: Operator) -> float:
        """The operator's latency in ms without the runtime's cost per call, from the table
        or measured now (not saved)."""
        if op.key not in self.entries:
            shapes, threads = op.input_shapes, self.threads
            if self.backend == "ort_fp32":
                self.entries[op.key] = _kernel_time_onnxruntime(op.module, shapes, threads)
            else:
                self.entries[op.key] = max(_time_pytorch(op.module, shapes, threads) - self.overhead(), 0.0)
        return self.entries[op.key]

    def overhead(self) -> float:
        """The runtime's fixed cost of one call: the latency of a one-element ReLU."""
        if self.overhead_ms is None:
            timer = _time_onnxruntime if self.backend == "ort_fp32" else _time_pytorch
            self.overhead_ms = timer(_OneElement(), ((1, 1),), self.threads)
        return self.overhead_ms

    def missing(self, operators: Iterable[Operator]) -> list[Operator]:
        """The operators not timed yet, each once."""
        seen: dict[str, Operator] = {}
        for op in operators:
            if op.key not in self.entries:
                seen.setdefault(op.key, op)
        return list(seen.values())

    def _sum(self, model: nn.Module, side: int) -> tuple[float, int]:
        operators = network_operators(model, (3, side, side))
        return sum(self.time(op) for op in operators), len(operators)

    def calibrate(
        self,
        networks: Iterable[tuple[str, dict[str, Any], int]] | None = None,
        progress: bool = False,
    ) -> Calibration:
        """Time each of ``networks`` (default :data:`CALIBRATION_NETWORKS`) whole and fit how
        the table's sums relate to it (kept in the table)."""
        from tqdm import tqdm

        from ..zoo import create_model

        rows = []
        chosen = list(CALIBRATION_NETWORKS if networks is None else networks)
        for name, kwargs, side in tqdm(chosen, desc="calibrating the latency model", disable=not progress):
            model = create_model(name, **kwargs).eval()
            total, count = self._sum(model, side)
            rows.append((total, count, _network_ms(name, kwargs, side, self.backend, self.threads)))
        if len(rows) < 4:
            raise ValueError(f"calibrating a latency table needs 4 or more networks, got {len(rows)}")
        self.calibration = Calibration.fit(rows, self.overhead())
        self.save()
        return self.calibration

    def predict(
        self,
        model: nn.Module,
        input_size: tuple[int, int, int] = (3, 224, 224),
        progress: bool = False,
        calibrated: bool = True,
    ) -> LatencyPrediction:
        """Predicted batch-1 latency of ``model`` on ``input_size`` inputs; times and keeps
        the operators the table lacks (and, the first time, calibrates the table)."""
        from tqdm import tqdm

        operators = network_operators(model, input_size)
        new = self.missing(operators)
        overhead = self.overhead()
        for op in tqdm(new, desc=f"timing operators ({self.backend})", unit="op", disable=not progress):
            self.time(op)
        if new:
            self.save()
        if calibrated and self.calibration is None:
            self.calibrate(progress=progress)
        return LatencyPrediction(
            self.backend,
            self.threads,
            overhead,
            [(op.name, op.kind, self.entries[op.key]) for op in operators],
            self.calibration if calibrated else None,
        )
