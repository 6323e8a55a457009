"""Predicted ImageNet top-1 of a candidate: a curve fitted to the accuracies the papers report.

The four papers report the ImageNet top-1 of 19 distinct configurations of these families
(MobileNet v1's width and resolution tables and ablations, MobileNetV2's Table 4,
ShuffleNet's Tables 2, 3 and 5, SqueezeNet's Table 1; :data:`lightnets.papers.FIGURES`).
Within a family, accuracy grows with compute and saturates, so the model is

    top-1 = a_family + b * log2(MAdds) + c * log2(MAdds)^2

fitted by least squares over all of them (one intercept per family, the curve shared);
MAdds are lightnets' own count of each configuration. Numeric knobs (width, resolution,
groups, SR ...) enter only through their multiply-adds. A categorical knob the papers
ablate (SqueezeNet's bypass, MobileNet v1's shallow and full-convolution variants,
ShuffleNet without its shuffle) also shifts its family's curve by an offset, one column
of the fit per value, fitted to that ablation's reported top-1: without it a simple
bypass, which costs no multiply-adds, would be predicted equal to none. A family's
offsets are the papers' and are taken to carry over to its other configurations
(SqueezeNet 1.0's bypass table to SqueezeNet 1.1); the proxy trainings of
``lightnets search --train`` measure them instead. Below the smallest network the papers
report, the prediction follows the curve's tangent there; above the largest it is held
(either way it is marked ``extrapolated``).
:meth:`AccuracyModel.leave_one_out` tells how well the fit ranks configurations it did
not see (Spearman's rank correlation).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..cost import profile
from ..models import get_entry
from ..papers import FIGURES
from ..zoo import create_model


def paper_family(model: str) -> str:
    """The family whose curve a registered model follows (SqueezeNet 1.0 and 1.1 are one)."""
    return get_entry(model).family


Design = tuple[tuple[str, Any], ...]  # a configuration's categorical knobs, (name, value)


def categorical(options: Mapping[str, Any]) -> Design:
    """The knobs of ``options`` that are choices rather than numbers (strings and booleans)."""
    return tuple(sorted((k, v) for k, v in options.items() if isinstance(v, str | bool)))


@dataclass(frozen=True)
class AccuracyPoint:
    label: str
    family: str
    madds: int
    top1: float  # ImageNet top-1 %, as reported
    design: Design = ()  # its categorical knobs: each (name, value) gets an offset


@functools.cache  # the papers do not change while a program runs; counting them takes seconds
def _paper_points() -> tuple[AccuracyPoint, ...]:
    points: dict[tuple, AccuracyPoint] = {}
    for figure in FIGURES:
        family = paper_family(figure.model)
        if figure.top1 is None or family not in (
            "mobilenet_v1",
            "mobilenet_v2",
            "shufflenet_v1",
            "squeezenet",
        ):
            continue
        key = (figure.model, tuple(sorted(figure.kwargs.items())), figure.resolution)
        if key in points:
            continue  # one configuration reported twice (SqueezeNet in two papers' tables)
        model = create_model(figure.model, **figure.kwargs)
        madds = profile(model, (3, figure.resolution, figure.resolution)).madds
        label = f"{figure.label} ({figure.source})"
        points[key] = AccuracyPoint(label, family, madds, figure.top1, categorical(figure.kwargs))
    return tuple(points.values())


def paper_points() -> list[AccuracyPoint]:
    """Every distinct configuration of the four families whose ImageNet top-1 a paper reports."""
    return list(_paper_points())


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (ties share their mean rank). Written here because it is
    five lines of NumPy, and SciPy is not otherwise a dependency."""

    def ranks(series: Sequence[float]) -> np.ndarray:
        values = np.asarray(series, dtype=float)
        order = values.argsort(kind="stable")
        rank = np.empty(len(values))
        rank[order] = np.arange(len(values), dtype=float)
        for value in np.unique(values):
            rank[values == value] = rank[values == value].mean()
        return rank

    if len(a) != len(b) or len(a) < 2:
        raise ValueError(
            f"a rank correlation needs two equal-length series of 2+ values, got {len(a)} and {len(b)}"
        )
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


class AccuracyModel:
    """The fitted curve: :meth:`predict` gives (top-1 %, extrapolated) for a family, its
    MAdds and its builder arguments."""

    def __init__(self, points: Sequence[AccuracyPoint]) -> None:
        self.points = list(points)
        self.families = sorted({p.family for p in self.points})
        self.offsets = sorted({(p.family, *knob) for p in self.points for knob in p.design}, key=str)
        if len(self.points) < len(self.families) + len(self.offsets) + 2:
            raise ValueError(
                f"too few accuracies to fit ({len(self.points)}) for {len(self.families)} families "
                f"and {len(self.offsets)} design offsets"
            )
        x = np.log2([p.madds for p in self.points])
        self.low, self.high = float(x.min()), float(x.max())
        design = self._design([(p.family, p.design) for p in self.points], x)
        self.coefficients, *_ = np.linalg.lstsq(design, np.array([p.top1 for p in self.points]), rcond=None)

    @classmethod
    def from_papers(cls) -> AccuracyModel:
        return cls(paper_points())

    def _design(self, configurations: Sequence[tuple[str, Design]], x: np.ndarray) -> np.ndarray:
        """The fit's columns: an intercept per family, an offset per categorical knob value
        the papers report (a knob value they do not report gets none), log2 MAdds and its square."""
        intercepts = np.array([[float(f == g) for g in self.families] for f, _ in configurations])
        offsets = np.array(
            [[float(o[0] == f and o[1:] in design) for o in self.offsets] for f, design in configurations]
        ).reshape(len(configurations), len(self.offsets))
        return np.column_stack([intercepts, offsets, x, x**2])

    def predict(
        self, family: str, madds: int, options: Mapping[str, Any] | None = None
    ) -> tuple[float, bool]:
        if family not in self.families:
            raise ValueError(f"no reported accuracy of the {family} family to predict from")
        x = math.log2(max(madds, 1))
        configuration = (family, categorical(options or {}))

        def curve(at: float) -> float:
            return float((self._design([configuration], np.array([at])) @ self.coefficients)[0])

        if x < self.low:  # below the papers' smallest network: along the curve's tangent there
            slope = max(float(self.coefficients[-2] + 2 * self.coefficients[-1] * self.low), 0.0)
            return curve(self.low) + slope * (x - self.low), True
        if x > self.high:
            return curve(self.high), True
        return curve(x), False

    def leave_one_out(self) -> list[tuple[AccuracyPoint, float]]:
        """Each point predicted by the curve fitted to the others. A point is skipped when no
        other point of its family is free of categorical knobs: without one the family's
        intercept cannot be told from its offsets. A point that is the only one of a knob
        value is predicted without that value's offset, as the search would predict a value
        no paper reports."""
        out = []
        for index, point in enumerate(self.points):
            rest = [p for i, p in enumerate(self.points) if i != index]
            if not any(p.family == point.family and not p.design for p in rest):
                continue
            out.append((point, AccuracyModel(rest).predict(point.family, point.madds, dict(point.design))[0]))
        return out
