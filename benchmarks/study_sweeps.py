"""The papers' design knobs swept on the design claims' proxy protocol.

    LIGHTNETS_CACHE=/tmp/lightnets_bench_cache python benchmarks/study_sweeps.py SWEEP \\
        [--seeds 2] [--budget 90s] [--resolution 96] [--designs LABEL ...]

SWEEP is one of:

- ``expansion``: MobileNetV2's expansion factor t (2, 4, 6, 10 in place of every t = 6).
  The paper: rates between 5 and 10 give nearly identical results. Checked: t = 6 and
  t = 10 within two standard errors of each other. Time budget (``--budget``).
- ``shufflenet_groups``: ShuffleNet Table 2, groups g = 1, 2, 3, 4, 8 at scales 1x, 0.5x
  and 0.25x. The paper: group convolutions help, the smaller networks most (0.25x: error
  57.1 % at g = 1, 52.7 % at g = 8). Checked: g = 8 against g = 1 at each scale.
- ``squeezenet_sr``: SqueezeNet Figure 3a, squeeze ratio SR = 0.125 ... 1.0 (SqueezeNet
  1.0's layout). The paper: accuracy rises with SR up to 0.75 and no further. Checked:
  SR 0.75 against 0.125, and SR 1.0 against 0.75 (no gain: within two standard errors).
- ``squeezenet_pct3x3``: SqueezeNet Figure 3b, the share of 3x3 expand filters pct3x3 =
  0.01 ... 0.99. The paper: accuracy plateaus from 0.5. Checked: 0.5 against 0.01, and
  0.99 against 0.5 (a plateau: within two standard errors).

Every design trains with ``benchmarks/study_claims.py``'s protocol (the same command,
data, recipe and scoring), once per seed, the designs of a seed in turn. The sweeps
other than ``expansion`` train every design for the same number of steps (``--steps``,
default 300), as the papers compare at equal epochs: their designs differ in cost, and in
equal time the cheaper ones would train for more epochs. A comparison "A beats B" is held
beyond two standard errors of the difference (the claims' rule); "A equals B" holds
within two.

Rows are kept in ``results/study_<SWEEP>.csv`` across invocations; ``.md`` and ``.png``
are rewritten from all of them.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _output import finish_plot, subplots, write_csv  # noqa: E402
from _paths import RESULTS  # noqa: E402
from study_claims import FIELDS, protocol, proxy_parser, train, verdict  # noqa: E402

from lightnets import create_model, profile  # noqa: E402
from lightnets.deploy.bench_report import machine_description  # noqa: E402
from lightnets.files import write_text  # noqa: E402


@dataclass(frozen=True)
class Design:
    label: str
    kwargs: dict[str, Any]  # builder arguments; the command line takes them as --name value
    x: float  # where the plot puts it
    series: str = ""  # one line per series (ShuffleNet's scale)
    paper: str = ""  # the paper's figure for it, as printed


@dataclass(frozen=True)
class Sweep:
    title: str
    paper: str
    claim: str  # the claim's id in the CSV (the rows of study_claims.csv have theirs)
    model: str
    designs: tuple[Design, ...]
    comparisons: tuple[tuple[str, str, str], ...]  # (A, B, "beats" or "equals")
    x_label: str
    paper_column: str = ""  # what the paper column holds
    equal_steps: bool = True
    statement: str = ""


# ShuffleNet Table 2: classification error (%) by scale and groups g = 1, 2, 3, 4, 8.
SHUFFLENET_TABLE2 = {
    1.0: (33.6, 32.7, 32.6, 32.8, 32.4),
    0.5: (45.1, 44.4, 43.2, 41.6, 42.3),
    0.25: (57.1, 56.8, 55.0, 54.2, 52.7),
}
GROUPS = (1, 2, 3, 4, 8)

SWEEPS = {
    "expansion": Sweep(
        "MobileNetV2's expansion factor t",
        "MobileNetV2, Section 6.1",
        "mobilenet_v2_expansion",
        "mobilenet_v2",
        tuple(Design(f"t={t:g}", {"expansion": t}, t) for t in (2.0, 4.0, 6.0, 10.0)),
        (("t=6", "t=10", "equals"),),
        "expansion factor t",
        equal_steps=False,
        statement="expansion rates between 5 and 10 give nearly identical performance curves",
    ),
    "shufflenet_groups": Sweep(
        "ShuffleNet's groups g at three scales",
        "ShuffleNet, Table 2",
        "shufflenet_groups",
        "shufflenet_v1",
        tuple(
            Design(f"{s:g}x g={g}", {"scale": s, "groups": g}, g, f"{s:g}x", f"{error:.1f}")
            for s, errors in SHUFFLENET_TABLE2.items()
            for g, error in zip(GROUPS, errors, strict=True)
        ),
        tuple((f"{s:g}x g=8", f"{s:g}x g=1", "beats") for s in SHUFFLENET_TABLE2),
        "groups g",
        "ImageNet error %",
        statement="group convolutions help, the smaller networks most",
    ),
    "squeezenet_sr": Sweep(
        "SqueezeNet's squeeze ratio SR",
        "SqueezeNet, Figure 3a",
        "squeezenet_sr",
        "squeezenet1_0",
        tuple(
            Design(f"SR={sr:g}", {"sr": sr}, sr, paper={0.125: "80.3", 0.75: "86.0"}.get(sr, ""))
            for sr in (0.125, 0.25, 0.5, 0.75, 1.0)
        ),
        (("SR=0.75", "SR=0.125", "beats"), ("SR=1", "SR=0.75", "equals")),
        "squeeze ratio SR",
        "ImageNet top-5 %",
        statement="accuracy rises with the squeeze ratio up to 0.75, and no further",
    ),
    "squeezenet_pct3x3": Sweep(
        "SqueezeNet's share of 3x3 expand filters pct3x3",
        "SqueezeNet, Figure 3b",
        "squeezenet_pct3x3",
        "squeezenet1_0",
        tuple(Design(f"pct3x3={p:g}", {"pct3x3": p}, p) for p in (0.01, 0.25, 0.5, 0.75, 0.99)),
        (("pct3x3=0.5", "pct3x3=0.01", "beats"), ("pct3x3=0.99", "pct3x3=0.5", "equals")),
        "share of 3x3 expand filters pct3x3",
        statement="accuracy rises with the share of 3x3 filters and plateaus from 0.5",
    ),
}


def options(sweep: Sweep, design: Design, steps: int) -> list[str]:
    arguments = ["--model", sweep.model]
    for name, value in design.kwargs.items():
        arguments += [f"--{name.replace('_', '-')}", f"{value:g}" if isinstance(value, float) else str(value)]
    return arguments + (["--steps", str(steps)] if sweep.equal_steps else [])


def write(name: str, rows: list[dict], args) -> None:
    sweep = SWEEPS[name]
    write_csv([{k: r[k] for k in FIELDS} for r in rows], RESULTS / f"study_{name}.csv")
    top1 = {d.label: [float(r["val_top1"]) for r in rows if r["design"] == d.label] for d in sweep.designs}
    steps = sorted({int(r["steps"]) for r in rows})
    length = (
        f"every design for the same number of steps ({', '.join(map(str, steps))}) instead of the time budget"
        if sweep.equal_steps
        else "the time budget (a costlier design trains for fewer steps)"
    )
    paper = f" | paper ({sweep.paper_column})" if sweep.paper_column else ""
    lines = [
        f"# {sweep.title} on the proxy protocol",
        "",
        f"- The paper ({sweep.paper}): {sweep.statement}",
        f"- Protocol: {protocol(args.budget, args.resolution, max(map(len, top1.values())))}; here {length}",
        f"- Machine: {machine_description()}",
        f"- Made by `LIGHTNETS_CACHE=/tmp/lightnets_bench_cache python benchmarks/study_sweeps.py {name}`; "
        f"each run's own `lightnets train` command, steps, time and load are in `study_{name}.csv`",
        "",
        f"| design | MAdds at {args.resolution} px (M) | parameters (M) | top-1 % (mean ± sd) | per seed | steps{paper} |",
        "|---|---:|---:|---|---|---:|" + ("---:|" if paper else ""),
    ]
    for design in sweep.designs:
        scores = top1[design.label]
        if not scores:
            continue
        cost = profile(
            create_model(sweep.model, num_classes=10, **design.kwargs), (3, args.resolution, args.resolution)
        )
        ran = statistics.mean(int(r["steps"]) for r in rows if r["design"] == design.label)
        sd = statistics.stdev(scores) if len(scores) > 1 else math.nan
        lines.append(
            f"| {design.label} | {cost.madds / 1e6:.1f} | {cost.params / 1e6:.2f} | {statistics.mean(scores):.1f} "
            f"± {sd:.1f} (n={len(scores)}) | {' / '.join(f'{v:.1f}' for v in scores)} | {ran:.0f}"
            + (f" | {design.paper} |" if paper else " |")
        )
    lines += ["", "| comparison | A - B | 2 s.e. | verdict |", "|---|---:|---:|---|"]
    for a, b, kind in sweep.comparisons:
        if not top1[a] or not top1[b]:
            continue
        difference, two_se, result = verdict(top1[a], top1[b])
        if kind == "equals":
            result = "within two s.e." if abs(difference) <= two_se else "beyond two s.e."
        lines.append(f"| {a} {kind} {b} | {difference:+.1f} | {two_se:.1f} | **{result}** |")
    write_text(RESULTS / f"study_{name}.md", "\n".join(lines) + "\n")

    fig, ax = subplots(figsize=(6, 4))
    for series in dict.fromkeys(d.series for d in sweep.designs):
        present = [d for d in sweep.designs if d.series == series and top1[d.label]]
        if not present:
            continue
        line = ax.plot(
            [d.x for d in present], [statistics.mean(top1[d.label]) for d in present], "-",
            label=f"{series} mean" if series else "mean",
        )[0]  # fmt: skip
        for d in present:
            ax.plot([d.x] * len(top1[d.label]), top1[d.label], "o", color=line.get_color(), alpha=0.4)
    finish_plot(
        fig, ax, RESULTS / f"study_{name}.png", sweep.x_label, "Imagenette val top-1 (%), dots: seeds",
        f"{sweep.paper} at {args.resolution} px, " + (f"{', '.join(map(str, steps))} steps" if sweep.equal_steps
                                                     else f"{args.budget} per run"),
    )  # fmt: skip


def main() -> None:
    parser = proxy_parser(__doc__)
    parser.set_defaults(seeds=2)
    parser.add_argument("sweep", choices=list(SWEEPS))
    parser.add_argument(
        "--steps", type=int, default=300, help="training steps of every design (equal-steps sweeps)"
    )
    parser.add_argument(
        "--designs",
        nargs="+",
        metavar="LABEL",
        help="train only these designs (e.g. '0.25x g=8'); others' rows are kept",
    )
    args = parser.parse_args()
    sweep = SWEEPS[args.sweep]
    unknown = set(args.designs or ()) - {d.label for d in sweep.designs}
    if unknown:
        parser.error(
            f"no design {sorted(unknown)} in {args.sweep}; its designs: {[d.label for d in sweep.designs]}"
        )
    chosen = [d for d in sweep.designs if args.designs is None or d.label in args.designs]
    path = RESULTS / f"study_{args.sweep}.csv"
    if args.write_only:
        write(args.sweep, list(csv.DictReader(path.open())), args)
        return
    for seed in range(args.seeds):
        for design in chosen:  # all designs within a seed in turn: a change in load falls on all
            row = train(
                sweep.claim, design.label, options(sweep, design, args.steps), seed, args, Path(args.runs)
            )
            kept = list(csv.DictReader(path.open())) if path.is_file() else []
            kept = [r for r in kept if (r["design"], str(r["seed"])) != (design.label, str(seed))]
            write(args.sweep, [*kept, row], args)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
