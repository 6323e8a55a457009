"""MobileNet v1's width x resolution grid (Tables 6 and 7, Figure 4) on the proxy protocol.

    LIGHTNETS_CACHE=/tmp/lightnets_bench_cache python benchmarks/study_width_resolution.py \\
        [--widths 1.0 0.75 0.5 0.25] [--resolutions 112 96 80 64] [--steps 300] [--seeds 2]
        [--seed-from 0] [--rescore]

The paper trains MobileNet v1 at four widths (1.0, 0.75, 0.5, 0.25) and four input sizes
(224, 192, 160, 128) and finds that accuracy falls off smoothly as either shrinks
(Tables 6 and 7), and that the sixteen networks lie on a line when top-1 is plotted
against the logarithm of their multiply-adds (Figure 4), with a drop at width 0.25.
Here the same grid runs at half the resolutions (112, 96, 80, 64: the paper's ratios to
its largest size) with ``benchmarks/study_claims.py``'s protocol (the same command, data,
recipe and scoring), except that every network trains the same number of steps: the
grid's networks differ up to 14x in cost, and in equal time the cheap ones would train
for many more epochs, which the paper's do not.

Every network is scored at its own input side: the top-1 of its EMA weights on the
val split, resized to side / 0.875 and centre-cropped to the side. ``lightnets train``'s
own validation runs at a larger side where its default test-time zoom rounds up to a
multiple of 32 (96 px for an 80-px network), which after these short trainings cost the
80-px networks up to 7 points and would bend the grid; the trainer's figure is kept in
the CSV (``trainer_val_top1``). ``--rescore`` scores the rows already in the CSV again
from their run folders.

Verdicts, by the claims' rule (held beyond two standard errors of the difference):
each width against the next narrower at the largest resolution (Table 6) and each
resolution against the next smaller at width 1.0 (Table 7). Figure 4's line is fitted to
the sixteen means (top-1 against log10 multiply-adds: slope in points per tenfold and
R^2), beside the same fit to the paper's seven published points.

Rows are kept in ``results/study_width_resolution.csv`` across invocations; ``.md`` and
``.png`` are rewritten from all of them.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _output import finish_plot, subplots, write_csv  # noqa: E402
from _paths import IMAGENETTE, RESULTS  # noqa: E402
from study_claims import FIELDS, proxy_parser, run_folder, train, verdict  # noqa: E402

from lightnets import create_model, profile  # noqa: E402
from lightnets.classify import evaluate  # noqa: E402
from lightnets.data.transforms import tf_crop  # noqa: E402
from lightnets.deploy.bench_report import machine_description  # noqa: E402
from lightnets.files import write_text  # noqa: E402
from lightnets.papers import FIGURES  # noqa: E402
from lightnets.zoo import transform_of  # noqa: E402

CLAIM = "mobilenet_v1_width_resolution"
GRID_FIELDS = [*FIELDS, "trainer_val_top1"]
# The paper's published points (Tables 6 and 7): (MAdds in millions at the paper's sides, top-1 %).
PAPER_POINTS = [
    (float(f.madds), f.top1)
    for f in FIGURES
    if f.source in ("MobileNet v1 Table 6/8", "MobileNet v1 Table 6", "MobileNet v1 Table 7")
    and f.madds is not None
    and f.top1 is not None
]


def design(width: float, resolution: int) -> str:
    return f"{width:g}-{resolution}"


def parse_design(name: str) -> tuple[float, int]:
    width, resolution = name.split("-")
    return float(width), int(resolution)


def own_side_top1(folder: Path, side: int) -> float:
    """Top-1 % of a run's EMA weights on the val split at the side it trained at."""
    model = create_model("mobilenet_v1", weights=folder / "model_ema.safetensors").eval()
    transform = dataclasses.replace(transform_of(model), size=side, resize=tf_crop(side))
    return round(evaluate(model, IMAGENETTE / "val", transform=transform, progress=False).top1, 2)


def rescore(row: dict, args) -> dict:
    if not row.get("trainer_val_top1"):
        row["trainer_val_top1"] = row["val_top1"]
    side = parse_design(row["design"])[1]
    row["val_top1"] = own_side_top1(run_folder(Path(args.runs), CLAIM, row["design"], row["seed"]), side)
    return row


def log_fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(slope in top-1 points per tenfold multiply-adds, R^2) of top-1 against log10 MAdds."""
    x = np.log10([m for m, _ in points])
    y = np.array([t for _, t in points])
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    return float(slope), float(1 - residual.var() / y.var())


def write(rows: list[dict], args) -> None:
    write_csv([{k: r[k] for k in GRID_FIELDS} for r in rows], RESULTS / "study_width_resolution.csv")
    cells: dict[tuple[float, int], list[float]] = {}
    for r in rows:
        cells.setdefault(parse_design(r["design"]), []).append(float(r["val_top1"]))
    widths = sorted({w for w, _ in cells}, reverse=True)
    resolutions = sorted({r for _, r in cells}, reverse=True)
    madds = {
        (w, r): profile(create_model("mobilenet_v1", width=w, num_classes=10), (3, r, r)).madds / 1e6
        for w, r in cells
    }
    steps = sorted({int(r["steps"]) for r in rows})
    seeds = max(len(v) for v in cells.values())
    lines = [
        "# MobileNet v1's width x resolution grid on the proxy protocol",
        "",
        f"- Protocol: `lightnets train` from scratch on {IMAGENETTE.name}/train (5,500 images, 10 classes), "
        f"every network for the same number of steps ({', '.join(map(str, steps))}), default recipe; top-1 of "
        f"its EMA weights on its val/ (1,500 images) at the side it trained at; up to {seeds} seeds per cell",
        f"- Machine: {machine_description()}",
        "- Made by `LIGHTNETS_CACHE=/tmp/lightnets_bench_cache python benchmarks/study_width_resolution.py`; "
        "each run's own `lightnets train` command, time and load are in `study_width_resolution.csv`",
        "",
        "Top-1 % (mean ± sd over seeds) and multiply-adds (10 classes):",
        "",
        "| width | " + " | ".join(f"{r} px" for r in resolutions) + " |",
        "|---|" + "---|" * len(resolutions),
    ]
    for w in widths:
        entries = []
        for r in resolutions:
            top1 = cells.get((w, r))
            if not top1:
                entries.append("")
                continue
            sd = f" ± {statistics.stdev(top1):.1f}" if len(top1) > 1 else ""
            entries.append(f"{statistics.mean(top1):.1f}{sd} ({madds[w, r]:.0f} M)")
        lines.append(f"| {w:g} | " + " | ".join(entries) + " |")

    comparisons = [
        ("Table 6: width", design(a, resolutions[0]), design(b, resolutions[0]))
        for a, b in zip(widths, widths[1:], strict=False)
    ] + [
        ("Table 7: resolution", design(widths[0], a), design(widths[0], b))
        for a, b in zip(resolutions, resolutions[1:], strict=False)
    ]
    lines += [
        "",
        "| paper | A | B | top-1 % A | top-1 % B | A - B | 2 s.e. | verdict (A beats B) |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for paper, a, b in comparisons:
        if parse_design(a) not in cells or parse_design(b) not in cells:
            continue  # a partial grid (a run still to come)
        top_a, top_b = cells[parse_design(a)], cells[parse_design(b)]
        difference, two_se, result = verdict(top_a, top_b)
        lines.append(
            f"| {paper} | {a} | {b} | {statistics.mean(top_a):.1f} | {statistics.mean(top_b):.1f} "
            f"| {difference:+.1f} | {two_se:.1f} | **{result}** |"
        )
    means = {cell: statistics.mean(v) for cell, v in cells.items()}
    if len({madds[cell] for cell in means}) >= 3:
        slope, r2 = log_fit([(madds[cell], top1) for cell, top1 in means.items()])
        paper_slope, paper_r2 = log_fit(PAPER_POINTS)
        lines += [
            "",
            f"Figure 4's line: top-1 against log10 multiply-adds over the {len(means)} cells rises "
            f"{slope:.1f} points per tenfold multiply-adds (R^2 {r2:.2f}); the paper's seven published "
            f"points rise {paper_slope:.1f} points per tenfold (R^2 {paper_r2:.2f}).",
        ]
    write_text(RESULTS / "study_width_resolution.md", "\n".join(lines) + "\n")

    fig, ax = subplots(figsize=(6.5, 4.5))
    for w in widths:
        present = [r for r in resolutions if (w, r) in means]
        ax.plot([madds[w, r] for r in present], [means[w, r] for r in present], "o-", label=f"width {w:g}")
    ax.set_xscale("log")
    finish_plot(
        fig, ax, RESULTS / "study_width_resolution.png", "multiply-adds (M, log scale, 10 classes)",
        "Imagenette val top-1 (%), mean over seeds",
        f"MobileNet v1, {', '.join(map(str, resolutions))} px, {', '.join(map(str, steps))} steps per run",
    )  # fmt: skip


def main() -> None:
    parser = proxy_parser(__doc__)
    parser.set_defaults(seeds=2)
    parser.add_argument("--widths", nargs="+", type=float, default=[1.0, 0.75, 0.5, 0.25])
    parser.add_argument("--resolutions", nargs="+", type=int, default=[112, 96, 80, 64])
    parser.add_argument("--steps", type=int, default=300, help="training steps of every network")
    parser.add_argument(
        "--rescore", action="store_true", help="score the CSV's runs again from their folders"
    )
    parser.add_argument(
        "--seed-from", type=int, default=0, help="the first seed to run (more seeds for some cells)"
    )
    args = parser.parse_args()
    path = RESULTS / "study_width_resolution.csv"
    if args.write_only or args.rescore:
        rows = list(csv.DictReader(path.open()))
        write([rescore(r, args) for r in rows] if args.rescore else rows, args)
        return
    for seed in range(args.seed_from, args.seeds):
        for w in args.widths:
            for size in args.resolutions:
                cell = design(w, size)
                options = ["--model", "mobilenet_v1", "--width", f"{w:g}", "--steps", str(args.steps)]
                cell_args = argparse.Namespace(**{**vars(args), "resolution": size})
                row = rescore(train(CLAIM, cell, options, seed, cell_args, Path(args.runs)), args)
                kept = list(csv.DictReader(path.open())) if path.is_file() else []
                kept = [r for r in kept if (r["design"], str(r["seed"])) != (cell, str(seed))]
                write([*kept, row], args)
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
