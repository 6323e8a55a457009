"""Figures people would rather look at than read."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .papers import Comparison

FAMILY_COLOURS = {
    "mobilenet_v1": "tab:blue",
    "mobilenet_v2": "tab:orange",
    "squeezenet1_0": "tab:green",
    "squeezenet1_1": "tab:green",
    "shufflenet_v1": "tab:red",
}


def accuracy_vs_madds(comparisons: Sequence[Comparison], path: str | Path) -> Path:
    """Reported ImageNet top-1 against measured multiply-adds (log scale), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display is needed or assumed
    import matplotlib.pyplot as plt

    points = [c for c in comparisons if c.figure.top1 is not None]
    if not points:
        raise ValueError("none of the chosen models has a reported accuracy to plot")
    fig, ax = plt.subplots(figsize=(9, 6), dpi=120)
    labelled: set[str] = set()
    for c in points:
        family = c.figure.model
        colour = FAMILY_COLOURS.get(family, "tab:gray")
        legend = family if family in FAMILY_COLOURS else "reference models"
        ax.scatter(
            c.madds, c.figure.top1, color=colour, label=None if legend in labelled else legend, zorder=3
        )
        labelled.add(legend)
        ax.annotate(
            c.figure.label, (c.madds, c.figure.top1), fontsize=7, xytext=(4, 3), textcoords="offset points"
        )
    ax.set_xscale("log")
    ax.set_xlabel("multiply-adds, millions (measured by lightnets, log scale)")
    ax.set_ylabel("ImageNet top-1 %, as reported by the papers")
    ax.set_title("Accuracy against computation")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
