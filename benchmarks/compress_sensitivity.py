"""Per-layer pruning sensitivity: agreement with the float model against each layer's sparsity.

Each prunable layer is pruned alone to each sparsity and the top-1 class on Imagenette
training images (never the evaluation sample) is compared with the float model's. Writes
``<name>_sensitivity.csv``, ``.md`` and ``.png`` in ``results/compress/``, and the
per-layer sparsities :func:`lightnets.compress.pruning.allocate_sparsities` picks from
the scan for ``--target`` overall.

    python benchmarks/compress_sensitivity.py --model squeezenet1_1 --weights squeezenet1_1.gluon_npy
"""

from __future__ import annotations

import csv
import io
import time

from _output import benchmark_parser, save_figure, subplots
from _paths import RECOVERY_IMAGES, RESULTS
from train_common import machine_header, use_shared_weights

import lightnets
from lightnets.compress.pruning import allocate_sparsities, prunable_layers
from lightnets.compress.recovery import load_batches, recovery_images
from lightnets.compress.sensitivity import sensitivity_scan
from lightnets.deploy.fold import fold_batchnorm
from lightnets.files import write_text
from lightnets.zoo import transform_of


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--model", default="squeezenet1_1")
    parser.add_argument("--weights", default="squeezenet1_1.gluon_npy")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.3, 0.5, 0.7, 0.9])
    parser.add_argument("--target", type=float, default=0.6)
    parser.add_argument("--name")
    args = parser.parse_args()
    use_shared_weights()
    name = args.name or args.model
    model = fold_batchnorm(lightnets.create_model(args.model, weights=args.weights)).eval()
    paths = recovery_images(RECOVERY_IMAGES)
    chosen = paths[len(paths) // (2 * args.images) :: max(1, len(paths) // args.images)][: args.images]
    batches = load_batches(chosen, transform_of(model), 32)
    start = time.perf_counter()
    scan = sensitivity_scan(model, batches, args.sparsities, progress=True)
    seconds = time.perf_counter() - start
    sizes = {n: m.weight.numel() for n, m in prunable_layers(model).items()}
    chosen_table = allocate_sparsities(scan, sizes, args.target)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        ["layer", "weights", *[f"agreement at {s}" for s in args.sparsities], f"allocated for {args.target}"]
    )
    for layer, curve in scan.items():
        writer.writerow(
            [layer, sizes[layer], *[round(curve[s], 4) for s in args.sparsities], chosen_table[layer]]
        )
    out = RESULTS / "compress"
    write_text(out / f"{name}_sensitivity.csv", buffer.getvalue())
    lines = [
        machine_header(f"{args.model}: pruning sensitivity per layer"),
        f"- {len(chosen)} Imagenette training images; agreement = same top-1 class as the float model; "
        f"scan time {seconds / 60:.1f} min",
        "",
        "| layer | weights | "
        + " | ".join(f"s = {s}" for s in args.sparsities)
        + f" | allocated for {args.target} |",
        "|---|---:|" + "---:|" * (len(args.sparsities) + 1),
    ]
    for layer, curve in scan.items():
        cells = " | ".join(f"{curve[s]:.3f}" for s in args.sparsities)
        lines.append(f"| {layer} | {sizes[layer]:,} | {cells} | {chosen_table[layer]} |")
    write_text(out / f"{name}_sensitivity.md", "\n".join(lines) + "\n")
    figure, axes = subplots(figsize=(8, 5), dpi=120)
    for layer, curve in scan.items():
        axes.plot(list(curve), list(curve.values()), marker=".", label=layer.replace(".conv", ""))
    axes.set_xlabel("sparsity of the one pruned layer")
    axes.set_ylabel("agreement with the float model (top-1)")
    axes.set_title(f"{args.model}: each layer pruned alone (no recovery)")
    axes.legend(fontsize=5, ncol=2)
    save_figure(figure, out / f"{name}_sensitivity.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
