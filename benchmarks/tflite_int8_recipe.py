"""What lightnets' int8 TFLite recipe gives over LiteRT's quantiser left to itself.

    python benchmarks/tflite_int8_recipe.py            # three weight sets, about 2 minutes
    python benchmarks/tflite_int8_recipe.py --tags mobilenet_v2_100_224.tflite_uint8

Each weight set is exported to an int8 TFLite file three ways (``export_tflite(...,
int8_recipe=...)``), calibrated on 256 real Imagenette images, and run by LiteRT on the
500-image ImageNet sample (never used in calibration):

* ``quantizer-default``: ai-edge-quantizer as it comes (activation ranges a moving
  average of each calibration image's range; its own weight ranges, ``max|w| / 127``);
* ``min-max``: the true minimum and maximum over the calibration images;
* ``lightnets``: min/max, and the weight ranges lightnets gives (weights imported from
  a quantised release kept on their integer grid; every channel's scale wide enough for
  its bias in int32, which dead channels need).

Reported: top-1 agreement with the PyTorch fp32 model. Writes
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
from _paths import IMAGENET_SAMPLE, IMAGENETTE, RESULTS, use_shared_weights

from lightnets.deploy.bench_report import machine_description
from lightnets.deploy.calibration import calibration_files, prepare_images
from lightnets.deploy.litert import LiteRTRuntime
from lightnets.deploy.quantize import top1_agreement
from lightnets.deploy.tflite import INT8_RECIPES, export_tflite
from lightnets.zoo import model_for_weights, transform_of

TAGS = ["mobilenet_v2_100_224.tflite_uint8", "mobilenet_v1_050_160.tflite_uint8", "squeezenet1_1.gluon_npy"]


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--tags", nargs="+", default=TAGS)
    parser.add_argument("--calibration-images", type=int, default=256)
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
            images = prepare_images(calibration_files(IMAGENET_SAMPLE, None), transform)
            with torch.inference_mode():
                reference = torch.cat([model(batch) for batch in images.split(50)])
            for recipe in INT8_RECIPES:
                path = Path(folder) / f"{tag}.{recipe}.tflite"
                export_tflite(model, path, int8=True, calibration=calibration, int8_recipe=recipe)
                runtime = LiteRTRuntime(path, threads=2)
                logits = torch.cat([runtime(batch) for batch in images.split(50)])
                rows.append(
                    {
                        "weights": tag,
                        "recipe": recipe,
                        "images": len(images),
                        "agreement": round(top1_agreement(reference, logits), 4),
                    }
                )
                print(rows[-1], flush=True)
    write_csv(rows, RESULTS / "tflite_int8_recipe.csv")
    table = ["| weights | " + " | ".join(INT8_RECIPES) + " |", "|---|" + "---:|" * len(INT8_RECIPES)]
    for tag in args.tags:
        cells = [
            f"{r['agreement']:.1%}"
            for recipe in INT8_RECIPES
            for r in rows
            if (r["weights"], r["recipe"]) == (tag, recipe)
        ]
        table.append(f"| {tag} | " + " | ".join(cells) + " |")
    write_markdown(
        [
            "# int8 TFLite: lightnets' recipe against LiteRT's quantiser left to itself",
            "",
            f"Command: `{('python benchmarks/tflite_int8_recipe.py ' + shlex.join(sys.argv[1:])).strip()}`",
            f"Machine: {machine_description()}; {(time.time() - started) / 60:.0f} minutes.",
            "",
            f"Top-1 agreement of the int8 TFLite file (LiteRT) with the PyTorch fp32 model on the "
            f"500-image ImageNet sample; calibrated on {args.calibration_images} Imagenette images.",
            "",
            *table,
        ],
        RESULTS / "tflite_int8_recipe.md",
    )


if __name__ == "__main__":
    main()
