"""MobileNetV2's Figure 1: a 2-D spiral embedded into n dimensions, through a ReLU, and back.

    .venv/bin/python benchmarks/study_spiral.py [--seeds 20]

The paper's argument for linear bottlenecks: a low-dimensional manifold passed through
a ReLU in a space of few dimensions loses information (points collapse onto each other),
in many dimensions it survives. As the figure: the spiral's points ``x`` (2-D) are
embedded by a random Gaussian matrix ``T`` (n x 2), passed through a ReLU and projected
back by ``T``'s pseudo-inverse, ``x' = T^+ ReLU(T x)``, for n = 2, 3, 5, 15, 30.

Measured over ``--seeds`` random matrices per n (mean and standard deviation):

- **lost**: the share of points the ReLU made unrecoverable: fewer than 2 of their n
  coordinates stay positive along independent directions (the rows of ``T`` still active
  at the point span less than the plane), so no inverse can bring the point back;
- **error**: the mean distance, in spiral radii, between ``x`` and the best linear map of
  ``x'`` back onto it (least squares): what the picture shows, the projected-back
  spiral's shape against the original's, without the shrinking that the ReLU's zeros
  cause at any n (about a half: only the positive half of the coordinates remains).

The claim is held when the error at n = 2 exceeds the error at n = 30 by more than two
standard errors of the difference (the studies' protocol), not held when the opposite. Writes ``results/study_spiral.md`` and ``study_spiral.png`` (the figure: the
input spiral and the n = 2 .. 30 outputs of the first seed).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _output import benchmark_parser, save_figure, subplots, write_markdown  # noqa: E402
from _paths import RESULTS  # noqa: E402
from train_common import machine_header  # noqa: E402

DIMENSIONS = (2, 3, 5, 15, 30)
POINTS = 1000


def spiral(points: int = POINTS) -> np.ndarray:
    """An Archimedean spiral of two turns around the origin, ``(points, 2)``, radius 1."""
    t = np.linspace(0.25, 4 * np.pi, points)
    return np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / t.max()


def through_relu(x: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """``x`` embedded into n dimensions, ReLU, projected back; and the share of points lost."""
    embed = rng.standard_normal((n, 2))
    hidden = x @ embed.T
    back = np.maximum(hidden, 0) @ np.linalg.pinv(embed).T
    active = hidden > 0  # (points, n): the rows of T that still see each point
    lost = np.mean([np.linalg.matrix_rank(embed[row]) < 2 if row.any() else True for row in active])
    return back, float(lost)


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--seeds", type=int, default=20, help="random matrices per dimension")
    args = parser.parse_args()
    x = spiral()
    rows, first = [], {}
    for n in DIMENSIONS:
        lost, error = [], []
        for seed in range(args.seeds):
            back, share = through_relu(x, n, np.random.default_rng(seed))
            lost.append(share)
            fitted = back @ np.linalg.lstsq(back, x, rcond=None)[0]
            error.append(float(np.linalg.norm(fitted - x, axis=1).mean()))
            first.setdefault(n, back)
        rows.append((n, np.mean(lost), np.std(lost), np.mean(error), np.std(error)))
    lines = [
        machine_header("MobileNetV2 Figure 1: a spiral through a ReLU in n dimensions").rstrip("\n"),
        f"- {POINTS} points of a 2-turn spiral (radius 1), embedded by a random Gaussian n x 2 matrix T, "
        f"ReLU, projected back by T's pseudo-inverse; {args.seeds} matrices per n (mean +- standard deviation)",
        "- lost: share of points where the rows of T still active span less than the plane "
        "(unrecoverable); error: mean distance to the original point after the best linear map back, in spiral radii",
        "",
        "| n | lost (share of points) | error (radii) |",
        "|---:|---:|---:|",
    ]
    lines += [f"| {n} | {lm:.3f} +- {ls:.3f} | {em:.3f} +- {es:.3f} |" for n, lm, ls, em, es in rows]
    # The protocol of every study: held when the paper's ordering shows with a difference
    # beyond two standard errors, not held when the opposite does, inconclusive otherwise.
    low, high = rows[0], rows[-1]
    margin = 2 * np.hypot(low[4], high[4]) / np.sqrt(args.seeds)
    difference = low[3] - high[3]
    verdict = "held" if difference > margin else "not held" if difference < -margin else "inconclusive"
    lines += [
        "",
        f"Claim (information collapses through a ReLU in few dimensions, survives in many): **{verdict}**: "
        f"the error falls by {difference:.3f} radii from n = 2 to n = 30 (two standard errors: {margin:.3f}); "
        f"points lost at n = 2: {low[1]:.0%}, at n = 30: {high[1]:.1%}.",
        "",
        "![the spiral and its ReLU outputs](study_spiral.png)",
    ]
    write_markdown(lines, RESULTS / "study_spiral.md")
    fig, axes = subplots(1, len(DIMENSIONS) + 1, figsize=(2.2 * (len(DIMENSIONS) + 1), 2.4))
    colours = np.linspace(0, 1, len(x))
    for ax, (title, points) in zip(
        axes, [("input", x)] + [(f"n = {n}", first[n]) for n in DIMENSIONS], strict=True
    ):
        ax.scatter(points[:, 0], points[:, 1], c=colours, s=2, cmap="viridis")
        ax.set_title(title, fontsize=9)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("MobileNetV2 Fig. 1: spiral -> random n x 2 matrix -> ReLU -> pseudo-inverse", fontsize=9)
    save_figure(fig, RESULTS / "study_spiral.png")


if __name__ == "__main__":
    main()
