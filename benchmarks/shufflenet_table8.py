"""ShuffleNet's Table 8 on this CPU: latency at three input sizes, and what 4x fewer MAdds buys.

    python benchmarks/shufflenet_table8.py                  # about 4 minutes
    python benchmarks/shufflenet_table8.py --rounds 50 --runtimes ort_fp32

The ShuffleNet paper (Table 8) timed ShuffleNet 0.5x / 1x / 2x (g = 3), 1.0 MobileNet-224
and AlexNet on a Snapdragon 820, one thread, at 224x224, 480x640 and 720x1280, and found
that every 4x cut in theoretical complexity gave about 2.6x actual speed-up. Here the
same networks (random weights: latency does not depend on their values) are exported
to each runtime at each input size (fp32, batch 1, fixed shape) and timed on one
thread, every model of a size in one process, one call of each in turn
(``lightnets.deploy.bench.interleaved``), the median of ``--rounds`` rounds.

Reported per runtime: the latencies, each as a ratio to ShuffleNet 1x at 224x224 (the
paper: 37.8 / 222.2 / 684.5 ms for ShuffleNet 1x, ratios 1 / 5.9 / 18.1), and the
speed-up a 4x cut in MAdds gives, from a least-squares fit of log latency against log
MAdds over ShuffleNet 0.5x, 1x and 2x at each size (``speedup_per_madds_cut``), the
comparison the paper's claim is about. A model that a runtime
cannot take at a size is listed with the reason. Writes results/shufflenet_table8.md,
.csv and .png.
"""

from __future__ import annotations

import shlex
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from _output import benchmark_parser, save_figure, subplots, write_csv, write_markdown
from _paths import RESULTS

from lightnets import create_model
from lightnets.cost import profile
from lightnets.deploy import bench
from lightnets.deploy.bench_report import machine_description
from lightnets.deploy.export import export_onnx
from lightnets.deploy.tflite import export_tflite

MODELS = {
    "ShuffleNet 0.5x (g=3)": ("shufflenet_v1", {"groups": 3, "scale": 0.5}),
    "ShuffleNet 1x (g=3)": ("shufflenet_v1", {"groups": 3}),
    "ShuffleNet 2x (g=3)": ("shufflenet_v1", {"groups": 3, "scale": 2.0}),
    "1.0 MobileNet-224": ("mobilenet_v1", {"width": 1.0}),
    "AlexNet": ("alexnet", {}),
}
SIZES = [(224, 224), (480, 640), (720, 1280)]
PAPER_SHUFFLENET_1X_MS = {(224, 224): 37.8, (480, 640): 222.2, (720, 1280): 684.5}
# Each runtime's exported file, fixed batch 1 as on a phone.
EXPORTERS = {
    "ort_fp32": (partial(export_onnx, dynamic_batch=False), ".onnx"),
    "litert_fp32": (export_tflite, ".tflite"),
}
REFERENCE = "ShuffleNet 1x (g=3)"


def targets_at(
    size: tuple[int, int], runtime: str, folder: Path
) -> tuple[list[bench.Target], dict[str, str]]:
    """The runtime's file of every model at ``size``; and the models it could not take, with why."""
    export, suffix = EXPORTERS[runtime]
    targets, refused = [], {}
    for label, (name, kwargs) in MODELS.items():
        model = create_model(name, **kwargs).eval()
        madds = profile(model, (3, *size)).madds
        path = folder / f"{name}-{'-'.join(map(str, kwargs.values()))}-{size[0]}x{size[1]}{suffix}"
        try:
            export(model, path, input_size=size)
        except ValueError as error:
            refused[label] = str(error).split("\n")[0][:160]
            continue
        targets.append(bench.Target(label, runtime, madds, model=name, input_size=size, file=str(path)))
    return targets, refused


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=60, help="interleaved rounds per size (60)")
    parser.add_argument("--runtimes", nargs="+", default=list(EXPORTERS), choices=list(EXPORTERS))
    args = parser.parse_args()
    started = time.time()
    rows: list[dict] = []
    refusals: list[str] = []
    with tempfile.TemporaryDirectory(prefix="lightnets-table8-") as folder:
        for runtime in args.runtimes:
            for size in SIZES:
                targets, refused = targets_at(size, runtime, Path(folder))
                refusals += [
                    f"- {runtime}, {label} at {size[0]}x{size[1]}: {why}" for label, why in refused.items()
                ]
                measured, _ = bench.interleaved(targets, 1, runs=max(args.rounds, bench.MIN_RUNS), warmup=3)
                for m in measured:
                    rows.append(
                        {
                            "runtime": runtime,
                            "model": m.label,
                            "input": f"{size[0]}x{size[1]}",
                            "madds_m": round(m.madds / 1e6, 1),
                            "ms": round(m.latency_ms, 2),
                        }
                    )
                    print(
                        f"{runtime:12s} {m.label:24s} {size[0]}x{size[1]:<5d} {m.latency_ms:9.2f} ms",
                        flush=True,
                    )
    write(rows, refusals, args, time.time() - started)


def fit_lines(rows: list[dict], runtimes: list[str]) -> list[str]:
    lines = []
    for runtime in runtimes:
        for size in SIZES:
            label = f"{size[0]}x{size[1]}"
            # The paper's claim compares the ShuffleNets (0.5x, 1x, 2x) with one another.
            at = [
                r
                for r in rows
                if r["runtime"] == runtime and r["input"] == label and r["model"].startswith("ShuffleNet")
            ]
            points = [
                bench.Measurement(
                    r["model"], runtime, 1, int(r["madds_m"] * 1e6), r["ms"], r["ms"], 1, 1, 0.0, None
                )
                for r in at
            ]
            speedup = bench.speedup_per_madds_cut(points)
            if speedup is not None:
                lines.append(
                    f"- {runtime}, {label}: across ShuffleNet 0.5x / 1x / 2x, a 4x cut in MAdds gives **{speedup:.2f}x** (paper, Snapdragon 820: about 2.6x)"
                )
    return lines


def write(rows: list[dict], refusals: list[str], args, seconds: float) -> None:
    base = {r["runtime"]: r["ms"] for r in rows if r["model"] == REFERENCE and r["input"] == "224x224"}
    for r in rows:
        r["ratio_to_shufflenet_1x_224"] = (
            round(r["ms"] / base[r["runtime"]], 2) if r["runtime"] in base else ""
        )
    write_csv(rows, RESULTS / "shufflenet_table8.csv")
    paper = " / ".join(f"{PAPER_SHUFFLENET_1X_MS[s]:.1f}" for s in SIZES)
    paper_ratios = " / ".join(
        f"{PAPER_SHUFFLENET_1X_MS[s] / PAPER_SHUFFLENET_1X_MS[SIZES[0]]:.1f}" for s in SIZES
    )
    table = ["| runtime | model | " + " | ".join(f"{h}x{w} ms (ratio)" for h, w in SIZES) + " |"]
    table.append("|---|---|" + "---:|" * len(SIZES))
    for runtime in args.runtimes:
        for label in MODELS:
            cells = []
            for h, w in SIZES:
                found = [
                    r
                    for r in rows
                    if r["runtime"] == runtime and r["model"] == label and r["input"] == f"{h}x{w}"
                ]
                cells.append(
                    f"{found[0]['ms']:.1f} ({found[0]['ratio_to_shufflenet_1x_224']})" if found else "-"
                )
            table.append(f"| {runtime} | {label} | " + " | ".join(cells) + " |")
    write_markdown(
        [
            "# ShuffleNet Table 8 on this CPU",
            "",
            f"Command: `{('python benchmarks/shufflenet_table8.py ' + shlex.join(sys.argv[1:])).strip()}`",
            f"Machine: {machine_description()}; {seconds / 60:.0f} minutes.",
            "",
            "fp32, batch 1, one thread; the models of one size and runtime timed in one process, one "
            f"call of each in turn, medians of {args.rounds} rounds. In brackets: the ratio to "
            f"ShuffleNet 1x at 224x224 on the same runtime. The paper's ShuffleNet 1x on a Snapdragon "
            f"820: {paper} ms (ratios {paper_ratios}).",
            "",
            *table,
            "",
            "## Speed-up of a 4x cut in multiply-adds",
            "",
            *fit_lines(rows, args.runtimes),
            *(["", "## Not measured", "", *refusals] if refusals else []),
        ],
        RESULTS / "shufflenet_table8.md",
    )
    plot(rows, args.runtimes)


def plot(rows: list[dict], runtimes: list[str]) -> None:
    fig, axes = subplots(1, len(runtimes), figsize=(6 * len(runtimes), 4.5), squeeze=False)
    for ax, runtime in zip(axes[0], runtimes, strict=True):
        for label in MODELS:
            points = [
                (r["madds_m"], r["ms"]) for r in rows if r["runtime"] == runtime and r["model"] == label
            ]
            if points:
                ax.plot(*zip(*points, strict=True), "o-", label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("M multiply-adds (224x224, 480x640, 720x1280)")
        ax.set_ylabel("ms, one thread")
        ax.set_title(runtime)
    axes[0][0].legend(fontsize=8)
    save_figure(fig, RESULTS / "shufflenet_table8.png")


if __name__ == "__main__":
    main()
