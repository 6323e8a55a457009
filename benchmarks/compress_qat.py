"""Quantisation-aware training against post-training int8, and low-bit weights.

    python benchmarks/compress_qat.py [--recovery-steps 400] [--models ...]
    python benchmarks/compress_qat.py --models "SqueezeNet 1.1" --bits 3 2   # more widths

For each case, the float model's weights are put on a per-channel grid of ``bits`` bits
(``lightnets compress --qat-bits BITS``) twice: rounded without training (at 8 bits,
exactly what post-training int8 quantisation does to them), and after
``--recovery-steps`` steps of quantisation-aware training (8-bit activations simulated,
distillation from the float model on Imagenette training images; Adam, batch 32,
``--lr``; activation ranges fixed to their extremes on the 256 calibration images below). Each model is then

* scored in PyTorch with float activations: top-1 on the 500-image ImageNet sample and
  top-1 agreement with the float model (what the weights alone cost);
* exported to int8 by the post-training path, calibrated on 256 Imagenette training
  images: ONNX Runtime (``lightnets export --int8``, QDQ) and TFLite (LiteRT, lightnets'
  recipe); top-1 agreement of each int8 file with the float model on the sample. The
  exporters keep the trained weights on their grid (checked by the tests).

The container (``.lnz``) stores each weight as a ``bits``-bit integer (Huffman-coded)
and a float32 scale per channel; its size is in the table. Writes
``results/compress/qat.md`` and ``.csv``. With ``--bits``, only those widths are measured
(for the chosen models) and the other rows of the existing ``qat.csv`` are kept, the
report listing each run's command.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import torch
from _output import markdown_table, write_csv, write_markdown
from _paths import IMAGENET_SAMPLE, IMAGENETTE, RECOVERY_IMAGES, RESULTS
from _recovery import measure_cases, recovery_parser

from lightnets import create_model
from lightnets.classify import evaluate
from lightnets.compress.pipeline import Recovery, compress_model
from lightnets.compress.recovery import agreement, load_batches, logits_of, recovery_images
from lightnets.deploy.calibration import calibration_files, prepare_images
from lightnets.deploy.litert import LiteRTRuntime
from lightnets.deploy.quantize import quantize_onnx, top1_agreement
from lightnets.deploy.runtime import Runtime
from lightnets.deploy.tflite import export_tflite
from lightnets.weights.load import metadata_json
from lightnets.zoo import transform_of

CASES = {  # label: (model, weights, weight bits)
    "MobileNetV2 1.0": ("mobilenet_v2", "mobilenet_v2_100_224.tflite_uint8", (8, 4)),
    "MobileNet v1 0.25": ("mobilenet_v1", "mobilenet_v1_025_128.tflite_uint8", (8,)),
    "SqueezeNet 1.1": ("squeezenet1_1", "squeezenet1_1.gluon_npy", (4,)),
}


def int8_agreements(model, calibration: torch.Tensor, sample: torch.Tensor, reference, folder: Path) -> dict:
    """Top-1 agreement with ``reference`` of ``model``'s int8 ONNX Runtime and TFLite files."""
    onnx_path = quantize_onnx(model, folder / "int8.onnx", calibration)
    tflite_path = export_tflite(model, folder / "int8.tflite", int8=True, calibration=calibration)
    out = {}
    for name, runtime in (
        ("onnxruntime", Runtime(onnx_path, threads=2)),
        ("tflite", LiteRTRuntime(tflite_path, threads=2)),
    ):
        logits = torch.cat([runtime(batch) for batch in sample.split(50)])
        out[name] = top1_agreement(reference, logits)
    return out


def measure_case(label: str, model_name: str, weights: str, bit_widths, args, folder: Path) -> list[dict]:
    torch.manual_seed(0)
    original = create_model(model_name, weights=weights).eval()
    transform = transform_of(original)
    paths = recovery_images(RECOVERY_IMAGES)
    sample_batches = load_batches(calibration_files(IMAGENET_SAMPLE / "images", None), transform)
    sample = torch.cat(sample_batches)
    reference = logits_of(original, sample_batches)
    calibration = prepare_images(calibration_files(IMAGENETTE / "train", 256), transform)
    metadata = json.loads(metadata_json(original, model_name, getattr(original, "model_kwargs", {})))
    float_top1 = evaluate(original, IMAGENET_SAMPLE, progress=False).top1
    params = sum(p.numel() for p in original.parameters())
    rows = [
        {"model": label, "weights": "float32", "steps": 0, "seconds": 0, "file bytes": 4 * params,
         "top1": round(float_top1, 1), "agreement (float activations)": "100.0%", "int8 ONNX Runtime agreement": "",
         "int8 TFLite agreement": ""}
    ]  # fmt: skip
    for bits in args.bits or bit_widths:
        for steps in (0, args.recovery_steps):
            recovery = None
            if steps:
                recovery = Recovery(
                    paths, transform, steps, lr=args.lr, cache_dir=folder / f"{model_name}_teacher"
                )
            start = time.perf_counter()
            compressed = compress_model(
                original,
                qat_bits=bits,
                recovery=recovery,
                calibration=calibration.split(32),
                progress=not args.quiet,
            )
            seconds = time.perf_counter() - start
            size = compressed.save(folder / "model.lnz", metadata)
            model = compressed.model
            top1 = evaluate(model, IMAGENET_SAMPLE, progress=False).top1
            int8 = int8_agreements(model, calibration, sample, reference, folder)
            rows.append(
                {
                    "model": label,
                    "weights": f"{bits}-bit per channel, " + ("QAT" if steps else "rounded (no training)"),
                    "steps": steps,
                    "seconds": round(seconds, 1),
                    "file bytes": size,
                    "top1": round(top1, 1),
                    "agreement (float activations)": f"{agreement(model, sample_batches, reference):.1%}",
                    "int8 ONNX Runtime agreement": f"{int8['onnxruntime']:.1%}",
                    "int8 TFLite agreement": f"{int8['tflite']:.1%}",
                }
            )
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = recovery_parser(__doc__, CASES)
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (1e-4)")
    parser.add_argument(
        "--bits", type=int, nargs="+", help="measure only these weight widths; other rows of qat.csv are kept"
    )
    parser.set_defaults(recovery_steps=400)
    args = parser.parse_args()
    rows, header = measure_cases(args, CASES, measure_case, "Quantisation-aware training and low-bit weights")
    out = RESULTS / "compress"
    if args.bits:
        rows, header = _merged(rows, header, args)
    write_csv(rows, out / "qat.csv")
    lines = [
        *header,
        "",
        *markdown_table(rows),
        "",
        "Agreement: the fraction of the 500 sample images whose top-1 class is the float model's. "
        "The int8 columns calibrate activations on 256 Imagenette training images, as `lightnets export --int8` does.",
    ]
    write_markdown(lines, out / "qat.md")


def _key(row: dict) -> tuple[int, int, bool]:
    """Report order: case, then float32 first and widths from wide to narrow, rounded first."""
    weights = str(row["weights"])
    bits = 32 if weights == "float32" else int(weights.split("-bit")[0])
    return list(CASES).index(row["model"]), -bits, int(row["steps"]) > 0


def _merged(rows: list[dict], header: list[str], args) -> tuple[list[dict], list[str]]:
    """``rows`` in place of the same (model, weights) rows of the existing report, the
    others kept; the existing report's header with this run's machine, command and load."""
    out = RESULTS / "compress"
    with open(out / "qat.csv", newline="") as handle:
        kept = list(csv.DictReader(handle))
    new = {(r["model"], r["weights"]) for r in rows}
    merged = sorted([r for r in kept if (r["model"], r["weights"]) not in new] + rows, key=_key)
    old_header = (out / "qat.md").read_text().split("\n\n| ")[0].splitlines()
    wanted = ("- Machine:", "- Command:", "- Load average (1, 5, 15 min) before")
    this_run = [f"  {line[2:]}" for line in "\n".join(header).splitlines() if line.startswith(wanted)]
    widths = ", ".join(f"{bits}-bit" for bits in args.bits)
    return merged, [*old_header, f"- Then the {widths} rows of {', '.join(args.models)}:", *this_run]


if __name__ == "__main__":
    main()
