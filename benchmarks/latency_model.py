"""The latency model against the clock: predicted and measured latency of every registered model.

    LIGHTNETS_CACHE=/tmp/lightnets_bench_cache python benchmarks/latency_model.py \\
        [--backends ort_fp32 folded] [--threads 1] [--models mobilenet_v2 ...]

For every registered classification model (the four families' presets and the reference
networks) at its own input size, batch 1: the latency the lookup tables predict
(``lightnets.deploy.latency.LatencyTable``, the operators timed once and cached) and the
latency measured the way ``lightnets bench`` measures it (the whole network, a fresh
process per model and backend, median of ``--runs`` calls), in ``--rounds`` rounds that
each measure every model in turn; the lowest of a model's round medians is its latency, as
a shared machine's noise only adds time (the spread between rounds is in the CSV). The
error is predicted / measured - 1; the goal is a median absolute error of at most 10 % per
backend. Writes results/latency_model.md, .csv and .png (predicted against measured).
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _output import benchmark_parser, save_figure, subplots, write_csv, write_markdown  # noqa: E402
from _paths import RESULTS  # noqa: E402

from lightnets import create_model, list_models  # noqa: E402
from lightnets.deploy import bench  # noqa: E402
from lightnets.deploy.bench_report import machine_description  # noqa: E402
from lightnets.deploy.latency import LATENCY_BACKENDS, LatencyTable  # noqa: E402
from lightnets.models.registry import get_entry  # noqa: E402

TASKS = ("ssd", "ssdlite", "deeplabv3")  # detection and segmentation models: not classifiers
GOAL = 0.10


def classifiers() -> list[str]:
    return [name for name in list_models() if not name.startswith(TASKS)]


def family(name: str) -> str:
    return get_entry(name).family


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument(
        "--backends", nargs="+", choices=list(LATENCY_BACKENDS), default=list(LATENCY_BACKENDS)
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", nargs="+", default=None, help="default: every registered classifier")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each model, interleaved")
    parser.add_argument("--write-only", action="store_true", help="rewrite the .md and .png from the .csv")
    args = parser.parse_args()
    if args.write_only:
        import csv

        rows = [
            {k: v if k in ("model", "family", "backend") else float(v) for k, v in r.items()}
            | {"input": int(r["input"])}
            for r in csv.DictReader((RESULTS / "latency_model.csv").open())
        ]
        calibrations = {b: LatencyTable(b, args.threads).calibration for b in args.backends}
        write(rows, args, math.nan, calibrations, fresh=False)
        return
    models = args.models or classifiers()
    started = time.time()
    fresh = not any(LatencyTable(b, args.threads).entries for b in args.backends)
    sides = {name: int(getattr(create_model(name), "default_input_size", 224)) for name in models}
    medians: dict[tuple[str, str], list[float]] = {}
    madds: dict[str, float] = {}
    for round_ in range(args.rounds):
        for name in tqdm(models, desc=f"measuring, round {round_ + 1} of {args.rounds}", unit="model"):
            targets = bench.model_targets(name, backends=args.backends, input_size=sides[name])
            for m in bench.benchmark(targets, (args.threads,), runs=args.runs, progress=False):
                medians.setdefault((name, m.backend), []).append(m.latency_ms)
                madds[name] = m.madds
    rows = []
    for name in models:
        net, side = create_model(name).eval(), sides[name]
        for backend in args.backends:
            table = LatencyTable(backend, args.threads)
            timing = time.time()
            predicted = table.predict(net, (3, side, side))
            rounds = medians[name, backend]
            truth = min(rounds)
            row = {
                "model": name,
                "family": family(name),
                "input": side,
                "backend": backend,
                "threads": args.threads,
                "madds_m": round(madds[name] / 1e6, 1),
                "measured_ms": round(truth, 3),
                "rounds_spread_pct": round(100 * (max(rounds) / truth - 1), 1),
                "sum_ms": round(predicted.raw_ms, 3),
                "sum_error_pct": round(100 * (predicted.raw_ms / truth - 1), 1),
                "predicted_ms": round(predicted.latency_ms, 3),
                "error_pct": round(100 * (predicted.latency_ms / truth - 1), 1),
                "operators": len(predicted.operators),
                "prediction_s": round(time.time() - timing, 1),
            }
            rows.append(row)
            print(row, flush=True)
    calibrations = {b: LatencyTable(b, args.threads).calibration for b in args.backends}
    write(rows, args, time.time() - started, calibrations, fresh)


def write(rows: list[dict], args, seconds: float, calibrations: dict, fresh: bool) -> None:
    write_csv(rows, RESULTS / "latency_model.csv")
    lines = [
        "# The latency model: predicted against measured batch-1 latency",
        "",
        f"- Machine: {machine_description()}",
        f"- Made by `LIGHTNETS_CACHE=/tmp/lightnets_bench_cache python benchmarks/latency_model.py "
        f"--threads {args.threads}`"
        + (f" in {seconds / 60:.0f} minutes" if math.isfinite(seconds) else "")
        + (", operator tables timed and calibrated from an empty cache" if fresh else ""),
        "- Sum: the network's operators in the lookup table (each timed alone, batch 1) and the runtime's fixed "
        "cost per call once; predicted: that sum calibrated (scale x sum + cost per operator x operators + "
        "constant, fitted on the whole latency of 12 networks of the four families at sides 96-192, none of "
        "them a model below); measured: the whole network as `lightnets bench` times it "
        f"(fresh process, median of {args.runs} calls), {args.threads} thread(s), the lowest median of "
        f"{args.rounds} rounds that each measure every model in turn (spread: highest / lowest - 1)",
        f"- Goal: median absolute error <= {GOAL:.0%} per backend",
        "",
    ]
    for backend, calibration in calibrations.items():
        if calibration is not None:
            lines.append(
                f"- Calibration of {backend}: scale {calibration.scale:.3f}, {1e3 * calibration.per_operator:+.1f} us "
                f"per operator, constant {calibration.constant:+.3f} ms (median error on its own 12 networks "
                f"{100 * calibration.median_error:.1f} %)"
            )
    lines += [
        "",
        "| backend | family | models | median abs error (sum) | median abs error (predicted) | worst (predicted) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for backend in args.backends:
        mine = [r for r in rows if r["backend"] == backend]
        for name in [*sorted({r["family"] for r in mine}), "all"]:
            group = [r for r in mine if name in ("all", r["family"])]
            summed = statistics.median(abs(r["sum_error_pct"]) for r in group)
            predicted = [abs(r["error_pct"]) for r in group]
            verdict = "met" if statistics.median(predicted) <= 100 * GOAL else "not met"
            label = f"**all** ({verdict})" if name == "all" else name
            lines.append(
                f"| {backend} | {label} | {len(group)} | {summed:.1f} % | {statistics.median(predicted):.1f} % "
                f"| {max(predicted):.1f} % |"
            )
    lines += [
        "",
        "| model | input | MAdds (M) | backend | measured ms | spread | sum ms | error | predicted ms | error |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['model']} | {r['input']} | {r['madds_m']} | {r['backend']} | {r['measured_ms']} | "
        f"{r['rounds_spread_pct']:.1f} % | {r['sum_ms']} | "
        f"{r['sum_error_pct']:+.1f} % | {r['predicted_ms']} | {r['error_pct']:+.1f} % |"
        for r in rows
    ]
    write_markdown(lines, RESULTS / "latency_model.md")
    fig, ax = subplots(figsize=(6, 5))
    for backend, marker in zip(args.backends, "os", strict=False):
        mine = [r for r in rows if r["backend"] == backend]
        ax.loglog(
            [r["measured_ms"] for r in mine],
            [r["predicted_ms"] for r in mine],
            marker,
            label=backend,
            alpha=0.7,
        )
    low = min(min(r["measured_ms"], r["predicted_ms"]) for r in rows)
    high = max(max(r["measured_ms"], r["predicted_ms"]) for r in rows)
    ax.plot([low, high], [low, high], "k-", lw=0.8, label="predicted = measured")
    ax.fill_between([low, high], [low * (1 - GOAL), high * (1 - GOAL)], [low * (1 + GOAL), high * (1 + GOAL)],
                    color="grey", alpha=0.15, label=f"±{GOAL:.0%}")  # fmt: skip
    ax.set_xlabel("measured latency (ms, batch 1)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(f"Latency model, every registered classifier, {args.threads} thread(s)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    save_figure(fig, RESULTS / "latency_model.png")


if __name__ == "__main__":
    main()
