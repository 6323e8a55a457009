"""What each step of lightnets' int8 TFLite recipe gives over LiteRT's quantiser left to itself.

    python benchmarks/tflite_int8_recipe.py            # six weight sets, about 20 minutes
    python benchmarks/tflite_int8_recipe.py --tags mobilenet_v2_100_224.tflite_uint8

Each weight set is exported to an int8 TFLite file once per recipe (``export_tflite(...,
int8_recipe=...)``), calibrated on 256 real Imagenette images, and run by LiteRT on the
500-image ImageNet sample and on 1,500 other Imagenette images (neither used in
calibration; agreement needs no labels, and the larger set makes a difference of a few
images readable). Each recipe adds one step to the one before it:

* ``quantizer-default``: ai-edge-quantizer as it comes (activation ranges a moving
  average of each calibration image's range; its own weight ranges, ``max|w| / 127``);
* ``min-max``: the true minimum and maximum over the calibration images;
* ``weight-ranges``: the weight ranges lightnets gives (weights imported from a quantised
  release kept on their integer grid; every channel's scale wide enough for its bias in
  int32, which dead channels need);
* ``clipped``: each activation range narrowed to the fraction of itself with the least
  int8 error on the calibration images' values;
* ``float-outputs``: the operators producing the model's outputs computed in float, back
  to the last weighted one (SqueezeNet's conv10, whose scores are averaged after it), so
  the logits do not tie at int8 resolution;
* ``lightnets``: the two branches of each Fire module scaled to one range, which TFLite's
  int8 concatenation imposes on them (lightnets' recipe; only SqueezeNet has Fire modules).

Beside them, the ONNX Runtime int8 file of ``lightnets export --int8`` from the same
calibration images. Reported: top-1 agreement with the PyTorch fp32 model. Writes
results/tflite_int8_recipe.md and .csv.
"""

from __future__ import annotations

import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch
from _output import benchmark_parser, write_csv, write_markdown
from _paths import IMAGENET_SAMPLE, IMAGENETTE, RECOVERY_IMAGES, RESULTS, use_shared_weights

from lightnets.deploy.bench_report import machine_description
from lightnets.deploy.calibration import calibration_files, prepare_images
from lightnets.deploy.litert import LiteRTRuntime
from lightnets.deploy.quantize import quantize_onnx, top1_agreement
from lightnets.deploy.runtime import Runtime
from lightnets.deploy.tflite import INT8_RECIPES, export_tflite
from lightnets.zoo import model_for_weights, transform_of

TAGS = [
    "mobilenet_v2_100_224.tflite_uint8",
    "mobilenet_v1_075_192.tflite_uint8",
    "mobilenet_v1_050_160.tflite_uint8",
    "mobilenet_v1_025_128.tflite_uint8",
    "squeezenet1_1.gluon_npy",
    "squeezenet1_0.deep_compression",
]
ONNX = "onnxruntime int8"
EXTRA = RECOVERY_IMAGES[1]  # imagenette2-224-extra/train: never calibrated on
COLUMNS = [*INT8_RECIPES, ONNX]


SETS = {"sample": "the 500-image ImageNet sample", "imagenette": "other Imagenette images"}


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--tags", nargs="+", default=TAGS)
    parser.add_argument("--calibration-images", type=int, default=256)
    parser.add_argument(
        "--imagenette-images", type=int, default=1500, help="unlabelled images scored besides the sample"
    )
    args = parser.parse_args()
    use_shared_weights()
    started = time.time()
    rows = []
    with tempfile.TemporaryDirectory(prefix="lightnets-int8-") as folder:
        for tag in args.tags:
            model = model_for_weights(tag).eval()
            transform = transform_of(model)
            calibration = prepare_images(
                calibration_files(IMAGENETTE / "train", args.calibration_images), transform
            )
            scored = {
                "sample": prepare_images(calibration_files(IMAGENET_SAMPLE, None), transform),
                "imagenette": prepare_images(calibration_files(EXTRA, args.imagenette_images), transform),
            }
            with torch.inference_mode():
                reference = {
                    name: torch.cat([model(b) for b in images.split(50)]) for name, images in scored.items()
                }
            for recipe in COLUMNS:
                if recipe == ONNX:
                    path = Path(folder) / f"{tag}.int8.onnx"
                    quantize_onnx(model, path, calibration)
                    runtime: LiteRTRuntime | Runtime = Runtime(path, threads=2)
                else:
                    path = Path(folder) / f"{tag}.{recipe}.tflite"
                    export_tflite(model, path, int8=True, calibration=calibration, int8_recipe=recipe)
                    runtime = LiteRTRuntime(path, threads=2)
                row: dict = {"weights": tag, "recipe": recipe}
                for name, images in scored.items():
                    logits = torch.cat([runtime(batch) for batch in images.split(50)])
                    row[f"{name}_images"] = len(images)
                    row[f"{name}_agreement"] = round(top1_agreement(reference[name], logits), 4)
                rows.append(row)
                print(rows[-1], flush=True)
    write_csv(rows, RESULTS / "tflite_int8_recipe.csv")
    tables = []
    for name, description in SETS.items():
        count = rows[0][f"{name}_images"]
        tables += [f"### {description} ({count:,} images)", ""]
        tables += ["| weights | " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
        for tag in args.tags:
            by_recipe = {r["recipe"]: r[f"{name}_agreement"] for r in rows if r["weights"] == tag}
            tables.append(f"| {tag} | " + " | ".join(f"{by_recipe[c]:.1%}" for c in COLUMNS) + " |")
        tables.append("")
    write_markdown(
        [
            "# int8 TFLite: each step of lightnets' recipe, from LiteRT's quantiser left to itself",
            "",
            f"Command: `{('python benchmarks/tflite_int8_recipe.py ' + shlex.join(sys.argv[1:])).strip()}`",
            f"Machine: {machine_description()}; {(time.time() - started) / 60:.0f} minutes.",
            "",
            "Top-1 agreement of the int8 TFLite file (LiteRT) with the PyTorch fp32 model, calibrated on "
            f"{args.calibration_images} Imagenette training images; scored on the 500-image ImageNet sample "
            f"and on {args.imagenette_images:,} other Imagenette images (no labels needed for agreement; "
            "three times the images, so a difference carries about 0.6 of the sample's noise). "
            "Each TFLite recipe adds one step to the one on its left (see the script's docstring); "
            f"{ONNX}: the ONNX Runtime file of `lightnets export --int8`, same calibration.",
            "",
            *tables,
        ],
        RESULTS / "tflite_int8_recipe.md",
    )


if __name__ == "__main__":
    main()
