"""Search the space for the networks that fit a budget, and their Pareto front.

Every candidate's costs are computed, not estimated: multiply-adds and parameters by the
analyser (:func:`lightnets.cost.profile`), peak activation memory by its block execution
model (float32 activations, 4 bytes each), batch-1 latency by the latency model of this
machine (:class:`lightnets.deploy.latency.LatencyTable`), each only when a constraint or
the output needs it, in that order of cost, and a candidate is dropped at the first
constraint it breaks. Accuracy is predicted by :class:`~lightnets.search.accuracy.AccuracyModel`.

A search keeps its state in a folder (``out``): each evaluated candidate is appended to
``evaluated.jsonl`` as soon as it is known, and the latency tables keep every operator
timed, so a search killed at any point resumes where it stopped when run again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cost import activation_memory, profile
from ..deploy.latency import LatencyTable
from ..files import append_line
from .accuracy import AccuracyModel, paper_family
from .space import RESOLUTIONS, Candidate, candidates

ACTIVATION_BYTES = 4  # float32, what the runtimes hold
COSTS = ("madds", "params", "peak_memory", "latency_ms")
COST_UNITS = {"madds": "MAdds", "params": "parameters", "peak_memory": "bytes", "latency_ms": "ms"}
OPTION = {
    "madds": "--max-madds",
    "params": "--max-params",
    "peak_memory": "--max-memory",
    "latency_ms": "--max-latency",
}


@dataclass
class Constraints:
    """Upper bounds; None: unconstrained."""

    madds: float | None = None
    params: float | None = None
    peak_memory: float | None = None
    latency_ms: float | None = None

    def __post_init__(self) -> None:
        for name in COSTS:
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{OPTION[name]} must be a positive number, got {value!r}")

    def given(self) -> list[str]:
        return [name for name in COSTS if getattr(self, name) is not None]


@dataclass
class Evaluated:
    """A candidate with its costs (those computed) and its predicted top-1."""

    candidate: Candidate
    costs: dict[str, float] = field(default_factory=dict)
    predicted_top1: float | None = None
    extrapolated: bool = False
    proxy_top1: float | None = None  # measured by a proxy training, when the search ran one

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.candidate.model,
            "kwargs": self.candidate.options,
            "resolution": self.candidate.resolution,
            "madds": self.costs.get("madds"),
            "params": self.costs.get("params"),
            "peak_memory": self.costs.get("peak_memory"),
            "latency_ms": self.costs.get("latency_ms"),
            "predicted_top1": self.predicted_top1,
            "extrapolated": self.extrapolated,
            "proxy_top1": self.proxy_top1,
        }


class CostEvaluator:
    """Computes a candidate's costs on demand, in order of expense, keeping every result."""

    def __init__(
        self,
        backend: str = "ort_fp32",
        threads: int = 1,
        state: Path | None = None,
        show_calibration: bool = False,
    ) -> None:
        self.backend, self.threads, self.show_calibration = backend, threads, show_calibration
        self.table: LatencyTable | None = None
        self.state = state / "evaluated.jsonl" if state is not None else None
        self.known: dict[str, dict[str, float]] = {}
        if self.state is not None and self.state.is_file():
            for line in self.state.read_text().splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # the line a kill cut short
                if isinstance(record, dict) and isinstance(record.get("costs"), dict):
                    self.known.setdefault(str(record.get("key")), {}).update(record["costs"])

    def _key(self, candidate: Candidate) -> str:
        return f"{candidate.label} [{self.backend}, {self.threads} thread(s)]"

    def cost(self, candidate: Candidate, name: str) -> float:
        known = self.known.setdefault(self._key(candidate), {})
        if name not in known:
            known.update(self._compute(candidate, name))
            if self.state is not None:
                append_line(self.state, json.dumps({"key": self._key(candidate), "costs": known}), fsync=True)
        return known[name]

    def _compute(self, candidate: Candidate, name: str) -> dict[str, float]:
        size = (3, candidate.resolution, candidate.resolution)
        model = candidate.build()
        if name in ("madds", "params"):
            report = profile(model, size)
            return {"madds": report.madds, "params": report.params}
        if name == "peak_memory":
            memory = activation_memory(model, size, execution="block", bytes_per_element=ACTIVATION_BYTES)
            return {"peak_memory": memory.peak_bytes}
        if self.table is None:
            self.table = LatencyTable(self.backend, self.threads)
        if self.table.calibration is None:  # once per machine: a minute, worth a progress bar
            self.table.calibrate(progress=self.show_calibration)
        return {"latency_ms": self.table.predict(model, size).latency_ms}


def pareto_front(rows: Sequence[Evaluated], cost: str) -> list[Evaluated]:
    """The rows no other row beats on both predicted top-1 (higher) and ``cost`` (lower),
    cheapest first."""
    ordered = sorted(rows, key=lambda r: (r.costs[cost], -(r.predicted_top1 or 0.0)))
    front: list[Evaluated] = []
    for row in ordered:
        if not front or (row.predicted_top1 or 0.0) > (front[-1].predicted_top1 or 0.0):
            front.append(row)
    return front


def _format(cost: str, value: float) -> str:
    if cost == "latency_ms":
        return f"{value:.2f} ms"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g}{unit}{'B' if cost == 'peak_memory' else ''}"
    return f"{value:g}"


SMALLEST = {
    "madds": "the fewest MAdds",
    "params": "the fewest parameters",
    "peak_memory": "the least activation memory",
    "latency_ms": "the fastest",
}


def _nothing_fits(pool: list[Candidate], evaluator: CostEvaluator, constraints: Constraints) -> ValueError:
    """The error for bounds nothing meets, naming the cheapest network by each bounded cost:
    over the whole space for the computed costs, and (timing being slow) among the networks
    within the other bounds for latency."""
    given = constraints.given()
    parts = []
    for name in (n for n in given if n != "latency_ms"):
        cheapest = min(pool, key=lambda c: evaluator.cost(c, name))
        value = evaluator.cost(cheapest, name)
        alone = "" if value <= getattr(constraints, name) else ", above its bound on its own"
        parts.append(f"{SMALLEST[name]}: {cheapest.label}, {_format(name, value)}{alone}")
    if "latency_ms" in given:
        others = [n for n in given if n != "latency_ms"]
        within = [c for c in pool if all(evaluator.cost(c, n) <= getattr(constraints, n) for n in others)]
        if within:
            fastest = min(within, key=lambda c: evaluator.cost(c, "latency_ms"))
            scope = f"of the {len(within)} within the other bounds, " if others else ""
            latency = _format("latency_ms", evaluator.cost(fastest, "latency_ms"))
            parts.append(f"{scope}the fastest: {fastest.label}, {latency}")
    bounds = " and ".join(f"{OPTION[n]} {_format(n, getattr(constraints, n))}" for n in given)
    return ValueError(f"no network in the search space meets {bounds}; " + "; ".join(parts))


@dataclass
class SearchResult:
    cost: str  # the cost the front is drawn against
    fitting: list[Evaluated]
    front: list[Evaluated]
    space_size: int
    accuracy: AccuracyModel


def search(
    constraints: Constraints,
    cost: str | None = None,
    families: Iterable[str] | None = None,
    resolutions: Iterable[int] = RESOLUTIONS,
    backend: str = "ort_fp32",
    threads: int = 1,
    out: str | Path | None = None,
    progress: Callable[[Iterable[Candidate], int], Iterable[Candidate]] | None = None,
    show_calibration: bool = False,
) -> SearchResult:
    """The candidates that meet ``constraints`` and their Pareto front of predicted top-1
    against ``cost`` (default: the first constrained of latency, MAdds, parameters, memory;
    MAdds if none is). ``out`` keeps the search's state so that it resumes. ``progress``
    wraps the walk over the space (a progress bar); ``show_calibration`` shows one while the
    latency table is calibrated, the first time this machine is searched."""
    given = constraints.given()
    cost = cost or next((c for c in ("latency_ms", "madds", "params", "peak_memory") if c in given), "madds")
    if cost not in COSTS:
        raise ValueError(f"unknown cost {cost!r}; expected one of {COSTS}")
    pool = candidates(families, resolutions)
    evaluator = CostEvaluator(backend, threads, Path(out) if out is not None else None, show_calibration)
    accuracy = AccuracyModel.from_papers()
    # Cheap costs first: latency is timed only for candidates that passed the others.
    order = sorted(set(given) | {cost, "madds", "params"}, key=COSTS.index)
    fitting = []
    for candidate in progress(pool, len(pool)) if progress else pool:
        if all(evaluator.cost(candidate, n) <= getattr(constraints, n) for n in order if n in given):
            fitting.append(candidate)
    if not fitting:
        raise _nothing_fits(pool, evaluator, constraints)
    rows = []
    for candidate in fitting:
        costs = {n: evaluator.cost(candidate, n) for n in order}
        top1, extrapolated = accuracy.predict(
            paper_family(candidate.model), int(costs["madds"]), candidate.options
        )
        rows.append(Evaluated(candidate, costs, top1, extrapolated))
    front = pareto_front(rows, cost)
    for row in front:  # the output gives every cost of the front
        row.costs.update({n: evaluator.cost(row.candidate, n) for n in COSTS})
    return SearchResult(cost, rows, front, len(pool), accuracy)
