"""Training throughput (images/s) of lightnets' MobileNetV2 against torchvision's, same loop.

    nice -n 10 .venv/bin/python benchmarks/train_throughput.py [--rounds 5] [--steps 3]

Both networks are MobileNetV2 1.0 with 1000 classes (the same architecture: the same
layers, shapes and parameter count, checked below). Each training step is the same
code: forward, cross-entropy, backward, SGD with momentum, on a fixed random batch, in
training mode, with 2 PyTorch threads. The two models are measured in alternation,
``--rounds`` times ``--steps`` steps each, and the median images/s of each is reported,
so that load from other jobs on the machine falls on both alike. torchvision is used
here only (never by the library), through tests/peers.py.

Writes results/train_throughput.md and .csv.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from _output import benchmark_parser, write_csv  # noqa: E402
from _paths import RESULTS  # noqa: E402
from torch import nn
from train_common import machine_header  # noqa: E402

import lightnets  # noqa: E402
from peers import import_torchvision  # noqa: E402


def step_fn(model: nn.Module, images: torch.Tensor, labels: torch.Tensor):
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step() -> None:
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def measure(steps: dict[str, callable], batch: int, rounds: int, per_round: int) -> dict[str, list[float]]:
    """images/s of each step function, measured alternately ``rounds`` times (the order
    flips every round, so neither model always runs right after the other)."""
    for step in steps.values():  # warm-up: allocator, oneDNN primitive caches
        step()
        step()
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(rounds):
        order = list(steps) if r % 2 == 0 else list(steps)[::-1]
        for name in order:
            start = time.perf_counter()
            for _ in range(per_round):
                steps[name]()
            rates[name].append(batch * per_round / (time.perf_counter() - start))
    return rates


def bootstrap_interval(values: list[float], resamples: int = 10_000) -> tuple[float, float]:
    """95% bootstrap interval of the median of ``values``."""
    rng = np.random.default_rng(0)
    samples = rng.choice(np.asarray(values), size=(resamples, len(values)), replace=True)
    medians = np.median(samples, axis=1)
    return float(np.percentile(medians, 2.5)), float(np.percentile(medians, 97.5))


def operator_counts(model: nn.Module, resolution: int = 64) -> dict[str, int]:
    """How many times each ATen operator runs in one training step (forward and backward)."""
    from torch.profiler import ProfilerActivity, profile

    images, labels = torch.randn(2, 3, resolution, resolution), torch.randint(0, 1000, (2,))
    step = step_fn(model, images, labels)
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return {e.key: e.count for e in prof.key_averages() if e.key.startswith("aten::")}


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="steps per round")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[128, 224])
    parser.add_argument("--channels-last", action="store_true", help="also measure NHWC")
    args = parser.parse_args()
    torch.set_num_threads(2)
    tvm = import_torchvision()

    rows = []
    for resolution in args.resolutions:
        for channels_last in [False, True] if args.channels_last else [False]:
            torch.manual_seed(0)
            ours = lightnets.create_model("mobilenet_v2", num_classes=1000).train()
            theirs = tvm.mobilenet_v2(num_classes=1000).train()
            # The same weights in both (the state dicts list the same tensors in the same
            # order): the initialisations differ, and the values must not be what differs.
            ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
            assert [v.shape for v in ours_state.values()] == [v.shape for v in theirs_state.values()]
            theirs.load_state_dict(
                {k: v.clone() for k, v in zip(theirs_state, ours_state.values(), strict=True)}
            )
            n_ours = sum(p.numel() for p in ours.parameters())
            n_theirs = sum(p.numel() for p in theirs.parameters())
            assert n_ours == n_theirs, (n_ours, n_theirs)
            images = torch.randn(args.batch, 3, resolution, resolution)
            labels = torch.randint(0, 1000, (args.batch,))
            if channels_last:
                ours.to(memory_format=torch.channels_last)
                theirs.to(memory_format=torch.channels_last)
                images = images.contiguous(memory_format=torch.channels_last)
            rates = measure(
                {"lightnets": step_fn(ours, images, labels), "torchvision": step_fn(theirs, images, labels)},
                args.batch,
                args.rounds,
                args.steps,
            )
            median = {k: statistics.median(v) for k, v in rates.items()}
            best = {k: max(v) for k, v in rates.items()}
            # Paired: each round's two figures were taken back to back, under the same load.
            pairs = [a / b for a, b in zip(rates["lightnets"], rates["torchvision"], strict=True)]
            row = {
                "resolution": resolution,
                "memory_format": "channels_last" if channels_last else "contiguous",
                "batch": args.batch,
                "lightnets_img_s": round(median["lightnets"], 2),
                "torchvision_img_s": round(median["torchvision"], 2),
                "ratio": round(median["lightnets"] / median["torchvision"], 3),
                "paired_ratio": round(statistics.median(pairs), 3),
                "paired_ratio_95ci": "{:.3f}-{:.3f}".format(*bootstrap_interval(pairs)),
                "lightnets_best_img_s": round(best["lightnets"], 2),
                "torchvision_best_img_s": round(best["torchvision"], 2),
                "best_ratio": round(best["lightnets"] / best["torchvision"], 3),
                "lightnets_rounds": " ".join(f"{x:.1f}" for x in rates["lightnets"]),
                "torchvision_rounds": " ".join(f"{x:.1f}" for x in rates["torchvision"]),
                "params": n_ours,
            }
            rows.append(row)
            print(row, flush=True)

    counts_ours = operator_counts(lightnets.create_model("mobilenet_v2").train())
    counts_theirs = operator_counts(tvm.mobilenet_v2().train())
    same_ops = counts_ours == counts_theirs
    RESULTS.mkdir(exist_ok=True)
    write_csv(rows, RESULTS / "train_throughput.csv")
    lines = [
        machine_header("Training throughput: lightnets MobileNetV2 vs torchvision, same loop"),
        "MobileNetV2 1.0, 1000 classes, batch "
        f"{args.batch}, SGD with momentum, cross-entropy, training mode, 2 threads; "
        f"{args.rounds} alternating rounds of {args.steps} steps after 2 warm-up steps each; "
        "median images/s (each round's figure in the CSV). Both models hold the same weights. "
        "The paired ratio is the median over rounds of (lightnets / torchvision) within a round, "
        "taken back to back under the same load; it is the headline figure, because other jobs "
        "on the machine change its speed several-fold from one minute to the next (see the rounds). "
        "Its 95% interval is a bootstrap over the rounds. Best-of figures (the least disturbed round "
        "of each) are given as a check.\n",
        "| input | memory format | lightnets img/s (median / best) | torchvision img/s (median / best) "
        "| paired ratio | its 95% interval | ratio of medians | ratio of bests |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['resolution']} px | {r['memory_format']} | {r['lightnets_img_s']} / {r['lightnets_best_img_s']} | "
            f"{r['torchvision_img_s']} / {r['torchvision_best_img_s']} | **{r['paired_ratio']}** | "
            f"{r['paired_ratio_95ci']} | {r['ratio']} | "
            f"{r['best_ratio']} |"
        )
    lines.append(
        f"\nStructure check (torch.profiler, one training step): lightnets runs "
        f"{sum(counts_ours.values())} ATen operator calls, torchvision {sum(counts_theirs.values())}; "
        + ("the same operators the same number of times." if same_ops else "the operator counts DIFFER.")
    )
    lines.append("\nRounds (images/s), lightnets then torchvision:\n")
    for r in rows:
        lines.append(
            f"- {r['resolution']} px {r['memory_format']}: {r['lightnets_rounds']} | {r['torchvision_rounds']}"
        )
    (RESULTS / "train_throughput.md").write_text("\n".join(lines) + "\n")
    print(f"written {RESULTS / 'train_throughput.md'}")


if __name__ == "__main__":
    main()
