"""Figures people would rather look at than read."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .files import write_figure
from .models import get_entry
from .papers import Comparison

FAMILY_COLOURS = {
    "mobilenet_v1": "tab:blue",
    "mobilenet_v2": "tab:orange",
    "squeezenet": "tab:green",
    "shufflenet_v1": "tab:red",
    "reference": "tab:gray",
}


def accuracy_vs_madds(comparisons: Sequence[Comparison], path: str | Path) -> Path:
    """Reported ImageNet top-1 against measured multiply-adds (log scale), as a PNG.

    Each model appears once, at its full count of multiply-adds, whatever convention
    the paper that reported it used.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display is needed or assumed
    import matplotlib.pyplot as plt

    points: dict[tuple, tuple[Comparison, float]] = {}  # each with its reported top-1
    for c in comparisons:
        f = c.figure
        key = (f.model, tuple(sorted(f.kwargs.items())), f.resolution)
        if f.top1 is not None and key not in points:
            points[key] = (c, f.top1)
    if not points:
        raise ValueError("none of the chosen models has a reported accuracy to plot")
    fig, ax = plt.subplots(figsize=(9, 6), dpi=120)
    labelled: set[str] = set()
    for c, top1 in points.values():
        family = get_entry(c.figure.model).family
        colour = FAMILY_COLOURS.get(family, "tab:gray")
        label = None if family in labelled else family
        labelled.add(family)
        ax.scatter(c.total_madds, top1, color=colour, label=label, zorder=3)
        point = (c.total_madds, top1)
        ax.annotate(c.figure.label, point, fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("multiply-adds, millions (measured by lightnets, log scale)")
    ax.set_ylabel("ImageNet top-1 %, as reported by the papers")
    ax.set_title("Accuracy against computation")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return write_figure(fig, path)
