"""Low-rank factorisation of the classifiers: parameters removed against accuracy.

    python benchmarks/compress_low_rank.py [--ranks 256 128 64 32] [--recovery-steps 200]

The classifier is where these networks keep a large share of their parameters and almost
none of their multiply-adds: MobileNet v1 0.75's fully connected layer (768 x 1000, 30 %
of the parameters; the paper's 1.0 model has 24 %) and SqueezeNet 1.1's conv10 (a 1x1
convolution 512 -> 1000, 42 %). Each rank replaces that layer by the rank-r pair of its
truncated SVD (``lightnets compress --rank R --rank-layers LAYER``). Per point:

* parameters and multiply-adds (``lightnets profile``), and the fraction of the squared
  singular values the rank keeps;
* top-1 on the 500-image ImageNet sample and top-1 agreement with the unfactorised
  model, before recovery and after ``--recovery-steps`` steps of distillation from the
  unfactorised model on Imagenette training images (``lightnets compress
  --recovery-data``: Adam, lr 1e-4, batch 32; the whole network trains).

Writes ``results/compress/low_rank.md``, ``.csv`` and ``.png``.
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
from lightnets.compress.low_rank import factorize
from lightnets.compress.recovery import agreement, load_batches, logits_of, recovery_images
from lightnets.cost import profile
from lightnets.deploy.calibration import calibration_files
from lightnets.zoo import transform_of

CASES = {  # label: (model, weights, layer)
    "MobileNet v1 0.75 classifier": ("mobilenet_v1", "mobilenet_v1_075_192.tflite_uint8", "head.fc"),
    "SqueezeNet 1.1 conv10": ("squeezenet1_1", "squeezenet1_1.gluon_npy", "head.conv.conv"),
}


def measure_case(label: str, model_name: str, weights: str, layer: str, args, folder: Path) -> list[dict]:
    torch.manual_seed(0)
    original = create_model(model_name, weights=weights).eval()
    transform = transform_of(original)
    size = transform.size
    paths = recovery_images(RECOVERY_IMAGES)
    sample = load_batches(calibration_files(IMAGENET_SAMPLE / "images", None), transform)
    reference = logits_of(original, sample)
    teacher_cache = folder / f"{model_name}_teacher"
    full = profile(original, (3, size, size))
    rows = []
    for rank in [None, *args.ranks]:
        model = copy.deepcopy(original)
        energy = 1.0
        if rank is not None:
            (row,) = factorize(model, rank=rank, layers=[layer])
            energy = row.energy
        cost = profile(model, (3, size, size))
        before = evaluate(model.eval(), IMAGENET_SAMPLE, progress=False).top1
        agree_before = agreement(model, sample, reference)
        after, agree_after, seconds = before, agree_before, 0.0
        if rank is not None and args.recovery_steps:
            seconds = timed_recovery(
                model, original, paths, transform, args, teacher_cache, f"recovery {label}, rank {rank}"
            )
            after = evaluate(model, IMAGENET_SAMPLE, progress=False).top1
            agree_after = agreement(model, sample, reference)
        rows.append(
            {
                "layer": label,
                "rank": rank or "full (original)",
                "energy kept": round(energy, 3),
                "params": cost.params,
                "params removed": f"{1 - cost.params / full.params:.1%}",
                "madds": cost.madds,
                "top1 before recovery": round(before, 1),
                "agreement before": f"{agree_before:.1%}",
                "top1 after recovery": round(after, 1),
                "agreement after": f"{agree_after:.1%}",
                "recovery steps": args.recovery_steps if rank else 0,
                "recovery s": round(seconds, 1),
            }
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = recovery_parser(__doc__, CASES)
    parser.add_argument("--ranks", type=int, nargs="+", default=[256, 128, 64, 32])
    args = parser.parse_args()
    rows, header = measure_cases(args, CASES, measure_case, "Low-rank factorisation of the classifiers")
    out = RESULTS / "compress"
    write_csv(rows, out / "low_rank.csv")
    plot_recovery(
        rows, "layer", lambda r: r["params"] / 1e6, lambda r: f"r={r['rank']}" if isinstance(r["rank"], int) else "full",
        "parameters (M)", "Low-rank classifiers: rank-r SVD pair", out / "low_rank.png",
    )  # fmt: skip
    lines = [
        *header,
        "",
        *markdown_table(rows),
        "",
        "Plot: `low_rank.png` (top-1 against parameters, before and after recovery).",
    ]
    write_markdown(lines, out / "low_rank.md")


if __name__ == "__main__":
    main()
