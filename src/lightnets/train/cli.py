"""``lightnets train`` (and ``python -m lightnets.train``, which torchrun starts).

``add_train_parser(subparsers)`` adds the subcommand to the ``lightnets`` command;
:func:`main` is the same command standing alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from ..arguments import add_command
from ..zoo import add_model_options, model_kwargs
from ..zoo.options import given_model_options
from .config import TrainConfig, parse_duration
from .recipes import RECIPES, SCHEDULES

DESCRIPTION = """\
Train a lightnets model from scratch, fine-tune it from pretrained weights (--weights), or
distil a teacher into it (--teacher). DIR (--out) receives config.json, checkpoint.pt
(every --checkpoint-every steps and every epoch), metrics.jsonl / metrics.csv, curves.png,
summary.json and the final weights (model.safetensors, model_ema.safetensors with an EMA).
--resume continues the run in DIR, even after a kill, and ends as the uninterrupted run;
DIR is the run (it may be moved or copied), --epochs may grow, --data may point to where
the same images moved, other training options must stay as they were. One process at a
time trains in DIR (DIR/train.lock names it). A loss, gradient or weights that stop being
finite stop the run (exit status 2); the last checkpoint keeps the last good state.

DATA is a folder of class folders, a folder with train/ and val/ (or test/) class folders
(e.g. Imagenette), a CIFAR-10 JPEG .tar.gz, or a folder of CIFAR-10 python batches.
Unreadable images are skipped with one warning each.

Several processes or machines: torchrun --nproc_per_node=N -m lightnets.train ... (NCCL on
GPUs, gloo on CPUs); --batch-size is the global batch, and the run computes what one
process with that batch computes (BatchNorm statistics synchronised; --no-sync-bn for
per-process statistics).
"""

EPILOG = """\
examples:
  lightnets train --model mobilenet_v2 --width 0.5 --data imagenette/ --epochs 30 --resolution 128 --out runs/mnv2
  lightnets train --out runs/mnv2 --resume
  lightnets train --model mobilenet_v2 --weights mobilenet_v2_100_224.tflite_uint8 --freeze-bn \\
      --data CIFAR-10-images.tar.gz --resolution 96 --epochs 2 --recipe sgd --lr 0.001 --out runs/ft
  lightnets train --model mobilenet_v2 --width 0.35 --teacher runs/ft --teacher-cache cache/ \\
      --data imagenette/ --resolution 128 --epochs 10 --out runs/student
  torchrun --nproc_per_node=2 -m lightnets.train --model mobilenet_v2 --data imagenette/ --out runs/ddp
  lightnets train --task segmentation --model deeplabv3_mobilenet_v2 --data pennfudan/ \\
      --backbone-weights mobilenet_v2_100_224.tflite_uint8 --time-budget 20m --out runs/seg  # not torchrun
  lightnets train --task detection --model ssdlite_mobilenet_v2 --data pennfudan/ \\
      --backbone-weights mobilenet_v2_100_224.tflite_uint8 --time-budget 20m --out runs/det
  lightnets train --out runs/det --resume
"""


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``lightnets train``. Defaults are None, so explicit ones are known."""
    g = p.add_argument_group("model and data")
    g.add_argument("--model", help="a registered model (lightnets list); required unless --resume")
    g.add_argument("--data", metavar="DATA", help="training data (see above); required unless --resume")
    g.add_argument("--val-data", metavar="DATA", help="validation data (default: DATA's val/ or test/ split)")
    g.add_argument(
        "--limit-per-class", type=int, metavar="N", help="train on the first N images of each class"
    )
    g.add_argument(
        "--val-limit-per-class", type=int, metavar="N", help="validate on the first N of each class"
    )
    g.add_argument("--resolution", type=int, help="input side in pixels (default 224)")
    for flag, what in (
        (
            "--start-resolution",
            "progressive resizing: train from this side up to --resolution (a linear ramp over "
            "the first 3/4 of the run in steps of 16 px, then --resolution); off by default",
        ),
        (
            "--eval-resolution",
            "evaluation input side, stored in the weights' metadata (default: 1.25 x --resolution "
            "on the 32-pixel grid, 160 for 128, where the crops go down to a quarter of the area "
            "or less: random-resized crops zoom in, so a network tests best a little larger)",
        ),
    ):
        g.add_argument(flag, type=int, metavar="PX", help=what)
    g.add_argument("--out", required=True, metavar="DIR", help="the run folder")
    g.add_argument("--resume", action="store_true", help="continue the run in DIR")

    add_model_options(p)

    g = p.add_argument_group("schedule and optimiser")
    g.add_argument("--epochs", type=int, help="default 10")
    g.add_argument(
        "--time-budget",
        type=_duration,
        metavar="TIME",
        help="90s, 5m, 1.5h: the whole command (start-up, caching, training, evaluation) fits "
        "in TIME; the schedule (warm-up, decay, EMA) is fitted to the throughput measured "
        "in the first steps; --epochs is not used",
    )
    g.add_argument(
        "--steps", type=int, help="train exactly N steps (the summary of a budgeted run gives its N)"
    )
    g.add_argument("--batch-size", type=int, help="global batch (default 64)")
    g.add_argument(
        "--recipe",
        choices=RECIPES,
        help="paper: RMSprop, lr 0.045 x 0.98/epoch, wd 4e-5; sgd/adamw: warm-up + cosine, "
        "label smoothing 0.1, EMA (default sgd)",
    )
    g.add_argument("--optimizer", choices=("rmsprop", "sgd", "adamw"), help="override the recipe's")
    g.add_argument("--lr", type=float, help="peak learning rate (sgd recipe: 0.1 x batch / 256)")
    g.add_argument("--momentum", type=float)
    g.add_argument("--weight-decay", type=float, help="none on depthwise filters, BatchNorm and biases")
    g.add_argument(
        "--schedule",
        choices=SCHEDULES,
        help="cosine (the sgd/adamw recipes'): warm-up, then half a cosine to 0; onecycle: up from lr/25 "
        "over 30%% of the run and down to ~0, momentum 0.95 -> 0.85 -> 0.95 (--warmup-epochs unused); "
        "exponential (the paper recipe's): --lr-decay per epoch; constant",
    )
    g.add_argument("--warmup-epochs", type=float)
    g.add_argument("--lr-decay", type=float, help="per-epoch factor of the exponential schedule (0.98)")
    g.add_argument("--label-smoothing", type=float)
    g.add_argument("--ema-decay", type=float, help="EMA of the weights; 0 turns it off")
    g.add_argument("--clip-grad", type=float, metavar="NORM", help="clip the gradient norm")

    g = p.add_argument_group("augmentation")
    g.add_argument("--crop-scale", type=float, help="smallest random crop, as a fraction of the area (0.08)")
    g.add_argument("--hflip", type=float, help="probability of a left-right flip (0.5)")
    g.add_argument("--color-jitter", type=float, help="brightness/contrast/saturation strength (0: off)")
    g.add_argument(
        "--no-cache",
        dest="cache",
        action="store_false",
        default=None,
        help="decode the JPEGs every epoch instead of once into DIR/cache (uint8, memory-mapped)",
    )
    g.add_argument("--views", type=int, help="K fixed augmentations cycled over epochs (0: new each epoch)")
    g.add_argument(
        "--mixup",
        type=float,
        metavar="ALPHA",
        help="blend pairs of images and their labels, the share drawn from Beta(ALPHA, ALPHA) (0: off)",
    )
    g.add_argument(
        "--cutmix",
        type=float,
        metavar="ALPHA",
        help="paste a box of another image, covering a Beta(ALPHA, ALPHA) share, labels in proportion "
        "(0: off; with --mixup each batch takes one of the two)",
    )

    g = p.add_argument_group("fine-tuning")
    g.add_argument("--weights", help="start from a weights tag or file; the classifier is replaced")
    g.add_argument("--freeze-backbone", action="store_true", default=None, help="train only the head")
    g.add_argument("--backbone-lr-scale", type=float, help="backbone learning rate x this (e.g. 0.1)")
    g.add_argument(
        "--freeze-bn",
        action="store_true",
        default=None,
        help="keep BatchNorm statistics as loaded (small batches; TFLite weights with BN folded)",
    )

    g = p.add_argument_group("distillation")
    g.add_argument(
        "--teacher", help="a run folder, weights file, checkpoint, or model name (with --teacher-weights)"
    )
    g.add_argument("--teacher-weights", help="weights tag or file for a teacher given by model name")
    g.add_argument("--distill-alpha", type=float, help="weight of the teacher term (0.9)")
    g.add_argument("--distill-temperature", type=float, help="softening temperature T (4)")
    g.add_argument("--teacher-cache", metavar="DIR", help="cache teacher logits here")

    g = p.add_argument_group("execution")
    g.add_argument("--seed", type=int, help="default 0; the same seed gives the same run")
    g.add_argument("--workers", type=int, help="image-loading processes (default 0)")
    g.add_argument("--threads", type=int, help="PyTorch threads of each process")
    g.add_argument("--device", help="auto (default), cpu, cuda, cuda:1 ...")
    g.add_argument(
        "--channels-last",
        action="store_true",
        default=None,
        help="NHWC memory format (the default; --no-channels-last for NCHW)",
    )
    g.add_argument("--no-channels-last", dest="channels_last", action="store_false", default=None)
    g.add_argument(
        "--amp",
        choices=("auto", "off", "bf16", "fp16"),
        help="mixed precision (auto, the default: fp16 on CUDA, bf16 on CPUs with native "
        "bfloat16 (AVX512_BF16 or AMX), float32 elsewhere)",
    )
    g.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        help="parameter precision (float64: numerical checks, e.g. DDP against one process)",
    )
    g.add_argument(
        "--no-sync-bn",
        dest="sync_bn",
        action="store_false",
        default=None,
        help="distributed: per-process BatchNorm statistics (faster; differs from one process)",
    )
    g.add_argument("--checkpoint-every", type=int, metavar="STEPS", help="also checkpoint every N steps")
    g.add_argument("--log-every", type=int, metavar="STEPS", help="steps between metric records (10)")
    g.add_argument(
        "--no-progress", dest="progress", action="store_false", default=None, help="no progress bars"
    )
    g.add_argument("--format", choices=("text", "json"), default="text", help="how to print the result")


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, bool]:
    """The run the options describe, and whether it resumes one."""
    kwargs = model_kwargs(args, args.model)
    given = {k: v for k, v in vars(args).items() if v is not None and k not in given_model_options(args)}
    resume = given.pop("resume", False)
    # Options of every command, and the lightnets command's choice of trainer (--task).
    for key in ("command", "func", "format", "debug", "max_pixels", "task"):
        given.pop(key, None)
    if kwargs:
        given["model_kwargs"] = kwargs
    if resume:
        saved = TrainConfig.load(given["out"])
        return saved.resume_with(given), True
    missing = [f"--{name}" for name in ("model", "data") if name not in given]
    if missing:
        raise ValueError(f"{' and '.join(missing)} needed (or --resume to continue a run)")
    return TrainConfig(**given), False


def _one_line_warnings(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def cmd_train(args: argparse.Namespace) -> int:
    from .trainer import process_start, result_dict, train

    config, resume = config_from_args(args)
    # One line per warning (a skipped image names itself); no source lines under it.
    warnings.formatwarning = _one_line_warnings
    result = train(config, resume=resume, started=process_start())
    if result.weights is None:  # not rank 0 of a distributed run: rank 0 reports
        return 0
    if args.format == "json":
        print(json.dumps(result_dict(result), indent=2))
        return 0
    parts = [f"{result.epochs} epochs, {result.steps} steps in {result.wall_time:.0f} s"]
    if result.train_loss is not None:
        parts.append(f"train loss {result.train_loss:.4f}")
    if result.val_top1 is not None:
        parts.append(f"val top-1 {result.val_top1:.2f}%")
    if result.val_top1_ema is not None:
        parts.append(f"EMA top-1 {result.val_top1_ema:.2f}%")
    print(", ".join(parts))
    holds = "the EMA of the weights" if result.recommended == "ema" else "the last weights"
    print(f"weights: {result.weights}, {holds} (run folder {Path(result.out)})")
    return 0


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``train`` to the ``lightnets`` subcommands."""
    p = add_command(
        subparsers,
        "train",
        "train, fine-tune or distil a model (one process or torchrun)",
        DESCRIPTION,
        EPILOG,
    )
    add_arguments(p)
    p.set_defaults(func=cmd_train)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lightnets.train",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return cmd_train(args)
    except ValueError as error:
        print(f"lightnets train: error: {error}", file=sys.stderr)
        return 2
