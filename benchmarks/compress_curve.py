"""Size against accuracy: pruning alone, sharing alone, both, both + Huffman.

For one model and weight set, each point compresses the float weights (BatchNorm folded)
and evaluates the result on the 500-image sample:

* prune only: the per-layer sparsity table scaled by each ``--scales`` factor, stored
  sparse (float32 values + fixed-width gaps);
* share only: every layer with a ``--bits`` k-means codebook, dense indices;
* both: the table and each width; sizes with fixed-width codes and with Huffman coding
  (the same weights, so the same accuracy).

Sharing-only points are plain k-means; pruned points are refitted layer by layer to the float model by least squares on
``--reconstruct-images`` Imagenette training images (0 turns that off); no distillation.
Writes ``<name>_curve.csv``, ``.md`` and ``.png`` in ``results/compress/``.

    python benchmarks/compress_curve.py --model squeezenet1_1 --weights squeezenet1_1.gluon_npy \\
        --sparsities benchmarks/compress_sparsities_squeezenet1_1.csv
"""

from __future__ import annotations

import csv
import io
import time

from _output import benchmark_parser, save_figure, subplots
from _paths import IMAGENET_SAMPLE, RECOVERY_IMAGES, RESULTS
from train_common import machine_header, use_shared_weights

import lightnets
from lightnets.classify import evaluate
from lightnets.compress.pipeline import compress_model, encode_model
from lightnets.compress.pruning import prunable_layers, read_sparsities
from lightnets.compress.recovery import load_batches, recovery_images
from lightnets.files import write_text
from lightnets.zoo import transform_of


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--model", default="squeezenet1_1")
    parser.add_argument("--weights", default="squeezenet1_1.gluon_npy")
    parser.add_argument("--sparsities", help="per-layer table (default: --uniform for every layer)")
    parser.add_argument("--uniform", type=float, default=0.6, help="sparsity of every layer without a table")
    parser.add_argument("--scales", type=float, nargs="+", default=[0.5, 1.0])
    parser.add_argument("--bits", type=int, nargs="+", default=[8, 6, 4])
    parser.add_argument("--both-bits", type=int, nargs="+", default=[6, 4])
    parser.add_argument("--reconstruct-images", type=int, default=64)
    parser.add_argument("--float-top1", type=float, help="skip evaluating the float model (its top-1 %%)")
    parser.add_argument(
        "--float-top5", type=float, default=float("nan"), help="with --float-top1: its top-5 %%"
    )
    parser.add_argument("--name", help="result file stem (default: the model)")
    parser.add_argument(
        "--known",
        action="append",
        default=[],
        metavar="LABEL,BYTES,TOP1,TOP5",
        help="a point measured elsewhere (e.g. with distillation), added as 'with recovery'",
    )
    args = parser.parse_args()
    use_shared_weights()
    name = args.name or args.model
    model = lightnets.create_model(args.model, weights=args.weights).eval()
    layers = prunable_layers(model)
    table = read_sparsities(args.sparsities) if args.sparsities else dict.fromkeys(layers, args.uniform)
    params = sum(p.numel() for p in model.parameters())
    calibration = None
    if args.reconstruct_images:
        paths = recovery_images(RECOVERY_IMAGES)
        chosen = paths[:: max(1, len(paths) // args.reconstruct_images)][: args.reconstruct_images]
        calibration = load_batches(chosen, transform_of(model), 32)
    rows: list[dict] = []

    def evaluate_point(compressed, kind: str, setting: str, huffman_too: bool) -> None:
        start = time.perf_counter()
        sizes = {"fixed": sum(t.nbytes for t in encode_model(compressed.model, compressed.shared, False))}
        if huffman_too:
            sizes["huffman"] = sum(t.nbytes for t in encode_model(compressed.model, compressed.shared, True))
        result = evaluate(compressed.model, IMAGENET_SAMPLE, progress=False)
        nonzeros = sum(int((m.weight != 0).sum()) for m in prunable_layers(compressed.model).values())
        weights = sum(m.weight.numel() for m in prunable_layers(compressed.model).values())
        for coding, size in sizes.items():
            label = kind if coding == "fixed" or kind != "prune + share" else "prune + share + Huffman"
            rows.append(
                {
                    "kind": label,
                    "setting": setting,
                    "coding": coding,
                    "bytes": size,
                    "ratio": round(4 * params / size, 2),
                    "density": round(nonzeros / weights, 4),
                    "top1": round(result.top1, 1),
                    "top5": round(result.top5, 1),
                    "seconds": round(
                        compressed.timings.get("reconstruct", 0) + time.perf_counter() - start, 1
                    ),
                }
            )
        print(rows[-1], flush=True)

    if args.float_top1 is None:
        base = evaluate(model, IMAGENET_SAMPLE, progress=False)
        float_top1, float_top5 = base.top1, base.top5
    else:
        float_top1, float_top5 = args.float_top1, args.float_top5
    rows.append(
        {
            "kind": "float32",
            "setting": "-",
            "coding": "dense",
            "bytes": 4 * params,
            "ratio": 1.0,
            "density": 1.0,
            "top1": round(float_top1, 1),
            "top5": round(float_top5, 1),
            "seconds": 0,
        }
    )
    for bits in args.bits:
        c = compress_model(model, bits=bits, use_huffman=False, progress=False)
        evaluate_point(c, "share only", f"{bits} bits", huffman_too=False)
    for scale in args.scales:
        scaled = {k: min(0.99, v * scale) for k, v in table.items()}
        c = compress_model(
            model, sparsities=scaled, use_huffman=False, calibration=calibration, progress=False
        )
        evaluate_point(c, "prune only", f"table x {scale}", huffman_too=False)
    for bits in args.both_bits:
        c = compress_model(
            model, sparsities=table, bits=bits, use_huffman=False, calibration=calibration, progress=False
        )
        evaluate_point(c, "prune + share", f"table, {bits} bits", huffman_too=True)

    for known in args.known:
        label, size, top1, top5 = known.rsplit(",", 3)
        rows.append(
            {
                "kind": "prune + share + Huffman, with recovery",
                "setting": label,
                "coding": "huffman",
                "bytes": int(size),
                "ratio": round(4 * params / int(size), 2),
                "density": "",
                "top1": float(top1),
                "top5": float(top5),
                "seconds": "",
            }
        )
    fields = list(rows[0])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fields)
    writer.writeheader()
    writer.writerows(rows)
    out = RESULTS / "compress"
    write_text(out / f"{name}_curve.csv", buffer.getvalue())
    header = machine_header(f"{args.model}: size against accuracy (500-image sample)")
    lines = [
        header,
        f"- Weights: {args.weights}; sparsity table: {args.sparsities or f'{args.uniform} for every layer'}; "
        f"least-squares refit on {args.reconstruct_images} Imagenette training images for every pruned point "
        "(no distillation); sharing-only points are plain k-means (linear initialisation)",
        "",
        "| kind | setting | coding | bytes | x smaller | density | top-1 % | top-5 % | seconds |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['kind']} | {r['setting']} | {r['coding']} | {r['bytes']:,} | {r['ratio']} | {r['density']} | "
            f"{r['top1']} | {r['top5']} | {r['seconds']} |"
        )
    if args.known:
        lines += [
            "",
            'The "with recovery" rows are measured elsewhere (their settings say how) and added with `--known`.',
        ]
    within = [r for r in rows if r["kind"] != "float32" and float(r["top1"]) >= round(float_top1, 1) - 2]
    if within:
        best = min(within, key=lambda r: r["bytes"])
        lines += [
            "",
            f"Smallest file within 2 points of the float model: **{best['bytes']:,} bytes, {best['ratio']}x "
            f"smaller** than float32 ({best['kind']}, {best['setting']}, {best['coding']} coding): top-1 "
            f"{best['top1']} % against {float_top1:.1f} %.",
        ]
    else:
        lines += ["", "No point is within 2 points of the float model."]
    write_text(out / f"{name}_curve.md", "\n".join(lines) + "\n")
    figure, axes = subplots(figsize=(7, 4.5), dpi=120)
    for kind, marker in (
        ("share only", "o"),
        ("prune only", "s"),
        ("prune + share", "^"),
        ("prune + share + Huffman", "D"),
        ("float32", "*"),
    ):
        points = [r for r in rows if r["kind"] == kind]
        if points:
            axes.plot(
                [r["bytes"] / 1e6 for r in points],
                [r["top1"] for r in points],
                marker=marker,
                linestyle="-" if len(points) > 1 else "",
                label=kind,
            )
    axes.axhline(float_top1 - 2, color="grey", linestyle=":", label="float - 2 points")
    axes.set_xscale("log")
    axes.set_xlabel("file size (MB, log scale)")
    axes.set_ylabel("top-1 % on the 500-image sample")
    axes.set_title(f"{args.model}: size against accuracy")
    axes.legend(fontsize=8)
    save_figure(figure, out / f"{name}_curve.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
