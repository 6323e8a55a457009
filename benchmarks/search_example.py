"""The README's search example: the best network under 50 M MAdds and 5 ms, trained on the proxy.

    LIGHTNETS_CACHE=/tmp/lightnets_bench_cache python benchmarks/search_example.py \\
        [--max-madds 50M] [--max-latency 5] [--train-budget 90s] [--train-top 3]

Runs ``lightnets search`` with the bounds (ONNX Runtime, one thread), training the most
accurate member of the front and others spread over it on the Imagenette subset for the
budget each (the design studies' proxy protocol), and writes the command's table, the
front's plot and the machine to results/search_example.md / .png / .json.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _output import benchmark_parser, write_markdown  # noqa: E402
from _paths import IMAGENETTE, REPO, RESULTS  # noqa: E402
from train_common import load_average  # noqa: E402

from lightnets.deploy.bench_report import machine_description  # noqa: E402
from lightnets.deploy.latency import LatencyTable  # noqa: E402
from lightnets.files import write_text  # noqa: E402


def proxy_rows(out: Path) -> list[str]:
    rows = []
    for summary in sorted(out.glob("proxy/*/summary.json")):
        run = json.loads(summary.read_text())
        rows.append(f"| {summary.parent.name} | {run['steps']} | {run['recommended']['val_top1']:.1f} |")
    return rows


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--max-madds", default="50M")
    parser.add_argument("--max-latency", default="5")
    parser.add_argument("--train-budget", default="90s")
    parser.add_argument("--train-top", default="3")
    parser.add_argument("--out", default="/tmp/lightnets_search_example")
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)  # a fresh search: its minutes are the whole job
    command = [
        "lightnets", "search", "--max-madds", args.max_madds, "--max-latency", args.max_latency,
        "--train", str(IMAGENETTE), "--train-budget", args.train_budget, "--train-top", args.train_top,
        "--out", args.out, "--quiet",
    ]  # fmt: skip
    executable = [str(REPO / ".venv" / "bin" / "python"), "-m", "lightnets"]
    fresh = not LatencyTable("ort_fp32", 1).entries
    load_before, started = load_average(), time.time()
    table = subprocess.run(
        [*executable, *command[1:], "--plot", str(RESULTS / "search_example.png")],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    minutes = (time.time() - started) / 60
    shared = ("../shared/data/" + IMAGENETTE.name, str(IMAGENETTE))
    table = "\n".join(line for line in table.splitlines() if not line.startswith("written ")).replace(
        shared[1], shared[0]
    )
    # The same search again, now answered from its state: the front as JSON.
    rows = json.loads(
        subprocess.run(
            [*executable, *command[1:], "--format", "json"], check=True, capture_output=True, text=True
        ).stdout
    )
    write_text(RESULTS / "search_example.json", json.dumps(rows, indent=2) + "\n")
    shown = " ".join(shlex.quote(a) for a in command).replace(
        str(IMAGENETTE), "../shared/data/" + IMAGENETTE.name
    )
    write_markdown(
        [
            f"# lightnets search: the best network under {args.max_madds} MAdds and {args.max_latency} ms",
            "",
            f"- Machine: {machine_description()}",
            f"- Load average before / after: {load_before} / {load_average()}; {minutes:.0f} minutes in all "
            f"({'latency tables timed and calibrated from an empty cache' if fresh else 'latency tables cached'}, "
            "then the proxy trainings)",
            f"- Made by `LIGHTNETS_CACHE=/tmp/lightnets_bench_cache python benchmarks/search_example.py`, which runs "
            f"`{shown}`",
            "- predicted_top1: ImageNet top-1 from the curve fitted to the papers' reported accuracies; proxy_top1: "
            f"Imagenette val top-1 after `lightnets train --time-budget {args.train_budget}` from scratch at the "
            "candidate's resolution",
            "",
            "```",
            table.rstrip(),
            "```",
            "",
            "The proxy trainings (each run's summary.json):",
            "",
            "| run | steps | val top-1 % |",
            "|---|---:|---:|",
            *proxy_rows(Path(args.out)),
        ],
        RESULTS / "search_example.md",
    )


if __name__ == "__main__":
    main()
