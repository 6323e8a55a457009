"""MobileNetV2's expansion factor t, swept on the design claims' proxy protocol.

    LIGHTNETS_CACHE=/tmp/lightnets_bench_cache python benchmarks/study_expansion.py \\
        [--expansions 2 4 6 10] [--seeds 3] [--budget 90s] [--resolution 96]

The paper builds every block but the first with t = 6 and reports that expansion rates
between 5 and 10 give nearly identical performance curves (smaller networks doing
slightly better with smaller rates). Each t replaces every t = 6 of Table 2
(``--expansion``) and is trained by ``benchmarks/study_claims.py``'s protocol (the same
command, data, budget and scoring), once per seed. The statement checked: t = 6 and
t = 10 are **nearly identical** when their difference is within two standard errors of
it, **not** when beyond. The budget is time, so a larger t, which costs more per step,
also trains for fewer steps (the table says how many).

Rows are kept in ``results/study_expansion.csv`` across invocations; ``.md`` and ``.png``
are rewritten from all of them.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _output import finish_plot, subplots, write_csv  # noqa: E402
from _paths import RESULTS  # noqa: E402
from study_claims import FIELDS, protocol, proxy_parser, train, verdict  # noqa: E402

from lightnets import create_model, profile  # noqa: E402
from lightnets.deploy.bench_report import machine_description  # noqa: E402
from lightnets.files import write_text  # noqa: E402

CLAIM = "mobilenet_v2_expansion"
COMPARED = (6.0, 10.0)  # the paper's t and the top of its "between 5 and 10"


def design(t: float) -> str:
    return f"t={t:g}"


def write(rows: list[dict], args) -> None:
    write_csv([{k: r[k] for k in FIELDS} for r in rows], RESULTS / "study_expansion.csv")
    by_t = {
        t: [float(r["val_top1"]) for r in rows if r["design"] == design(t)]
        for t in sorted({float(r["design"][2:]) for r in rows})
    }
    lines = [
        "# MobileNetV2's expansion factor t on the proxy protocol",
        "",
        f"- Protocol: {protocol(args.budget, args.resolution, args.seeds)}",
        f"- Machine: {machine_description()}",
        "- Made by `LIGHTNETS_CACHE=/tmp/lightnets_bench_cache python benchmarks/study_expansion.py`; each "
        "run's own `lightnets train` command, steps, time and load are in `study_expansion.csv`",
        "",
        f"| t | MAdds at {args.resolution} px (M) | parameters (M) | top-1 % (mean ± sd) | per seed | steps |",
        "|---:|---:|---:|---|---|---:|",
    ]
    for t, top1 in by_t.items():
        cost = profile(
            create_model("mobilenet_v2", expansion=t, num_classes=10), (3, args.resolution, args.resolution)
        )
        steps = statistics.mean(int(r["steps"]) for r in rows if r["design"] == design(t))
        sd = statistics.stdev(top1) if len(top1) > 1 else math.nan
        lines.append(
            f"| {t:g} | {cost.madds / 1e6:.1f} | {cost.params / 1e6:.2f} | {statistics.mean(top1):.1f} ± {sd:.1f} "
            f"(n={len(top1)}) | {' / '.join(f'{v:.1f}' for v in top1)} | {steps:.0f} |"
        )
    a, b = (by_t.get(t, []) for t in COMPARED)
    if a and b:
        difference, two_se, _ = verdict(a, b)
        same = "nearly identical" if abs(difference) <= two_se else "not nearly identical"
        lines += [
            "",
            f"t = {COMPARED[0]:g} against t = {COMPARED[1]:g}: {difference:+.1f} points, two standard errors "
            f"{two_se:.1f}: **{same}** on the proxy (the paper: nearly identical between 5 and 10).",
        ]
    write_text(RESULTS / "study_expansion.md", "\n".join(lines) + "\n")
    fig, ax = subplots(figsize=(6, 4))
    for t, top1 in by_t.items():
        ax.plot(
            [t] * len(top1),
            top1,
            "o",
            color="tab:blue",
            alpha=0.5,
            label="one seed" if t == min(by_t) else None,
        )
    ax.plot(list(by_t), [statistics.mean(v) for v in by_t.values()], "-", color="tab:blue", label="mean")
    finish_plot(
        fig, ax, RESULTS / "study_expansion.png", "expansion factor t", "Imagenette val top-1 (%)",
        f"MobileNetV2, {args.budget} at {args.resolution} px per run",
    )  # fmt: skip


def main() -> None:
    parser = proxy_parser(__doc__)
    parser.add_argument("--expansions", nargs="+", type=float, default=[2.0, 4.0, 6.0, 10.0])
    args = parser.parse_args()
    path = RESULTS / "study_expansion.csv"
    if args.write_only:
        write(list(csv.DictReader(path.open())), args)
        return
    for seed in range(args.seeds):
        for t in args.expansions:  # all t within a seed in turn, so a change in load falls on all of them
            options = ["--model", "mobilenet_v2", "--expansion", f"{t:g}"]
            row = train(CLAIM, design(t), options, seed, args, Path(args.runs))
            kept = list(csv.DictReader(path.open())) if path.is_file() else []
            kept = [r for r in kept if (r["design"], str(r["seed"])) != (design(t), str(seed))]
            write([*kept, row], args)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
