"""The search space: the four families and the knobs their papers vary, as a table.

Each family lists the values of the builder arguments the papers study (MobileNet v1's
width multiplier and its shallow variant, MobileNetV2's width and expansion factor t,
ShuffleNet's groups g and scale, SqueezeNet's squeeze ratio SR, pct3x3 and bypass (none,
simple, complex: a choice the accuracy curve carries as an offset, since a simple bypass
costs no multiply-adds)); every family is searched at every input side in
:data:`RESOLUTIONS`. A :class:`Candidate` is one point:
``create_model(candidate.model, **candidate.options)`` at ``candidate.resolution`` rebuilds it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..zoo import create_model

SPACE: dict[str, dict[str, tuple[Any, ...]]] = {
    "mobilenet_v1": {"width": (0.25, 0.5, 0.75, 1.0), "variant": ("separable", "shallow")},
    "mobilenet_v2": {"width": (0.35, 0.5, 0.75, 1.0, 1.4), "expansion": (4.0, 6.0)},
    "shufflenet_v1": {"groups": (1, 2, 3, 4, 8), "scale": (0.25, 0.5, 1.0, 1.5, 2.0)},
    "squeezenet1_1": {
        "sr": (0.125, 0.25, 0.5),
        "pct3x3": (0.25, 0.5, 0.75),
        "bypass": (None, "simple", "complex"),
    },
}
RESOLUTIONS = (96, 128, 160, 192, 224)


@dataclass(frozen=True)
class Candidate:
    """One network of the space: a registered model, its builder arguments, an input side."""

    model: str
    kwargs: tuple[tuple[str, Any], ...]
    resolution: int

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.kwargs)

    @property
    def label(self) -> str:
        options = ", ".join(f"{k}={v}" for k, v in self.kwargs)
        return f"{self.model}({options}) @{self.resolution}"

    def build(self, num_classes: int = 1000) -> nn.Module:
        return create_model(self.model, num_classes=num_classes, **self.options).eval()


def candidates(
    families: Iterable[str] | None = None, resolutions: Iterable[int] = RESOLUTIONS
) -> list[Candidate]:
    """Every candidate of ``families`` (default: all four) at every side of ``resolutions``."""
    chosen = list(families) if families is not None else list(SPACE)
    unknown = [f for f in chosen if f not in SPACE]
    if unknown:
        raise ValueError(f"unknown search family {unknown[0]!r}; expected some of {', '.join(SPACE)}")
    sides = sorted(set(resolutions))
    if not sides or any(s < 32 for s in sides):
        raise ValueError(f"resolutions must be input sides of at least 32 pixels, got {sides}")
    found = []
    for family in chosen:
        knobs = SPACE[family]
        for values in itertools.product(*knobs.values()):
            kwargs = tuple((k, v) for k, v in zip(knobs, values, strict=True) if v is not None)
            found += [Candidate(family, kwargs, side) for side in sides]
    return found
