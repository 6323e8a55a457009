"""What the compression benchmarks share: their command line, and the plot of top-1
before and after recovery.

Scripts run as ``python benchmarks/<name>.py`` import this module from their own folder.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from _output import benchmark_parser, finish_plot, subplots
from _paths import use_shared_weights


def recovery_parser(doc: str | None, cases: dict) -> argparse.ArgumentParser:
    """A benchmark's parser with the options every compression benchmark takes."""
    parser = benchmark_parser(doc)
    parser.add_argument("--recovery-steps", type=int, default=200, help="distillation steps (200)")
    parser.add_argument("--models", nargs="+", choices=sorted(cases), default=list(cases))
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def measure_cases(
    args: argparse.Namespace, cases: dict, measure: Callable[..., list[dict]], title: str
) -> tuple[list[dict], list[str]]:
    """The rows of ``measure(label, *cases[label], args, folder)`` for every chosen case,
    on the shared weights and two threads, in one temporary folder (teacher caches, files);
    and the report's first lines: ``title``, the machine, the load before and after, the minutes."""
    from train_common import load_average, machine_header

    load_before = load_average()
    started = time.time()
    use_shared_weights()
    torch.set_num_threads(2)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="lightnets-compress-") as folder:
        for label in args.models:
            rows += measure(label, *cases[label], args, Path(folder))
    header = [
        machine_header(title).rstrip(),
        f"- Load average (1, 5, 15 min) before -> after: {load_before} -> {load_average()}; "
        f"{(time.time() - started) / 60:.0f} minutes",
    ]
    return rows, header


def timed_recovery(
    model, original, paths, transform, args: argparse.Namespace, cache: Path, desc: str
) -> float:
    """Distil ``original`` into ``model`` for ``args.recovery_steps`` steps (``lightnets
    compress --recovery-data``'s recovery), leave it in eval mode; the seconds it took."""
    from lightnets.compress.recovery import recover

    start = time.perf_counter()
    recover(model, original, paths, transform, args.recovery_steps, cache_dir=cache, progress=not args.quiet,
            desc=desc)  # fmt: skip
    model.eval()
    return time.perf_counter() - start


def plot_recovery(
    rows: list[dict], group: str, x: Callable[[dict], float], point: Callable[[dict], str],
    xlabel: str, title: str, path: Path,
) -> None:  # fmt: skip
    """Top-1 after recovery (solid) and before (dotted) against ``x`` of each row, a line
    per value of ``rows[...][group]``, each point labelled ``point(row)``."""
    fig, ax = subplots(figsize=(6.5, 4))
    for label in dict.fromkeys(r[group] for r in rows):
        mine = [r for r in rows if r[group] == label]
        xs = [x(r) for r in mine]
        line = ax.plot(xs, [r["top1 after recovery"] for r in mine], "o-", label=f"{label}, recovered")
        ax.plot(xs, [r["top1 before recovery"] for r in mine], "x:", color=line[0].get_color(),
                label=f"{label}, before recovery")  # fmt: skip
        for r, at in zip(mine, xs, strict=True):
            ax.annotate(point(r), (at, r["top1 after recovery"]), textcoords="offset points", xytext=(4, 4),
                        fontsize=8)  # fmt: skip
    finish_plot(fig, ax, path, xlabel, "top-1 on the 500-image ImageNet sample (%)", title)
