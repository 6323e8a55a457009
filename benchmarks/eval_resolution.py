"""Top-1 of trained runs' weights at several evaluation sides: the train-test resolution
discrepancy behind ``lightnets train``'s default evaluation side.

    .venv/bin/python benchmarks/eval_resolution.py /tmp/lightnets_budget_runs/mnv2_30m [RUN ...]

For each run folder (of ``lightnets train``, e.g. the rows of ``train_budget.py``), its
last and EMA weights (or its only weights, without an EMA) are evaluated on the validation images at each ``--sides`` value, the resize
before the centre crop scaled in proportion (the training transform's ratio kept).
Writes ``results/eval_resolution.md`` and ``.csv``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _output import write_csv, write_markdown  # noqa: E402
from _paths import IMAGENETTE, RESULTS  # noqa: E402
from train_common import load_average  # noqa: E402

from lightnets.classify import evaluate  # noqa: E402
from lightnets.deploy.bench_report import cpu_name  # noqa: E402
from lightnets.zoo import model_for_weights, transform_of  # noqa: E402

# A run with an EMA has both (model.safetensors is a copy of one); without, only model.
WEIGHTS = {"model_last": "last", "model_ema": "EMA"}


def top1_at_sides(weights: Path, sides: list[int], data: Path) -> dict[int, float]:
    model = model_for_weights(weights)
    transform = transform_of(model)
    ratio = transform.resize / transform.size
    scores = {}
    for side in sides:
        at = dataclasses.replace(transform, size=side, resize=round(side * ratio))
        scores[side] = evaluate(model, data, at, batch_size=64, progress=False).top1
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path, help="lightnets train run folders")
    parser.add_argument("--sides", type=int, nargs="+", default=[128, 144, 160, 176, 192])
    parser.add_argument("--data", type=Path, default=IMAGENETTE / "val")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = load_average()
    rows = []
    for run in args.runs:
        summary = json.loads((run / "summary.json").read_text())
        trained_at = summary["resolution"]
        present = {stem: what for stem, what in WEIGHTS.items() if (run / f"{stem}.safetensors").is_file()}
        for stem, what in (present or {"model": "the run's"}).items():
            scores = top1_at_sides(run / f"{stem}.safetensors", args.sides, args.data)
            rows.append({"run": run.name, "trained_at": trained_at, "weights": what,
                         **{f"top1_at_{s}": round(v, 2) for s, v in scores.items()}})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    write_csv(rows, RESULTS / "eval_resolution.csv")
    command = "python benchmarks/eval_resolution.py " + " ".join(str(r) for r in args.runs)
    lines = [
        "# Top-1 against the evaluation side (the train-test resolution discrepancy)",
        "",
        f"- Machine: {cpu_name()}, {os.cpu_count()} logical CPUs, {args.threads} threads; load average "
        f"(1, 5, 15 min) before {load_before}, after {load_average()}",
        f"- Command: `{command}`",
        f"- Data: {args.data} (top-1 %, centre crop at each side, the resize scaled in proportion)",
        "",
        "| run | trained at (px) | weights | " + " | ".join(f"{s} px" for s in args.sides) + " |",
        "|---|---|---|" + "---:|" * len(args.sides),
    ]
    for r in rows:
        values = [r[f"top1_at_{s}"] for s in args.sides]
        best = max(values)
        cells = [f"**{v}**" if v == best else str(v) for v in values]
        lines.append(f"| {r['run']} | {r['trained_at']} | {r['weights']} | " + " | ".join(cells) + " |")
    write_markdown(lines, RESULTS / "eval_resolution.md")


if __name__ == "__main__":
    main()
