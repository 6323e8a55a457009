"""Structured pruning: a smaller, faster dense model, and what recovery buys back.

    python benchmarks/compress_channels.py [--fractions 0.25 0.5] [--recovery-steps 200]

For MobileNetV2 1.0 (the TFLite uint8 release's weights, dequantised) and SqueezeNet 1.1
(the Gluon release), each fraction removes that share of every block's inner channels
(``lightnets compress --channels``: the pointwise filters with the smallest L1 norm,
BatchNorm scale folded in; the removed channels' means compensated, measured on 256
Imagenette training images). Per point:

* parameters and multiply-adds (``lightnets profile``);
* ONNX Runtime fp32 latency at batch 1 on one thread, the exported files of every point
  of a model (and a GEMM) timed call by call in turn in one fresh process, so a drift
  in the machine's speed falls on all of them;
* top-1 on the 500-image ImageNet sample before recovery and after ``--recovery-steps``
  steps of distillation from the unpruned model on Imagenette training images, the
  recovery ``lightnets compress --recovery-data`` runs (Adam, lr 1e-4, batch 32).

Writes ``results/compress/channels.md``, ``.csv`` and ``.png``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from _output import markdown_table, write_csv, write_markdown
from _paths import IMAGENET_SAMPLE, RECOVERY_IMAGES, RESULTS
from _recovery import measure_cases, plot_recovery, recovery_parser, timed_recovery

from lightnets import create_model
from lightnets.classify import evaluate
from lightnets.compress.channels import CALIBRATION_IMAGES, prune_channels
from lightnets.compress.recovery import load_batches, recovery_images
from lightnets.cost import profile
from lightnets.deploy import bench
from lightnets.deploy.export import export_onnx
from lightnets.zoo import transform_of

CASES = {  # label: (model, weights)
    "MobileNetV2 1.0": ("mobilenet_v2", "mobilenet_v2_100_224.tflite_uint8"),
    "SqueezeNet 1.1": ("squeezenet1_1", "squeezenet1_1.gluon_npy"),
}


def measure_case(label: str, model_name: str, weights: str, args, folder: Path) -> list[dict]:
    torch.manual_seed(0)
    original = create_model(model_name, weights=weights).eval()
    transform = transform_of(original)
    size = transform.size
    paths = recovery_images(RECOVERY_IMAGES)
    # The removed channels' means are compensated, measured on recovery images.
    calibration = load_batches(paths[:CALIBRATION_IMAGES], transform)
    teacher_cache = folder / f"{model_name}_teacher"
    rows, targets = [], []
    for fraction in [0.0, *args.fractions]:
        model = copy.deepcopy(original)
        kept = prune_channels(model, fraction, calibration=calibration) if fraction else []
        cost = profile(model, (3, size, size))
        onnx = folder / f"{model_name}_{fraction}.onnx"
        export_onnx(model.eval(), onnx, input_size=size)
        point = f"{label}, {fraction:.0%} of inner channels removed"
        targets.append(bench.Target(point, "onnx_file", cost.madds, input_size=size, file=str(onnx)))
        before = evaluate(model, IMAGENET_SAMPLE, progress=False).top1
        after, seconds = before, 0.0
        if fraction and args.recovery_steps:
            seconds = timed_recovery(
                model, original, paths, transform, args, teacher_cache, f"recovery {point}"
            )
            after = evaluate(model, IMAGENET_SAMPLE, progress=False).top1
        rows.append(
            {
                "model": label,
                "weights": weights,
                "fraction removed": fraction,
                "inner channels": sum(r.after for r in kept) if kept else "all",
                "params": cost.params,
                "madds": cost.madds,
                "top1 before recovery": round(before, 1),
                "top1 after recovery": round(after, 1),
                "recovery steps": args.recovery_steps if fraction else 0,
                "recovery s": round(seconds, 1),
            }
        )
        print(rows[-1], flush=True)
    measured, _ = bench.interleaved(targets, threads=1, runs=args.runs)
    base = measured[0].latency_ms
    for row, m in zip(rows, measured, strict=True):
        row["ort fp32 ms"] = round(m.latency_ms, 3)
        row["speed-up"] = round(base / m.latency_ms, 2)
    return rows


def main() -> None:
    parser = recovery_parser(__doc__, CASES)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5])
    parser.add_argument("--runs", type=int, default=200, help="timed rounds of the interleaved latency")
    args = parser.parse_args()
    rows, header = measure_cases(args, CASES, measure_case, "Structured pruning: inner channels removed")
    out = RESULTS / "compress"
    write_csv(rows, out / "channels.csv")
    plot_recovery(
        rows, "model", lambda r: r["ort fp32 ms"], lambda r: f"-{r['fraction removed']:.0%}",
        "ONNX Runtime fp32 latency, batch 1, 1 thread (ms)", "Structured pruning: inner channels removed",
        out / "channels.png",
    )  # fmt: skip
    lines = [
        *header,
        "",
        *markdown_table(rows),
        "",
        "Plot: `channels.png` (top-1 against latency, before and after recovery).",
    ]
    write_markdown(lines, out / "channels.md")


if __name__ == "__main__":
    main()
