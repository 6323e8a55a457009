"""Accuracy per CPU-minute: ``lightnets train --time-budget`` from scratch on Imagenette.

    nice -n 10 .venv/bin/python benchmarks/train_budget.py --rows mnv2_5m squeezenet1_1_5m

Each row is one ``lightnets train`` command run as a subprocess (so its budget covers the
whole command: Python start-up, caching, training and the final evaluation), on the
shared subset's ``train/`` (5,500 images), evaluated on its ``val/``. The command, the
wall-clock time the command really took, the CPU, the load average before and after and
the run's own summary (how the budget was spent, the steps, which weights it recommends)
are recorded per row in ``results/train_budget.csv`` and ``.md``; rows already there are
kept, so the sweep can be run a row at a time (the 30-minute rows are run once).
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _output import benchmark_parser, finish_plot, subplots  # noqa: E402
from _paths import IMAGENETTE, RESULTS  # noqa: E402
from eval_resolution import top1_at_sides  # noqa: E402
from train_common import train_command  # noqa: E402

from lightnets.deploy.bench_report import cpu_name  # noqa: E402
from lightnets.files import atomic_write, write_text  # noqa: E402

# name: (label, model options, resolution, budget)
ROWS = {
    "mnv2_5m": ("MobileNetV2 1.0", ["--model", "mobilenet_v2"], 128, "5m"),
    "squeezenet1_1_5m": ("SqueezeNet 1.1", ["--model", "squeezenet1_1"], 128, "5m"),
    "squeezenet1_0_5m": ("SqueezeNet 1.0", ["--model", "squeezenet1_0"], 128, "5m"),
    "mnv1_050_5m": ("MobileNet v1 0.5", ["--model", "mobilenet_v1", "--width", "0.5"], 128, "5m"),
    "shufflenet_g3_5m": ("ShuffleNet 1x g=3", ["--model", "shufflenet_v1_g3"], 128, "5m"),
    "mnv2_10m": ("MobileNetV2 1.0", ["--model", "mobilenet_v2"], 128, "10m"),
    "squeezenet1_1_10m": ("SqueezeNet 1.1", ["--model", "squeezenet1_1"], 128, "10m"),
    "mnv1_050_10m": ("MobileNet v1 0.5", ["--model", "mobilenet_v1", "--width", "0.5"], 128, "10m"),
    "shufflenet_g3_10m": ("ShuffleNet 1x g=3", ["--model", "shufflenet_v1_g3"], 128, "10m"),
    "squeezenet1_0_10m": ("SqueezeNet 1.0", ["--model", "squeezenet1_0"], 128, "10m"),
    "mnv2_30m": ("MobileNetV2 1.0", ["--model", "mobilenet_v2"], 128, "30m"),
    "shufflenet_g3_30m": ("ShuffleNet 1x g=3", ["--model", "shufflenet_v1_g3"], 128, "30m"),
}
# The recipe's ablation: MobileNetV2 for 5 minutes with one part of the default recipe
# changed; compared with mnv2_5m on the top-1 at the training resolution.
ABLATIONS = {
    "mnv2_5m_resize": ("MobileNetV2 1.0, resized 96 -> 128", ["--start-resolution", "96"]),
    "mnv2_5m_no_smoothing": ("MobileNetV2 1.0, no label smoothing", ["--label-smoothing", "0"]),
    "mnv2_5m_no_ema": ("MobileNetV2 1.0, no EMA", ["--ema-decay", "0"]),
}
# The schedule and mixing arms, run later in one session on one machine with two seeds
# each, the default recipe among them (so that no arm is compared across machines).
RECIPE_ARMS = {
    "default": ("default recipe (warm-up + cosine)", []),
    "onecycle": ("one-cycle schedule", ["--schedule", "onecycle"]),
    "mixup": ("mixup 0.2", ["--mixup", "0.2"]),
    "cutmix": ("CutMix 1.0", ["--cutmix", "1.0"]),
}
RECIPE_SEEDS = (0, 1)
ABLATIONS.update(
    {
        f"mnv2_5m_{arm}_seed{seed}": (
            f"MobileNetV2 1.0, {label}, seed {seed}",
            [*change, "--seed", str(seed)],
        )
        for arm, (label, change) in RECIPE_ARMS.items()
        for seed in RECIPE_SEEDS
    }
)
ROWS.update(
    {
        name: (label, ["--model", "mobilenet_v2", *change], 128, "5m")
        for name, (label, change) in ABLATIONS.items()
    }
)
FIELDS = [
    "row", "model", "resolution", "budget", "command_s", "val_top1", "eval_resolution", "top1_at_train_px",
    "recommended", "steps", "epochs", "images_per_s", "start_up_s", "caching_s", "training_s", "evaluation_s",
    "precision", "cpu", "load_before", "load_after", "command",
]  # fmt: skip


def run_row(name: str, runs: Path, extra: list[str]) -> dict:
    label, model, resolution, budget = ROWS[name]
    out = runs / name
    summary = train_command(
        [*model, "--data", str(IMAGENETTE), "--resolution", str(resolution), "--time-budget", budget, *extra],
        out,
    )
    took, load_before, command = summary["command_s"], summary["load_before"], summary["command"]
    b = summary["budget"]
    eval_resolution = summary["eval_resolution"]
    top1 = summary["recommended"]["val_top1"]
    at_train_px = (
        top1
        if eval_resolution == resolution
        else top1_at_sides(out / "model.safetensors", [resolution], IMAGENETTE / "val")[resolution]
    )
    return {
        "row": name,
        "model": label,
        "resolution": resolution,
        "budget": budget,
        "command_s": round(took, 1),
        "val_top1": round(top1, 2),
        "eval_resolution": eval_resolution,
        "top1_at_train_px": round(at_train_px, 2),
        "recommended": summary["recommended"]["holds"],
        "steps": summary["steps"],
        "epochs": round(summary["steps"] / max(1, summary["train_images"] // 64), 2),
        "images_per_s": round(b.get("images_per_s", 0.0), 1),
        "start_up_s": round(b["start_up_s"], 1),
        "caching_s": round(b["caching_s"], 1),
        "training_s": round(b["training_s"], 1),
        "evaluation_s": round(b["evaluation_s"], 1),
        "precision": summary["execution"]["precision"],
        "cpu": f"{cpu_name()}, {os.cpu_count()} logical CPUs",
        "load_before": load_before,
        "load_after": summary["load_after"],
        "command": command,
    }


def write(rows: list[dict]) -> None:
    for r in rows:  # rows run before the default test resolution evaluated at the training side
        r["eval_resolution"] = r.get("eval_resolution") or r["resolution"]
        r["top1_at_train_px"] = r.get("top1_at_train_px") or r["val_top1"]
    path = RESULTS / "train_budget.csv"
    with atomic_write(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "# Accuracy per CPU-minute: `lightnets train --time-budget` on Imagenette",
        "",
        f"- Machine: {cpu_name()}, {os.cpu_count()} logical CPUs, shared with other jobs: the load "
        "average (1, 5, 15 min) before and after each row is in its line; a load above 2 means the "
        "run had only part of the 2 cores",
        f"- Data: {IMAGENETTE.name}/train (5,500 images, 10 classes) from scratch; top-1 on its val/ "
        "(the recommended weights: the EMA when it scores higher)",
        "- Command of each row: its `command` below, run by "
        "`LIGHTNETS_CACHE=/tmp/lightnets_bench_cache .venv/bin/python benchmarks/train_budget.py "
        "--rows ROW` (the first row built the image cache, later rows reused it: their caching "
        "time is near 0)",
        "- The budget covers the whole command; where the machine gave a run only a sixth of a "
        "core, the probe steps and the final evaluation of 1,500 validation images (model and "
        "EMA) alone took longer than a 5-minute budget, and the command overran it",
        "",
        "- val top-1 is the command's, at its evaluation side (eval px: since the default test "
        "resolution, 1.25 x the training side on the 32-pixel grid; rows run before it evaluated at "
        "the training side); `at train px` scores the same weights at the training side",
        "",
        "| model | px | budget | command took (s) | val top-1 % | eval px | top-1 % at train px | weights "
        "| steps | epochs | img/s | start-up / caching / training / evaluation (s) | precision "
        "| load before -> after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['resolution']} | {r['budget']} | {r['command_s']} | **{r['val_top1']}** "
            f"| {r['eval_resolution']} | {r['top1_at_train_px']} "
            f"| {r['recommended']} | {r['steps']} | {r['epochs']} | {r['images_per_s']} "
            f"| {r['start_up_s']} / {r['caching_s']} / {r['training_s']} / {r['evaluation_s']} "
            f"| {r['precision']} | {r['load_before']} -> {r['load_after']} |"
        )
    lines += recipe_arms(rows)
    lines += ["", "Commands:", ""] + [f"- {r['row']}: `{r['command']}`" for r in rows]
    lines += ["", "Plot: `train_budget.png` (top-1 against the minutes each command took)."]
    write_text(RESULTS / "train_budget.md", "\n".join(lines) + "\n")
    plot(rows)


def recipe_arms(rows: list[dict]) -> list[str]:
    """The schedule and mixing arms against the default recipe of the same session: mean
    top-1 at the training side over the seeds, and the difference."""
    top1 = {
        arm: [float(r["top1_at_train_px"]) for r in rows if r["row"].startswith(f"mnv2_5m_{arm}_seed")]
        for arm in RECIPE_ARMS
    }
    if not top1["default"]:
        return []
    base = statistics.mean(top1["default"])
    lines = [
        "",
        f"Recipe arms (MobileNetV2 1.0, 128 px, 5 minutes, seeds {', '.join(map(str, RECIPE_SEEDS))}, one "
        "session), top-1 at the training side:",
        "",
        "| arm | top-1 % per seed | mean | mean - default |",
        "|---|---|---:|---:|",
    ]
    for arm, (label, _) in RECIPE_ARMS.items():
        if top1[arm]:
            mean = statistics.mean(top1[arm])
            lines.append(
                f"| {label} | {' / '.join(f'{v:.2f}' for v in top1[arm])} | {mean:.2f} | {mean - base:+.2f} |"
            )
    return lines


def plot(rows: list[dict]) -> None:
    """Validation top-1 against the minutes the command took, one line per model."""
    fig, ax = subplots(figsize=(6, 4))
    rows = [r for r in rows if r["row"] not in ABLATIONS]
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = sorted((float(r["command_s"]) / 60, float(r["val_top1"])) for r in rows if r["model"] == model)
        ax.plot([m for m, _ in mine], [a for _, a in mine], "o-", label=model)
    finish_plot(
        fig, ax, RESULTS / "train_budget.png", "minutes the command took (budget 5, 10 or 30)",
        "Imagenette val top-1 (%)", "lightnets train --time-budget, 2 shared CPU cores",
    )  # fmt: skip


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--rows", nargs="+", choices=sorted(ROWS), default=["mnv2_5m", "squeezenet1_1_5m"])
    parser.add_argument("--runs", default="/tmp/lightnets_budget_runs")
    parser.add_argument("--write-only", action="store_true", help="rewrite the .md from the .csv")
    parser.add_argument("extra", nargs="*", help="more lightnets train options (after --)")
    args = parser.parse_args()
    path = RESULTS / "train_budget.csv"
    if args.write_only:  # the tables again from the CSV, no training
        rows = {r["row"]: r for r in csv.DictReader(path.open())}
        write([rows[k] for k in ROWS if k in rows])
        return
    for name in args.rows:
        row = run_row(name, Path(args.runs), args.extra)
        # Read again: another invocation (a long row run alongside) may have added rows.
        rows = {r["row"]: r for r in csv.DictReader(path.open())} if path.is_file() else {}
        rows[name] = row
        write([rows[k] for k in ROWS if k in rows])
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
