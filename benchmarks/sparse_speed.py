"""Is unstructured sparsity fast? Dense, sparse and structurally pruned layers, timed.

    python benchmarks/sparse_speed.py                 # under a minute on 2 cores
    python benchmarks/sparse_speed.py --rounds 30 --threads 2

The MobileNet paper argues that unstructured sparsity does not make a network faster
unless it is very sparse. Here the layers that hold most of the multiply-adds are timed
at batch 1 and growing sparsity:

* MobileNetV2 1.0-224: every 1x1 convolution (expansions, projections, the last layer);
* SqueezeNet 1.1-224: every convolution (1x1 squeeze and expand, 3x3 expand, conv10).

Each layer runs three ways, on the same input:

* **dense**: the layer's convolution with the pruned (zeroed) weights, PyTorch's dense
  kernel (oneDNN); zeros cost as much as any weight;
* **sparse**: the weights in CSR form, multiplied by the input (``torch.sparse.mm`` with
  PyTorch's CPU sparse kernels; 3x3 layers unfold their input first, and that unfold is
  timed with them);
* **structured**: a dense convolution with as many whole output filters removed as the
  sparsity removes weights (equal parameter count), which is what channel pruning
  (``lightnets compress --channels``) gives.

Weights are magnitude-pruned per layer (random initial weights: the pattern is what a
magnitude criterion leaves, unstructured). Times are the sum over a network's layers, the
three ways called in turn in each round (one process), medians over ``--rounds``. The
crossover is the lowest sparsity at which sparse beats dense. Writes
results/sparse_speed.md, .csv and .png.
"""

from __future__ import annotations

import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from _output import benchmark_parser, save_figure, subplots, write_csv, write_markdown
from _paths import RESULTS
from torch import Tensor, nn

from lightnets import create_model
from lightnets.deploy.bench_report import machine_description

SPARSITIES = [0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98]
NETWORKS = {"MobileNetV2 1.0-224": ("mobilenet_v2_100", True), "SqueezeNet 1.1-224": ("squeezenet1_1", False)}


@dataclass
class Layer:
    name: str
    conv: nn.Conv2d
    input: Tensor  # (1, C, H, W), what the layer sees in the network


def layers_of(model_name: str, pointwise_only: bool) -> list[Layer]:
    """The network's ungrouped convolutions (1x1 only if asked) with a real input each."""
    model = create_model(model_name).eval()
    found: list[Layer] = []
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.groups == 1:
            if pointwise_only and module.kernel_size != (1, 1):
                continue

            def keep(module: nn.Module, args: tuple, _output: Tensor, name: str = name) -> None:
                found.append(Layer(name, module, args[0].detach().clone()))  # type: ignore[arg-type]

            hooks.append(module.register_forward_hook(keep))
    with torch.no_grad():
        model(torch.randn(1, 3, 224, 224))
    for hook in hooks:
        hook.remove()
    return found


def magnitude_pruned(weight: Tensor, sparsity: float) -> Tensor:
    if sparsity == 0:
        return weight.clone()
    flat = weight.abs().flatten()
    threshold = flat.kthvalue(max(1, int(sparsity * flat.numel()))).values
    return torch.where(weight.abs() > threshold, weight, torch.zeros_like(weight))


def runners(layers: list[Layer], sparsity: float) -> dict[str, Callable[[], None]]:
    """The three ways to run every layer once, at ``sparsity``."""
    dense, sparse, structured = [], [], []
    for layer in layers:
        conv = layer.conv
        weight = magnitude_pruned(conv.weight.detach(), sparsity)
        bias = conv.bias.detach() if conv.bias is not None else None
        params = dict(stride=conv.stride, padding=conv.padding)
        x = layer.input
        dense.append(lambda x=x, w=weight, b=bias, p=params: F.conv2d(x, w, b, **p))
        csr = weight.flatten(1).to_sparse_csr()
        if conv.kernel_size == (1, 1) and conv.stride == (1, 1):
            cols = x[0].flatten(1)  # (C, H*W)
            sparse.append(lambda c=cols, m=csr: torch.sparse.mm(m, c))
        else:
            sparse.append(
                lambda x=x, m=csr, k=conv.kernel_size, p=params: torch.sparse.mm(
                    m, F.unfold(x, k, padding=p["padding"], stride=p["stride"])[0]
                )
            )
        kept = max(1, round(conv.out_channels * (1 - sparsity)))
        narrow = conv.weight.detach()[:kept].clone()
        narrow_bias = bias[:kept].clone() if bias is not None else None
        structured.append(lambda x=x, w=narrow, b=narrow_bias, p=params: F.conv2d(x, w, b, **p))

    def all_of(calls: list[Callable[[], Tensor]]) -> Callable[[], None]:
        def run() -> None:
            for call in calls:
                call()

        return run

    return {"dense": all_of(dense), "sparse": all_of(sparse), "structured": all_of(structured)}


def time_interleaved(ways: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in ways}
    with torch.inference_mode():
        for run in ways.values():
            run()  # warm-up: first calls allocate and pick kernels
        for _ in range(rounds):
            for name, run in ways.items():
                start = time.perf_counter()
                run()
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=40, help="interleaved rounds per sparsity (40)")
    parser.add_argument("--threads", type=int, default=1, help="PyTorch threads (1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    started = time.time()
    rows = []
    for label, (model_name, pointwise_only) in NETWORKS.items():
        layers = layers_of(model_name, pointwise_only)
        for sparsity in SPARSITIES:
            ms = time_interleaved(runners(layers, sparsity), args.rounds)
            rows.append(
                {
                    "network": label,
                    "layers": len(layers),
                    "sparsity": sparsity,
                    **{f"{name}_ms": round(value, 3) for name, value in ms.items()},
                    "sparse_over_dense": round(ms["sparse"] / ms["dense"], 2),
                }
            )
            print(rows[-1], flush=True)
    write(rows, args, time.time() - started)


def crossover(rows: list[dict], network: str) -> str:
    for row in rows:
        if row["network"] == network and row["sparse_ms"] < row["dense_ms"]:
            return f"{row['sparsity']:.0%}"
    return f"never up to {SPARSITIES[-1]:.0%}"


def write(rows: list[dict], args, seconds: float) -> None:
    write_csv(rows, RESULTS / "sparse_speed.csv")
    columns = list(rows[0])
    table = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    table += ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows]
    verdict = [
        f"- {network}: sparse kernels beat the dense ones from **{crossover(rows, network)}** sparsity; "
        f"structured pruning to the same parameter count at 50% runs "
        + next(
            f"{r['structured_ms'] / r['dense_ms']:.2f}x the dense time, sparse {r['sparse_ms'] / r['dense_ms']:.2f}x"
            for r in rows
            if r["network"] == network and r["sparsity"] == 0.5
        )
        for network in NETWORKS
    ]
    write_markdown(
        [
            "# Is unstructured sparsity fast? Dense, sparse (CSR) and structured pruning",
            "",
            f"Command: `{('python benchmarks/sparse_speed.py ' + shlex.join(sys.argv[1:])).strip()}`",
            f"Machine: {machine_description()}; {args.threads} PyTorch thread(s); {seconds / 60:.0f} minutes.",
            "",
            "Batch 1, 224x224; the sum over the network's timed layers (MobileNetV2: its 1x1 "
            "convolutions; SqueezeNet 1.1: all its convolutions); the three ways called in turn "
            f"each round, medians of {args.rounds} rounds.",
            "",
            *table,
            "",
            "## Verdict",
            "",
            *verdict,
        ],
        RESULTS / "sparse_speed.md",
    )
    fig, axes = subplots(1, len(NETWORKS), figsize=(12, 4.5), squeeze=False)
    for ax, network in zip(axes[0], NETWORKS, strict=True):
        at = [r for r in rows if r["network"] == network]
        for way in ("dense", "sparse", "structured"):
            ax.plot([r["sparsity"] * 100 for r in at], [r[f"{way}_ms"] for r in at], "o-", label=way)
        ax.set_xlabel("weights removed (%)")
        ax.set_ylabel(f"ms, {args.threads} thread(s)")
        ax.set_title(network)
        ax.set_yscale("log")
    axes[0][0].legend()
    save_figure(fig, RESULTS / "sparse_speed.png")


if __name__ == "__main__":
    main()
