"""Fine-tuning the imported ImageNet MobileNetV2 on CIFAR-10 JPEGs vs training it from scratch.

    OMP_WAIT_POLICY=PASSIVE nice -n 10 .venv/bin/python benchmarks/train_finetune_cifar.py

Both runs train the same network (MobileNetV2 1.0 with TensorFlow padding, 10-class head)
on the same ``--per-class`` x 10 CIFAR-10 training JPEGs (read straight from the shared
``CIFAR-10-images.tar.gz``), upsampled to ``--resolution`` px, for the same number of
epochs, hence (same network, same images, same steps) about the same wall time, which
the table reports. The fine-tuned run starts from ``mobilenet_v2_100_224.tflite_uint8``
(the weights' own normalisation, BatchNorm frozen because the TFLite file folds it into the
convolutions); the scratch run starts from random weights with BatchNorm training. Each
gets its own learning rate (a pretrained network wants a small one). Both are evaluated
on ``--val-per-class`` x 10 images of the CIFAR-10 test split.

Writes results/train_finetune_cifar.md, .csv and .png. Needs LIGHTNETS_WEIGHTS (default:
the shared weights folder).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _output import benchmark_parser, save_figure, subplots, write_csv, write_markdown  # noqa: E402
from _paths import CIFAR_JPEG, RESULTS  # noqa: E402
from train_common import add_run_options, machine_header, run_or_reuse, start  # noqa: E402

from lightnets.train import TrainConfig  # noqa: E402

TAG = "mobilenet_v2_100_224.tflite_uint8"


def plot(curves: dict[str, list[dict]], path: Path) -> None:

    fig, ax = subplots(figsize=(7.5, 4.8), dpi=110)
    for label, records in curves.items():
        ax.plot([r["wall_time"] / 60 for r in records], [r["val_top1"] for r in records], "o-", label=label)
    ax.set(xlabel="training wall time (minutes)", ylabel="CIFAR-10 test top-1 %")
    ax.set_title("MobileNetV2 on CIFAR-10 JPEGs: fine-tuned from ImageNet vs from scratch")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--per-class", type=int, default=1000, help="training JPEGs per class (>= 1000: 10k)")
    parser.add_argument("--val-per-class", type=int, default=100)
    parser.add_argument("--resolution", type=int, default=96)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--finetune-lr", type=float, default=0.001)
    parser.add_argument("--scratch-lr", type=float, default=0.05)
    add_run_options(parser, "/tmp/lightnets_bench/finetune")
    args = parser.parse_args()
    start(args)

    common = dict(
        model="mobilenet_v2",
        model_kwargs={"padding": "tf_same"},
        data=str(CIFAR_JPEG),
        epochs=args.epochs,
        batch_size=args.batch,
        resolution=args.resolution,
        limit_per_class=args.per_class,
        val_limit_per_class=args.val_per_class,
        recipe="sgd",
        warmup_epochs=0.1,
        crop_scale=0.35,
        ema_decay=0.998,
        workers=args.workers,
        threads=args.threads,
        log_every=20,
    )
    arms = {
        "fine-tuned from ImageNet": dict(weights=TAG, freeze_bn=True, lr=args.finetune_lr, model_kwargs={}),
        "from scratch": dict(lr=args.scratch_lr),
    }
    rows, curves = [], {}
    for label, extra in arms.items():
        out = Path(args.runs) / ("finetune" if "weights" in extra else "scratch")
        result = run_or_reuse(TrainConfig(**{**common, **extra, "out": str(out)}), args.reuse)
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        curves[label] = [r for r in records if r["kind"] == "epoch"]
        rows.append(
            {
                "run": label,
                "top1": round(result.val_top1, 2),
                "top1_ema": round(result.val_top1_ema, 2),
                "epochs": result.epochs,
                "steps": result.steps,
                "wall_time_s": round(result.wall_time),
                "lr": extra["lr"],
                "train_loss": round(result.train_loss, 4),
            }
        )
        print(rows[-1], flush=True)

    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / "train_finetune_cifar"
    write_csv(rows, stem.with_suffix(".csv"))
    plot(curves, stem.with_suffix(".png"))
    n = args.per_class * 10
    lines = [
        machine_header("Fine-tuning ImageNet MobileNetV2 on CIFAR-10 vs training from scratch"),
        f"MobileNetV2 1.0 (TensorFlow padding, new 10-class head). Training: {n} CIFAR-10 JPEGs (the first "
        f"{args.per_class} of each class in `CIFAR-10-images.tar.gz`), upsampled to {args.resolution} px with "
        f"random-resized crop (scale 0.35-1) and flip, batch {args.batch}, {args.epochs} epochs, recipe `sgd` "
        "(Nesterov momentum, warm-up over the first 10% of an epoch then cosine, label smoothing 0.1, weight decay 4e-5 except "
        "depthwise/BN/biases), EMA 0.998. Fine-tuned: starts from `mobilenet_v2_100_224.tflite_uint8` "
        "(its normalisation, (x - 128) / 128), BatchNorm frozen (folded in the TFLite file), lr "
        f"{args.finetune_lr}. From scratch: random initialisation, BatchNorm trained, lr {args.scratch_lr}. "
        f"Evaluation: {args.val_per_class * 10} images of the test split (first {args.val_per_class} per class).\n",
        "Same network, images and number of steps, so the same budget: the wall times below are measured, "
        "not imposed. **A short budget** (CPU time is scarce on this shared 2-core machine): neither run "
        "is converged; the comparison is at equal, small training time.\n",
        "| run | top-1 % | top-1 % (EMA) | epochs | steps | wall time (s) | lr | final train loss |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['run']} | {r['top1']} | {r['top1_ema']} | {r['epochs']} | {r['steps']} | "
            f"{r['wall_time_s']} | {r['lr']} | {r['train_loss']} |"
        )
    lines.append(f"\nPlot: `{stem.with_suffix('.png').name}` (test top-1 against training wall time).")
    write_markdown(lines, stem.with_suffix(".md"))


if __name__ == "__main__":
    main()
