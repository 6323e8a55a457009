"""How every benchmark starts and writes: its command line, and figures written whole.

Scripts run as ``python benchmarks/<name>.py`` import this module from their own folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lightnets.files import atomic_write, write_figure, write_text


def benchmark_parser(doc: str | None) -> argparse.ArgumentParser:
    """The argument parser of a benchmark, its module docstring as the description."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def subplots(*args, **kwargs):
    """``matplotlib.pyplot.subplots`` drawing off-screen (the Agg backend: benchmarks run
    on machines without a display); the figure goes to :func:`save_figure`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save_figure(fig, path: str | Path) -> Path:
    """Lay out ``fig``, write it to ``path`` (temporary file, then rename) and close it."""
    fig.tight_layout()
    return write_figure(fig, path)


def finish_plot(fig, ax, path: str | Path, xlabel: str, ylabel: str | None, title: str) -> Path:
    """Label ``ax``, give it a light grid and a small legend, and save ``fig`` to ``path``."""
    ax.set_xlabel(xlabel)
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def write_csv(rows: list[dict], path: str | Path) -> Path:
    """``rows`` (dicts with the same keys) as a CSV file, written whole."""
    import csv

    path = Path(path)
    with atomic_write(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_markdown(lines: list[str], path: str | Path) -> Path:
    """A result file from its lines, written whole; says where it went."""
    path = write_text(path, "\n".join(lines) + "\n")
    print(f"written {path}")
    return Path(path)


def side_by_side(panels: list, gap: int = 8, height: int | None = None):
    """One picture of ``panels`` (PIL images) left to right on white, ``gap`` pixels
    apart; with ``height``, each panel scaled to it first."""
    from PIL import Image

    if height is not None:
        panels = [p.resize((round(p.width * height / p.height), height)) for p in panels]
    width = sum(p.width for p in panels) + gap * (len(panels) - 1)
    canvas = Image.new("RGB", (width, max(p.height for p in panels)), (255, 255, 255))
    left = 0
    for panel in panels:
        canvas.paste(panel, (left, 0))
        left += panel.width + gap
    return canvas


def markdown_table(rows: list[dict]) -> list[str]:
    """``rows`` (dicts with the same keys) as the lines of a Markdown table, keys as header."""
    header = list(rows[0])
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(str(r[k]) for k in header) + " |" for r in rows),
    ]
