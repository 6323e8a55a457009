"""int8 post-training quantisation on real images: agreement with fp32, and accuracy.

    python benchmarks/int8_accuracy.py                       # every weight set, both executors
    python benchmarks/int8_accuracy.py --tags mobilenet_v2_100_224.tflite_uint8 --ablations

For each weight set the fp32 model (``create_model(name, weights=tag)``) and its int8
versions classify the same real images (``../shared/data/imagenet-sample``: 500 ImageNet
validation photographs, one per class, prepared with the weights' own evaluation
transform). Calibration uses other real images (default: 256 taken evenly from
Imagenette's train split, ``../shared/data/imagenette2-224-subset/train``), so no
evaluated image is seen during calibration.

int8 executors:

* ``onnxruntime``: ``export_onnx`` then ``quantize_onnx`` (QDQ, per-channel symmetric
  int8 weights kept on their grid, uint8 activations, min/max ranges), run by ONNX
  Runtime's CPU provider;
* ``pytorch-x86``: ``quantize_pytorch`` (FX graph mode, x86 engine, per-channel
  weights, histogram activation ranges).

Reported: top-1 agreement with fp32 (fraction of images whose arg-max is the same),
top-1 accuracy against the labels of fp32 and int8, and time taken. ``--ablations`` adds,
for the first weight set, the recipe's variants (weights not kept on their grid, 7-bit
ranges, the classifier kept in float, the oneDNN engine); ``--methods`` also other
activation-range methods and PyTorch's reference quantise-dequantise model. Written to ``benchmarks/results/int8_accuracy.md`` and ``.csv``.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import shlex
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from _output import benchmark_parser  # noqa: E402
from _paths import IMAGENET_SAMPLE, IMAGENETTE, RESULTS, use_shared_weights

import lightnets
from lightnets.data.datasets import open_dataset
from lightnets.deploy import Runtime, export_onnx, prepare_images, quantize_onnx, quantize_pytorch
from lightnets.deploy.bench_report import cpu_name
from lightnets.deploy.calibration import calibration_files
from lightnets.deploy.quantize import top1_agreement
from lightnets.weights.load import model_name_of_weights
from lightnets.weights.spec import get_weights, list_weights

DEFAULT_DATA = IMAGENET_SAMPLE
DEFAULT_CALIBRATION = IMAGENETTE / "train"
IMAGENETTE_VAL = IMAGENETTE / "val"
# ShuffleNet v1 has no released ImageNet weights: its row uses the model that
# benchmarks/train_imagenette_families.py trains (evaluated on Imagenette's val split).
DEFAULT_TRAINED = Path("/tmp/lightnets_bench/families/shufflenet_v1/model.safetensors")


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []
    )
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
    return ", ".join(f for f in wanted if f in flags) or "none of AVX2/AVX-512/VNNI"


def batched(model, images: torch.Tensor, batch: int = 50) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([torch.as_tensor(model(part)) for part in images.split(batch)])


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean())


def run_tag(
    tag: str, args: argparse.Namespace, ablations: bool, folder: Path, data: str | None = None
) -> list[dict]:
    """Rows for one weight set: a tag (evaluated on ``args.data``, ImageNet classes) or a
    trained lightnets file (evaluated on ``data``, its own classes in folder order)."""
    args = argparse.Namespace(**{**vars(args), "methods": args.methods and ablations})
    name = get_weights(tag).model if data is None else model_name_of_weights(tag)
    model = lightnets.create_model(name, weights=tag).eval()
    transform = model.pretrained_cfg.transform
    dataset = open_dataset(data or args.data, imagenet_labels=data is None)
    label = tag if data is None else f"{name} trained on Imagenette ({Path(tag).name})"
    samples = dataset.samples[: args.images] if args.images else dataset.samples
    images = prepare_images([path for path, _ in samples], transform)
    labels = torch.tensor([label for _, label in samples])
    calibration = prepare_images(calibration_files(args.calibration, args.calibration_images), transform)
    reference = batched(model, images)
    fp32_top1 = accuracy(reference, labels)
    rows = []

    def record(executor: str, variant: str, logits: torch.Tensor, seconds: float) -> None:
        row = {
            "weights": label,
            "executor": executor,
            "variant": variant,
            "images": len(images),
            "agreement": top1_agreement(reference, logits),
            "fp32_top1": fp32_top1,
            "int8_top1": accuracy(logits, labels),
            "seconds": seconds,
        }
        rows.append(row)
        print(
            f"{label:38s} {executor:12s} {variant:34s} agreement {row['agreement']:.1%}  "
            f"top-1 fp32 {fp32_top1:.1%} int8 {row['int8_top1']:.1%}  ({seconds:.0f} s)",
            flush=True,
        )

    fp32_path = export_onnx(model, folder / f"{Path(tag).name}.onnx")
    runtime = Runtime(fp32_path, threads=args.threads)
    record("onnxruntime", "fp32 (export check)", batched(runtime, images), 0.0)

    def onnx_int8(variant: str, **options) -> None:
        start = time.perf_counter()
        path = quantize_onnx(
            fp32_path, folder / f"{Path(tag).name}.int8.onnx", calibration, num_images=None, **options
        )
        logits = batched(Runtime(path, threads=args.threads), images)
        record("onnxruntime", variant, logits, time.perf_counter() - start)

    def pytorch_int8(variant: str, **options) -> None:
        start = time.perf_counter()
        quantized = quantize_pytorch(model, calibration, num_images=None, **options)
        logits = batched(quantized, images)
        record(f"pytorch-{options.get('backend', 'x86')}", variant, logits, time.perf_counter() - start)

    onnx_int8("default (QDQ, minmax)")
    pytorch_int8("default (histogram)")
    if ablations:
        onnx_int8("weights not kept on grid", keep_weight_grid=False)
        onnx_int8("7-bit weights (reduce_range)", reduce_range=True)
        onnx_int8("final Gemm kept in float", keep_float=["Gemm"])
        pytorch_int8("weights not kept on grid", keep_weight_grid=False)
        pytorch_int8("7-bit activations (x86 default)", reduce_range="activations")
        pytorch_int8("oneDNN engine", backend="onednn")
    if args.methods:
        onnx_int8("entropy ranges", method="entropy")
        onnx_int8("percentile 99.999 ranges", method="percentile")
        pytorch_int8("minmax ranges", observer="minmax")
        pytorch_int8("reference quantise-dequantise", reference=True)
    return rows


def write(rows: list[dict], args: argparse.Namespace, seconds: float) -> None:
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "int8_accuracy.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    command = "python benchmarks/int8_accuracy.py " + shlex.join(sys.argv[1:])
    lines = [
        "# int8 post-training quantisation: agreement with fp32 on real images",
        "",
        f"Command: `{command.strip()}` ({seconds / 60:.0f} min).",
        "",
        f"Machine: {platform.platform()}, {cpu_name()} ({os.cpu_count()} CPUs; {cpu_flags()}); "
        f"Python {platform.python_version()}, PyTorch {torch.__version__}, ONNX Runtime "
        f"{__import__('onnxruntime').__version__}, onnx {__import__('onnx').__version__}; load average "
        f"(1, 5, 15 min) {', '.join(f'{v:.1f}' for v in os.getloadavg())} when the report was written.",
        "",
        f"Evaluated on `{args.data}` ({rows[0]['images']} real ImageNet validation images, each "
        f"prepared with its weights' evaluation transform); calibrated on {args.calibration_images} "
        f"other real images taken evenly from `{args.calibration}` (no overlap). A model trained on "
        f"Imagenette (ShuffleNet v1, which has no released ImageNet weights) is evaluated on "
        f"`{args.trained_data}` instead, with its 10 classes.",
        "",
        "*Agreement*: fraction of images whose int8 top-1 class is the fp32 model's. *top-1*: "
        "against the labels (one image per class, so a coarse estimate). The first row of each "
        "weight set checks the fp32 ONNX export itself.",
        "",
        "| weights | executor | variant | agreement with fp32 | top-1 fp32 | top-1 int8 | seconds |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['weights']} | {r['executor']} | {r['variant']} | {r['agreement']:.1%} | "
            f"{r['fp32_top1']:.1%} | {r['int8_top1']:.1%} | {r['seconds']:.0f} |"
        )
    lines += [
        "",
        "Recipe (defaults of `lightnets.deploy`): per-channel symmetric int8 weights, kept on the "
        "integer grid of weights imported from a quantised release (`grid_scales`); per-tensor "
        "asymmetric uint8 activations; ReLU/ReLU6 absorbed into the convolution's output range "
        "(ONNX Runtime) or a clamping observer before ReLU6 (PyTorch). With one image per class, "
        "one image is 0.2 points of agreement; re-running with other calibration images moves the "
        "figures by about half a point, since int8 rounding decides a few near-tied images.",
        "",
    ]
    (RESULTS / "int8_accuracy.md").write_text("\n".join(lines))
    print(f"written {RESULTS / 'int8_accuracy.md'} and .csv")


def main() -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--tags", nargs="*", help="weight tags (default: every weight set)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="labelled real images to evaluate on")
    parser.add_argument("--images", type=int, help="evaluate only the first N images")
    parser.add_argument("--calibration", default=str(DEFAULT_CALIBRATION), help="folder of real images")
    parser.add_argument("--calibration-images", type=int, default=256)
    parser.add_argument("--threads", type=int, help="ONNX Runtime threads (default all)")
    parser.add_argument("--ablations", action="store_true", help="recipe variants on the first weight set")
    parser.add_argument(
        "--methods", action="store_true", help="also other range methods (slow) with --ablations"
    )
    parser.add_argument(
        "--trained",
        nargs="*",
        default=[str(DEFAULT_TRAINED)] if DEFAULT_TRAINED.is_file() else [],
        help="lightnets weight files trained on Imagenette, evaluated on its val split (default: the "
        "ShuffleNet of train_imagenette_families.py, when it has run)",
    )
    parser.add_argument("--trained-data", default=str(IMAGENETTE_VAL))
    args = parser.parse_args()
    use_shared_weights()
    warnings.simplefilter("ignore")
    tags = args.tags or list_weights()
    start = time.perf_counter()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as folder:
        for index, tag in enumerate(tags):
            rows += run_tag(tag, args, args.ablations and index == 0, Path(folder))
        for path in args.trained:
            rows += run_tag(path, args, False, Path(folder), data=args.trained_data)
    write(rows, args, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
