"""The papers' design claims, checked on one proxy protocol.

    LIGHTNETS_CACHE=/tmp/lightnets_bench_cache python benchmarks/study_claims.py \\
        [--claims mobilenet_v2_linear_bottleneck ...] [--seeds 3] [--budget 90s] [--resolution 96]

The proxy protocol, the same for every claim and stated in the result file: each design
is trained from scratch by ``lightnets train`` (the default recipe: SGD with warm-up and
cosine decay, label smoothing, EMA, bfloat16 where the CPU has it) on the Imagenette
subset's train split (5,500 images, 10 classes) at ``--resolution`` for a
``--time-budget`` covering the whole command, once per seed; the score is the top-1 of
the recommended weights on the subset's val split (1,500 images). A claim "A beats B"
is **held** when the difference of the means exceeds two standard errors of that
difference (``sqrt(sd_A^2 / n + sd_B^2 / n)``), **not held** when it is below minus two,
and **inconclusive** otherwise. The claims run in the issue's order of priority.

Rows are kept in ``results/study_claims.csv`` across invocations (a claim can be run on
its own, or more seeds added later); ``results/study_claims.md`` and ``.png`` are
rewritten from all of them.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _output import benchmark_parser, finish_plot, subplots, write_csv  # noqa: E402
from _paths import IMAGENETTE, RESULTS  # noqa: E402
from train_common import train_command  # noqa: E402

from lightnets.deploy.bench_report import machine_description  # noqa: E402
from lightnets.files import write_text  # noqa: E402

# Table 4 compares networks several times apart in cost: in equal time the full-convolution
# one would train a fraction of the steps, so that claim trains both for the same number of steps
# (a design whose options give --steps runs that many steps instead of the time budget).
EQUAL_STEPS = "300"

# name: (paper and figure, the paper's claim with its numbers, (label A, options A), (label B, options B));
# the claim is that A beats B. In the order of priority.
CLAIMS = {
    "mobilenet_v2_linear_bottleneck": (
        "MobileNetV2, Figure 6a",
        "a linear bottleneck beats one ending in ReLU6 (higher top-1 throughout training)",
        ("linear", ["--model", "mobilenet_v2"]),
        ("ReLU6", ["--model", "mobilenet_v2", "--bottleneck", "relu6"]),
    ),
    "mobilenet_v2_shortcut": (
        "MobileNetV2, Figure 6b",
        "shortcuts between the bottlenecks beat no residual connections (higher top-1 throughout training)",
        ("shortcuts", ["--model", "mobilenet_v2"]),
        ("no shortcuts", ["--model", "mobilenet_v2", "--shortcut", "none"]),
    ),
    "mobilenet_v2_shortcut_placement": (
        "MobileNetV2, Figure 6b",
        "shortcuts between the bottlenecks beat shortcuts between the expansions",
        ("bottlenecks", ["--model", "mobilenet_v2"]),
        ("expansions", ["--model", "mobilenet_v2", "--shortcut", "expansion"]),
    ),
    "shufflenet_shuffle": (
        "ShuffleNet, Table 3",
        "channel shuffle helps: 1x g=3 error 32.6 % with, 34.5 % without",
        ("shuffle", ["--model", "shufflenet_v1", "--groups", "3"]),
        ("no shuffle", ["--model", "shufflenet_v1", "--groups", "3", "--no-shuffle"]),
    ),
    "mobilenet_v1_separable": (
        "MobileNet v1, Table 4",
        "full convolutions beat depthwise separable ones, by only 1.1 points (71.7 % against 70.6 %) for "
        "8.5x the multiply-adds (width 0.25 here, equal steps)",
        ("full", ["--model", "mobilenet_v1", "--width", "0.25", "--variant", "full", "--steps", EQUAL_STEPS]),
        ("separable", ["--model", "mobilenet_v1", "--width", "0.25", "--steps", EQUAL_STEPS]),
    ),
    "mobilenet_v1_thinner": (
        "MobileNet v1, Table 5",
        "thinner beats shallower at similar cost: 0.75 MobileNet 68.4 % vs shallow 65.3 %",
        ("0.75 thinner", ["--model", "mobilenet_v1", "--width", "0.75"]),
        ("1.0 shallower", ["--model", "mobilenet_v1", "--variant", "shallow"]),
    ),
    "squeezenet_squeeze_ratio": (
        "SqueezeNet, Figure 3a",
        "a larger squeeze ratio is more accurate up to SR 0.75: top-5 80.3 % at SR 0.125, 86.0 % at 0.75",
        ("SR 0.75", ["--model", "squeezenet1_0", "--sr", "0.75"]),
        ("SR 0.125", ["--model", "squeezenet1_0", "--sr", "0.125"]),
    ),
    "squeezenet_pct3x3": (
        "SqueezeNet, Figure 3b",
        "more 3x3 expand filters help, up to half of them (top-5 plateaus from pct3x3 = 50 %)",
        ("pct3x3 0.5", ["--model", "squeezenet1_0", "--pct3x3", "0.5"]),
        ("pct3x3 0.125", ["--model", "squeezenet1_0", "--pct3x3", "0.125"]),
    ),
    "squeezenet_simple_bypass": (
        "SqueezeNet, Table 3",
        "a simple bypass beats none: top-1 60.4 % with, 57.5 % without",
        ("simple bypass", ["--model", "squeezenet1_0", "--bypass", "simple"]),
        ("no bypass", ["--model", "squeezenet1_0"]),
    ),
    "squeezenet_complex_bypass": (
        "SqueezeNet, Table 3",
        "a simple bypass beats a complex one: top-1 60.4 % against 58.8 %",
        ("simple bypass", ["--model", "squeezenet1_0", "--bypass", "simple"]),
        ("complex bypass", ["--model", "squeezenet1_0", "--bypass", "complex"]),
    ),
    "shufflenet_groups_025": (
        "ShuffleNet, Table 2",
        "more groups help the smallest network: 0.25x error 52.7 % at g=8, 57.1 % at g=1",
        ("g=8", ["--model", "shufflenet_v1", "--scale", "0.25", "--groups", "8"]),
        ("g=1", ["--model", "shufflenet_v1", "--scale", "0.25", "--groups", "1"]),
    ),
}
FIELDS = ["claim", "design", "seed", "val_top1", "steps", "command_s", "load_before", "load_after", "command"]


def protocol(budget: str, resolution: int, seeds: int) -> str:
    return (
        f"`lightnets train` from scratch on {IMAGENETTE.name}/train (5,500 images, 10 classes) at "
        f"{resolution} px, `--time-budget {budget}` for the whole command, default recipe; top-1 of the "
        f"recommended weights on its val/ (1,500 images); {seeds} seeds per design; a design whose options "
        f"give `--steps N` trains N steps instead of the time budget (Table 4's, whose two networks differ "
        f"several-fold in cost)"
    )


def run_folder(runs: Path, claim: str, design: str, seed: int | str) -> Path:
    """Where one design's run of one seed keeps its files."""
    return runs / f"{claim}_{design.replace(' ', '_')}_{seed}"


def train(claim: str, design: str, options: list[str], seed: int, args, runs: Path) -> dict:
    length = [] if "--steps" in options else ["--time-budget", args.budget]
    run = train_command(
        [*options, "--data", str(IMAGENETTE), "--resolution", str(args.resolution), *length, "--seed", str(seed)],
        run_folder(runs, claim, design, seed), quiet=True,
    )  # fmt: skip
    return {
        "claim": claim,
        "design": design,
        "seed": seed,
        "val_top1": round(run["recommended"]["val_top1"], 2),
        "steps": run["steps"],
        "command_s": round(run["command_s"], 1),
        "load_before": run["load_before"],
        "load_after": run["load_after"],
        "command": run["command"],
    }


def verdict(a: list[float], b: list[float]) -> tuple[float, float, str]:
    """(mean(a) - mean(b), two standard errors of that difference, held / not held / inconclusive)."""
    difference = statistics.mean(a) - statistics.mean(b)
    if len(a) < 2 or len(b) < 2:
        return difference, math.nan, "inconclusive (one seed)"
    two_se = 2 * math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
    if difference > two_se:
        return difference, two_se, "held"
    if difference < -two_se:
        return difference, two_se, "not held"
    return difference, two_se, "inconclusive"


def write(rows: list[dict], args) -> None:
    write_csv([{k: r[k] for k in FIELDS} for r in rows], RESULTS / "study_claims.csv")
    lines = [
        "# The papers' design claims on the proxy protocol",
        "",
        f"- Protocol: {protocol(args.budget, args.resolution, args.seeds)}",
        "- Verdict: held when mean(A) - mean(B) exceeds two standard errors of the difference, not held "
        "below minus two, inconclusive between",
        f"- Machine: {machine_description()}",
        "- Made by `LIGHTNETS_CACHE=/tmp/lightnets_bench_cache python benchmarks/study_claims.py` (a claim "
        "at a time with `--claims NAME`); each run's own `lightnets train` command, steps, time and load are "
        "in `study_claims.csv`",
        "",
        "| claim | paper | A | B | top-1 % A (mean ± sd) | top-1 % B | A - B | 2 s.e. | verdict | steps A / B |",
        "|---|---|---|---|---|---|---:|---:|---|---|",
    ]
    plotted = []

    def steps(claim: str, design: str) -> int:  # mean training steps: the budget is time, not epochs
        return round(
            statistics.mean(int(r["steps"]) for r in rows if (r["claim"], r["design"]) == (claim, design))
        )

    for claim, (paper, text, (label_a, _), (label_b, _)) in CLAIMS.items():
        a = [float(r["val_top1"]) for r in rows if r["claim"] == claim and r["design"] == label_a]
        b = [float(r["val_top1"]) for r in rows if r["claim"] == claim and r["design"] == label_b]
        if not a or not b:
            continue
        difference, two_se, result = verdict(a, b)
        sd = lambda v: statistics.stdev(v) if len(v) > 1 else math.nan  # noqa: E731
        lines.append(
            f"| {text} | {paper} | {label_a} | {label_b} | {statistics.mean(a):.1f} ± {sd(a):.1f} (n={len(a)}) "
            f"| {statistics.mean(b):.1f} ± {sd(b):.1f} (n={len(b)}) | {difference:+.1f} | {two_se:.1f} "
            f"| **{result}** | {steps(claim, label_a)} / {steps(claim, label_b)} |"
        )
        plotted.append((f"{paper}\n{label_a} vs {label_b}", a, b))
    lines += [
        "",
        "The budget is wall-clock time, so a design that runs faster on this CPU also trains for more "
        "steps (last column); the papers compare at equal epochs and equal multiply-adds.",
    ]
    write_text(RESULTS / "study_claims.md", "\n".join(lines) + "\n")
    fig, ax = subplots(figsize=(7, 1 + 1.1 * max(1, len(plotted))))
    for i, (_, a, b) in enumerate(plotted):
        ax.plot(
            a, [i + 0.15] * len(a), "o", color="tab:blue", label="A (the paper's choice)" if i == 0 else None
        )
        ax.plot(b, [i - 0.15] * len(b), "s", color="tab:orange", label="B" if i == 0 else None)
        ax.plot([statistics.mean(a)] * 2, [i + 0.05, i + 0.25], "-", color="tab:blue")
        ax.plot([statistics.mean(b)] * 2, [i - 0.25, i - 0.05], "-", color="tab:orange")
    ax.set_yticks(range(len(plotted)), [t for t, _, _ in plotted], fontsize=8)
    finish_plot(
        fig, ax, RESULTS / "study_claims.png", "Imagenette val top-1 (%), one mark per seed, a bar at the mean",
        None, "Design claims on the proxy protocol",
    )  # fmt: skip


def proxy_parser(doc: str | None) -> argparse.ArgumentParser:
    """A proxy study's command line: the protocol's seeds, budget and resolution, where the
    runs go, and ``--write-only`` to rewrite the reports from the CSV."""
    parser = benchmark_parser(doc)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", default="90s")
    parser.add_argument("--resolution", type=int, default=96)
    parser.add_argument("--runs", default="/tmp/lightnets_claims_runs")
    parser.add_argument("--write-only", action="store_true", help="rewrite the .md and .png from the .csv")
    return parser


def main() -> None:
    parser = proxy_parser(__doc__)
    parser.add_argument("--claims", nargs="+", choices=list(CLAIMS), default=list(CLAIMS))
    args = parser.parse_args()
    path = RESULTS / "study_claims.csv"
    if args.write_only:
        write(list(csv.DictReader(path.open())), args)
        return
    for claim in args.claims:
        _, _, *designs = CLAIMS[claim]
        for seed in range(args.seeds):
            for design, options in designs:  # alternating, so a change in load falls on both designs
                row = train(claim, design, options, seed, args, Path(args.runs))
                kept = list(csv.DictReader(path.open())) if path.is_file() else []
                kept = [
                    r for r in kept if (r["claim"], r["design"], str(r["seed"])) != (claim, design, str(seed))
                ]
                write([*kept, row], args)
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
