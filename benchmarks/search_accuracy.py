"""How well the search's accuracy curve predicts configurations it did not see.

    python benchmarks/search_accuracy.py

The curve of ``lightnets.search.accuracy`` is fitted to the ImageNet top-1 the papers
report for the four families. Each configuration is left out in turn, the curve refitted
to the others and the configuration predicted (SqueezeNet 1.0 cannot be left out: the only
other reported SqueezeNets have bypasses, whose offsets could not be told from the
family's intercept; an ablation left out is predicted without its offset). Writes
results/search_accuracy.md: every prediction, the mean absolute error and Spearman's rank
correlation. The counts behind it (MAdds) do not depend on the machine.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _output import benchmark_parser, write_markdown  # noqa: E402
from _paths import RESULTS  # noqa: E402

from lightnets.deploy.bench_report import machine_description  # noqa: E402
from lightnets.search import AccuracyModel, spearman  # noqa: E402


def main() -> None:
    benchmark_parser(__doc__).parse_args()
    model = AccuracyModel.from_papers()
    held_back = model.leave_one_out()
    errors = [predicted - point.top1 for point, predicted in held_back]
    rho = spearman([p.top1 for p, _ in held_back], [q for _, q in held_back])
    lines = [
        "# The search's accuracy curve on configurations it did not see",
        "",
        f"- Machine: {machine_description()}",
        "- Made by `python benchmarks/search_accuracy.py`",
        f"- Fitted to {len(model.points)} reported top-1 figures; {len(held_back)} left out one at a time",
        f"- Mean absolute error **{statistics.mean(abs(e) for e in errors):.2f} points**, Spearman rank "
        f"correlation **{rho:.2f}**",
        "",
        "| configuration | family | MAdds (M) | reported top-1 % | predicted when left out | error |",
        "|---|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {p.label} | {p.family} | {p.madds / 1e6:.1f} | {p.top1} | {q:.1f} | {q - p.top1:+.1f} |"
        for p, q in held_back
    ]
    write_markdown(lines, RESULTS / "search_accuracy.md")


if __name__ == "__main__":
    main()
