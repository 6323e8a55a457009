"""``lightnets search``: the best networks of the four families under a budget."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..arguments import add_command, positive_int, positive_number, quantity
from ..deploy.latency import LATENCY_BACKENDS
from ..render import render
from .space import RESOLUTIONS, SPACE

SUMMARY = "the best networks under MAdds / parameter / memory / latency bounds"
DESCRIPTION = """\
Find the networks of the four families (their knobs: width, resolution, expansion, groups,
scale, SR, pct3x3, bypass; see lightnets.search.space) that meet every given bound, and
print their Pareto front: predicted ImageNet top-1 against the constrained cost (--cost).
Costs are exact: MAdds and parameters from the analyser, peak activation memory (float32)
from its block execution model, batch-1 latency on this machine from the latency model
(operators timed once per backend and thread count, then cached). Accuracy is predicted
by a curve fitted to the top-1 the papers report, with their ablations' offsets for
choices such as SqueezeNet's bypass (its leave-one-out rank correlation is printed); --train DATA trains members of the front on DATA to check it. The search keeps
its state in --out and resumes there after an interruption.
"""

EPILOG = """\
examples:
  lightnets search --max-madds 50M --max-latency 5
  lightnets search --max-params 1.5M --max-memory 2M --format json
  lightnets search --max-madds 150M --families mobilenet_v2 shufflenet_v1 --plot front.png
  lightnets search --max-madds 50M --max-latency 5 --train data/imagenette --train-budget 90s
"""
COST_CHOICES = {"madds": "madds", "params": "params", "memory": "peak_memory", "latency": "latency_ms"}
HEADERS = ["model", "kwargs", "resolution", "madds", "params", "peak_memory", "latency_ms", "predicted_top1"]


def add_search_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = add_command(subparsers, "search", SUMMARY, DESCRIPTION, EPILOG)
    bounds = p.add_argument_group("bounds (K, M, G: thousand, million, billion)")
    bounds.add_argument("--max-madds", type=quantity, metavar="N", help="multiply-adds, e.g. 50M")
    bounds.add_argument(
        "--max-params", type=quantity, metavar="N", help="parameters (BatchNorm folded), e.g. 1.5M"
    )
    bounds.add_argument(
        "--max-memory", type=quantity, metavar="BYTES", help="peak activation memory, e.g. 2M"
    )
    bounds.add_argument(
        "--max-latency", type=positive_number, metavar="MS", help="batch-1 latency in ms on this machine"
    )
    p.add_argument(
        "--cost",
        choices=list(COST_CHOICES),
        help="the cost the front is drawn against (default: the first bounded of latency, madds, params, memory)",
    )
    p.add_argument(
        "--families", nargs="+", choices=list(SPACE), metavar="FAMILY", help=f"of {', '.join(SPACE)}"
    )
    p.add_argument(
        "--resolutions", nargs="+", type=positive_int, default=list(RESOLUTIONS), metavar="SIDE",
        help=f"input sides searched (default {' '.join(map(str, RESOLUTIONS))})",
    )  # fmt: skip
    p.add_argument(
        "--backend", choices=list(LATENCY_BACKENDS), default="ort_fp32", help="the runtime latency refers to"
    )
    p.add_argument("--threads", type=positive_int, default=1, help="threads latency refers to (1)")
    p.add_argument("--out", default="runs/search", metavar="DIR", help="the search's state and proxy runs")
    p.add_argument("--plot", metavar="FILE.png", help="draw every fitting network and the front")
    p.add_argument("--format", choices=("table", "json"), default="table")
    proxy = p.add_argument_group("proxy trainings (check the prediction on your data)")
    proxy.add_argument(
        "--train", metavar="DATA", help="class folders (train/ and val/) to train the front on"
    )
    proxy.add_argument("--train-budget", default="90s", metavar="TIME", help="per training, e.g. 90s or 5m")
    proxy.add_argument(
        "--train-top", type=positive_int, default=3, metavar="K", help="members of the front trained"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_search)
    return p


def cmd_search(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..train.config import parse_duration
    from .accuracy import spearman
    from .proxy import proxy_train, spread
    from .search import Constraints, search

    constraints = Constraints(args.max_madds, args.max_params, args.max_memory, args.max_latency)
    budget = parse_duration(args.train_budget) if args.train else None
    if args.train and not Path(args.train).is_dir():
        raise ValueError(f"--train {args.train}: no such folder (class folders in train/ and val/)")
    out = Path(args.out)
    result = search(
        constraints,
        COST_CHOICES[args.cost] if args.cost else None,
        args.families,
        args.resolutions,
        args.backend,
        args.threads,
        out,
        progress=None if args.quiet else lambda pool, n: tqdm(pool, total=n, desc="search", unit="net"),
        show_calibration=not args.quiet,
    )
    headers = list(HEADERS)
    if args.train:
        assert budget is not None
        headers.append("proxy_top1")
        proxy_train(spread(result.front, args.train_top), args.train, budget, out, progress=not args.quiet)
    best_first = list(reversed(result.front))
    if args.format == "json":
        print(json.dumps([row.to_dict() for row in best_first], indent=2))
    else:
        table = []
        for row in best_first:
            values = row.to_dict()
            cells = [values[h] for h in headers]
            cells[1] = _options(values["kwargs"])
            cells[HEADERS.index("predicted_top1")] = (
                f"{row.predicted_top1:.1f}{'*' if row.extrapolated else ''}"
            )
            table.append(cells)
        print(render(headers, table, "table"))
        if any(row.extrapolated for row in best_first):
            print("* outside the MAdds of the networks the papers report: extrapolated")
        loo = result.accuracy.leave_one_out()
        print(
            f"\n{len(result.fitting)} of {result.space_size} networks "
            f"fit; the front against {result.cost}, best predicted first. Predicted top-1: curve fitted to "
            f"{len(result.accuracy.points)} top-1 the papers report; on held-back configurations its rank "
            f"correlation is {spearman([p.top1 for p, _ in loo], [q for _, q in loo]):.2f}."
        )
        trained = [(r.predicted_top1 or 0.0, r.proxy_top1) for r in result.front if r.proxy_top1 is not None]
        if len(trained) >= 2:
            rho = spearman([p for p, _ in trained], [m for _, m in trained])
            print(
                f"Proxy trainings ({args.train_budget} each on {args.train}): rank correlation with the prediction {rho:.2f}."
            )
    if args.plot:
        from .plot import plot_front

        # Beside JSON on standard output, the note goes to standard error.
        print(
            f"written {plot_front(result, args.plot)}",
            file=sys.stderr if args.format == "json" else sys.stdout,
        )
    return 0


def _options(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in kwargs.items())
