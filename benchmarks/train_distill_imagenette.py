"""Distillation on Imagenette: MobileNetV2-0.35 from a fine-tuned MobileNetV2-1.0 vs alone.

    OMP_WAIT_POLICY=PASSIVE nice -n 10 .venv/bin/python benchmarks/train_distill_imagenette.py

1. Teacher: MobileNetV2 1.0 fine-tuned from ``mobilenet_v2_100_224.tflite_uint8`` on the
   shared Imagenette subset (``--teacher-per-class`` images per class, ``--teacher-epochs``).
2. Student alone: MobileNetV2 0.35 from scratch, cross-entropy with label smoothing.
3. Student distilled: the same student, same data, augmentation, recipe, epochs and seed,
   with loss 0.1 x CE + 0.9 x T^2 KL to the teacher's logits (T = 4). The teacher's logits
   are cached on disk; augmentation views repeat every ``--views`` epochs (in both student
   runs alike), so the teacher runs only in the first ``--views`` epochs.

Both students: the same budget (epochs, steps, images). Writes
results/train_distill_imagenette.md, .csv and .png.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _output import benchmark_parser, save_figure, subplots, write_csv, write_markdown  # noqa: E402
from _paths import IMAGENETTE, RESULTS  # noqa: E402
from train_common import add_run_options, machine_header, run_or_reuse, start  # noqa: E402

from lightnets.train import TrainConfig  # noqa: E402

TAG = "mobilenet_v2_100_224.tflite_uint8"


def epochs_of(out: Path) -> list[dict]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["kind"] == "epoch"]


def plot(curves: dict[str, list[dict]], teacher_top1: float, path: Path) -> None:

    fig, ax = subplots(figsize=(7.5, 4.8), dpi=110)
    for label, records in curves.items():
        ax.plot([r["epoch"] for r in records], [r["val_top1"] for r in records], "o-", label=label)
    ax.axhline(teacher_top1, color="gray", ls="--", label=f"teacher (MobileNetV2 1.0): {teacher_top1:.1f}%")
    ax.set(
        xlabel="epoch", ylabel="validation top-1 %", title="MobileNetV2-0.35 student on Imagenette, 128 px"
    )
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--teacher-per-class", type=int, default=150)
    parser.add_argument("--teacher-epochs", type=int, default=1)
    parser.add_argument("--per-class", type=int, default=300, help="student training images per class")
    parser.add_argument("--val-per-class", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    add_run_options(parser, "/tmp/lightnets_bench/distill")
    args = parser.parse_args()
    start(args)
    runs = Path(args.runs)

    common = dict(
        data=str(IMAGENETTE),
        resolution=args.resolution,
        val_limit_per_class=args.val_per_class,
        batch_size=args.batch,
        workers=args.workers,
        threads=args.threads,
        log_every=20,
    )
    teacher = run_or_reuse(
        TrainConfig(
            **common,
            model="mobilenet_v2",
            weights=TAG,
            freeze_bn=True,
            out=str(runs / "teacher"),
            epochs=args.teacher_epochs,
            limit_per_class=args.teacher_per_class,
            recipe="sgd",
            lr=0.001,  # BatchNorm frozen and folded: no normalisation left, so a small rate
            warmup_epochs=0.2,
            ema_decay=0.0,
            crop_scale=0.35,
        ),
        args.reuse,
    )
    student = dict(
        **common,
        model="mobilenet_v2",
        model_kwargs={"width": 0.35},
        epochs=args.epochs,
        limit_per_class=args.per_class,
        recipe="adamw",
        ema_decay=0.99,
        crop_scale=0.25,
        views=args.views,
        seed=1,
    )
    alone = run_or_reuse(TrainConfig(**student, out=str(runs / "alone")), args.reuse)
    distilled = run_or_reuse(
        TrainConfig(
            **student,
            out=str(runs / "distilled"),
            teacher=str(runs / "teacher"),
            teacher_cache=str(runs / "teacher_cache"),
            distill_alpha=0.9,
            distill_temperature=4.0,
        ),
        args.reuse,
    )
    cache = json.loads((runs / "distilled" / "summary.json").read_text())["teacher_cache"]

    rows = [
        {
            "run": "teacher: MobileNetV2 1.0 fine-tuned",
            "top1": round(teacher.val_top1, 2),
            "top1_ema": None,
            "epochs": teacher.epochs,
            "steps": teacher.steps,
            "wall_time_s": round(teacher.wall_time),
        }
    ]
    for label, result in (("student alone", alone), ("student distilled", distilled)):
        rows.append(
            {
                "run": f"{label}: MobileNetV2 0.35",
                "top1": round(result.val_top1, 2),
                "top1_ema": round(result.val_top1_ema, 2),
                "epochs": result.epochs,
                "steps": result.steps,
                "wall_time_s": round(result.wall_time),
            }
        )
        print(rows[-1], flush=True)

    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / "train_distill_imagenette"
    write_csv(rows, stem.with_suffix(".csv"))
    plot(
        {"student alone": epochs_of(runs / "alone"), "student distilled": epochs_of(runs / "distilled")},
        teacher.val_top1,
        stem.with_suffix(".png"),
    )
    gain = distilled.val_top1 - alone.val_top1
    gain_ema = distilled.val_top1_ema - alone.val_top1_ema
    n_val = args.val_per_class * 10
    lines = [
        machine_header("Distillation on Imagenette: MobileNetV2-0.35 student, MobileNetV2-1.0 teacher"),
        f"Teacher: MobileNetV2 1.0 from `{TAG}` fine-tuned {args.teacher_epochs} epoch(s) on "
        f"{args.teacher_per_class * 10} images (BatchNorm frozen, SGD lr 0.001). Students: MobileNetV2 0.35 "
        f"from scratch, {args.per_class * 10} training images, {args.epochs} epochs, batch {args.batch}, "
        f"{args.resolution} px, recipe `adamw` (lr 2e-3, cosine, label smoothing 0.1), EMA 0.99, random-resized "
        f"crop (scale 0.25-1) and flip with {args.views} augmentation views cycled over the epochs, seed 1 — "
        "identical for both. Distilled: loss = 0.1 x CE + 0.9 x 4^2 x KL(teacher || student) at T = 4, "
        f"teacher logits cached on disk (hits {cache['hits']}, misses {cache['misses']}: the teacher ran "
        f"in the first {args.views} epochs only). Validation: {n_val} images (first {args.val_per_class} "
        "per class of val/).\n",
        "**A short budget** (2 shared CPU cores): the students are far from converged; both get exactly "
        "the same one.\n",
        "| run | top-1 % | top-1 % (EMA) | epochs | steps | wall time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['run']} | {r['top1']} | {r['top1_ema'] if r['top1_ema'] is not None else '-'} | "
            f"{r['epochs']} | {r['steps']} | {r['wall_time_s']} |"
        )
    # One validation image is 100 / n_val points; a binomial standard error for scale.
    p = alone.val_top1 / 100
    se = 100 * (2 * p * (1 - p) / n_val) ** 0.5
    lines.append(
        f"\nDistilled minus alone: {gain:+.2f} points top-1 ({gain_ema:+.2f} with EMA weights); for scale, "
        f"the standard error of a difference of two accuracies near {alone.val_top1:.0f}% on {n_val} "
        f"images is about {se:.1f} points."
    )
    lines.append(f"\nPlot: `{stem.with_suffix('.png').name}` (validation top-1 per epoch).")
    write_markdown(lines, stem.with_suffix(".md"))


if __name__ == "__main__":
    main()
