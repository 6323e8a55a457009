"""What ``lightnets bench`` writes: a CSV, a Markdown table and latency against MAdds."""

from __future__ import annotations

import csv
import os
import platform
from collections.abc import Sequence
from pathlib import Path

from ..cpu import cpu_model as cpu_name
from ..files import atomic_write, write_figure, write_text
from .bench import BACKENDS, FOREIGN_BACKENDS, Measurement, speedup_per_madds_cut

__all__ = ["cpu_name", "machine_description", "markdown_table", "plot_latency_vs_madds", "write_report"]

DESCRIPTIONS = {**BACKENDS, **FOREIGN_BACKENDS}


def machine_description() -> str:
    import onnxruntime
    import torch

    try:  # other work on the same cores moves every figure: say how busy the machine was
        load = "load average (1, 5, 15 min) " + ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = "load average unknown"
    return (
        f"{cpu_name()}, {torch.get_num_threads()} threads available; {platform.system()} {platform.machine()}; "
        f"Python {platform.python_version()}, PyTorch {torch.__version__}, ONNX Runtime {onnxruntime.__version__}; "
        f"{load} when the report was written"
    )


def _floor_ms(m: Measurement, rates: dict[int, float]) -> float | None:
    rate = rates.get(m.threads)
    return m.madds / rate * 1e3 if rate else None


def markdown_table(measurements: Sequence[Measurement], rates: dict[int, float]) -> str:
    """One row per measurement, with its MAdds floor and its ratio to it."""
    lines = [
        "| model | backend | threads | MAdds (M) | latency median (ms) | p90 (ms) | floor (ms) | "
        "x floor | batch | images/s | peak memory (MB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in measurements:
        floor = _floor_ms(m, rates)
        memory = "-" if m.peak_memory_mb is None else f"{m.peak_memory_mb:.1f}"
        lines.append(
            f"| {m.label} | {m.backend} | {m.threads} | {m.madds / 1e6:.1f} | {m.latency_ms:.2f} | "
            f"{m.latency_p90_ms:.2f} | {'-' if floor is None else f'{floor:.2f}'} | "
            f"{'-' if floor is None else f'{m.latency_ms / floor:.2f}'} | {m.batch} | {m.throughput:.1f} | "
            f"{memory} |"
        )
    return "\n".join(lines)


def _groups(measurements: Sequence[Measurement]) -> dict[tuple[str, int], list[Measurement]]:
    groups: dict[tuple[str, int], list[Measurement]] = {}
    for m in measurements:
        groups.setdefault((m.backend, m.threads), []).append(m)
    return groups


def speedup_lines(measurements: Sequence[Measurement]) -> list[str]:
    """The ShuffleNet paper's question for this CPU: what does a 4x cut in MAdds buy?"""
    lines = []
    for (backend, threads), group in _groups(measurements).items():
        speedup = speedup_per_madds_cut(group)
        if speedup is not None and len(group) >= 3:
            lines.append(
                f"- {backend}, {threads} thread(s): a 4x cut in MAdds gives a {speedup:.2f}x speed-up "
                f"(least-squares fit of log latency on log MAdds over {len(group)} models)"
            )
    return lines


# The runtimes ``--backend auto`` chooses among, as bench backends.
AUTO_CONTENDERS = {"folded": "pytorch", "ort_fp32": "onnxruntime", "litert_fp32": "litert"}


def auto_lines(measurements: Sequence[Measurement]) -> list[str]:
    """What ``--backend auto`` would run for each model and thread count (the fastest fp32
    runtime measured), and its speed-up over ONNX Runtime alone."""
    by: dict[tuple[str, int], dict[str, float]] = {}
    for m in measurements:
        if m.backend in AUTO_CONTENDERS:
            by.setdefault((m.label, m.threads), {})[m.backend] = m.latency_ms
    lines = []
    for (label, threads), latency in by.items():
        if len(latency) < 2 or "ort_fp32" not in latency:
            continue
        best = min(latency, key=latency.__getitem__)
        lines.append(
            f"- {label}, {threads} thread(s): auto runs {AUTO_CONTENDERS[best]} ({latency[best]:.2f} ms), "
            f"{latency['ort_fp32'] / latency[best]:.2f}x the speed of ONNX Runtime alone"
        )
    return lines


def plot_latency_vs_madds(measurements: Sequence[Measurement], rates: dict[int, float], path: Path) -> None:
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    thread_counts = sorted({m.threads for m in measurements})
    fig, axes = plt.subplots(1, len(thread_counts), figsize=(6.5 * len(thread_counts), 5), squeeze=False)
    backends = list(dict.fromkeys(m.backend for m in measurements))
    cmap = plt.get_cmap("tab10" if len(backends) <= 10 else "tab20")
    palette = [cmap(i) for i in range(cmap.N)]  # the map's listed colours, as RGBA
    colours = {b: palette[i % len(palette)] for i, b in enumerate(backends)}  # one per backend
    for ax, threads in zip(axes[0], thread_counts, strict=True):
        subset = [m for m in measurements if m.threads == threads]
        for (backend, _), group in _groups(subset).items():
            madds = np.array([m.madds / 1e6 for m in group])
            latency = np.array([m.latency_ms for m in group])
            (points,) = ax.plot(madds, latency, "o", label=backend, alpha=0.8, color=colours[backend])
            if len(set(madds)) >= 3:  # the trend: a power law fitted in log-log space
                slope, intercept = np.polyfit(np.log(madds), np.log(latency), 1)
                span = np.array([madds.min(), madds.max()])
                ax.plot(span, np.exp(intercept) * span**slope, "-", color=points.get_color(), alpha=0.4)
        if threads in rates:
            every_madds = sorted({m.madds for m in subset})
            ax.plot(
                [s / 1e6 for s in every_madds],
                [s / rates[threads] * 1e3 for s in every_madds],
                "k--",
                label=f"fp32 floor: MAdds / {rates[threads] / 1e9:.0f} G/s",
            )
        labelled = set()
        for m in subset:
            if m.label not in labelled:
                labelled.add(m.label)
                ax.annotate(m.label, (m.madds / 1e6, m.latency_ms), fontsize=7, alpha=0.7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("multiply-adds (M)")
        ax.set_ylabel("latency, batch 1, median (ms)")
        ax.set_title(f"{threads} thread(s)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    write_figure(fig, path, dpi=120)


def write_report(
    measurements: Sequence[Measurement],
    rates: dict[int, float],
    out: str | Path,
    title: str = "lightnets bench",
    command: str | None = None,
    name: str = "bench",
    notes: Sequence[str] = (),
) -> list[Path]:
    """Write ``{name}.csv``, ``{name}.md`` (``notes`` after the table) and ``{name}.png``
    into ``out``; return their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path, png_path = (out / f"{name}{suffix}" for suffix in (".csv", ".md", ".png"))
    with atomic_write(csv_path, "w", newline="") as handle:
        rows = [m.to_dict() | {"floor_ms": _floor_ms(m, rates)} for m in measurements]
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    order = list(DESCRIPTIONS)
    backends = sorted(
        {m.backend for m in measurements}, key=lambda b: order.index(b) if b in order else len(order)
    )
    text = [f"# {title}", "", f"Machine: {machine_description()}."]
    if command:
        text.append(f"Command: `{command}`.")
    text += [
        "",
        "Measured GEMM rate (fp32 matrix product, best of 20): "
        + ", ".join(f"{n} thread(s) {r / 1e9:.1f} G multiply-adds/s" for n, r in sorted(rates.items()))
        + ". The floor of a model is its MAdds at that rate.",
        "",
        "Backends: " + "; ".join(f"`{b}` {DESCRIPTIONS.get(b, '(peer)')}" for b in backends) + ".",
        "",
        markdown_table(measurements, rates),
        "",
        *speedup_lines(measurements),
        *auto_lines(measurements),
        *notes,
    ]
    write_text(md_path, "\n".join(text) + "\n")
    plot_latency_vs_madds(measurements, rates, png_path)
    return [csv_path, md_path, png_path]
