"""The search's picture: every network that fits, predicted top-1 against the cost, the front drawn."""

from __future__ import annotations

from pathlib import Path

from ..files import write_figure
from .accuracy import paper_family
from .search import COST_UNITS, SearchResult


def plot_front(result: SearchResult, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    families = sorted({paper_family(r.candidate.model) for r in result.fitting})
    for family in families:
        rows = [r for r in result.fitting if paper_family(r.candidate.model) == family]
        ax.plot(
            [r.costs[result.cost] for r in rows],
            [r.predicted_top1 or 0.0 for r in rows],
            "o",
            alpha=0.4,
            label=family,
        )
    front = result.front
    ax.plot(
        [r.costs[result.cost] for r in front],
        [r.predicted_top1 or 0.0 for r in front],
        "k-",
        lw=1,
        label="Pareto front",
    )
    for row in front[-3:]:
        ax.annotate(row.candidate.label, (row.costs[result.cost], row.predicted_top1 or 0.0), fontsize=6)
    trained = [r for r in front if r.proxy_top1 is not None]
    if trained:
        ax.plot([], [], " ", label="proxy top-1 in the table")
    ax.set_xscale("log")
    ax.set_xlabel(f"{result.cost} ({COST_UNITS[result.cost]})")
    ax.set_ylabel("predicted ImageNet top-1 (%)")
    ax.set_title(f"{len(result.fitting)} networks fit, {len(front)} on the front")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return write_figure(fig, path)
