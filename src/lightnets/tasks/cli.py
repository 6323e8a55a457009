"""The segmentation commands: ``segment``, ``segment-train`` and ``eval --task segmentation``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from ..data.images import is_image_file
from ..render import render
from ..zoo import add_model_options, add_weights_options, model_for_weights, model_kwargs
from .segdata import pennfudan
from .segment import evaluate_segmentation, input_size_of, segment_images
from .segtrain import SegmentationRun, train_segmentation

TASKS = ("classification", "segmentation")


def _model(args: argparse.Namespace) -> torch.nn.Module:
    if getattr(args, "backend", None) not in (None, "pytorch"):
        raise ValueError("segmentation runs with the pytorch backend only")
    model = model_for_weights(args.weights, args.model, args.weights_root, **model_kwargs(args, args.model))
    if not hasattr(model, "cost_parts"):
        raise ValueError(f"{args.weights} is not a segmentation model (deeplabv3_*): segment needs one")
    return model.eval()


def _image_paths(items: list[str]) -> list[Path]:
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and is_image_file(p))
            if not found:
                raise ValueError(f"{path} holds no images")
            paths += found
        elif path.is_file():
            paths.append(path)
        else:
            raise ValueError(f"{path}: no such file or folder")
    return paths


def cmd_segment(args: argparse.Namespace) -> int:
    model = _model(args)
    records = segment_images(model, _image_paths(args.images), args.out, args.size)
    if args.format == "json":
        print(json.dumps(records, indent=2))
        return 0
    for record in records:
        share = ", ".join(f"{k} {100 * v:.1f}%" for k, v in record["share"].items())
        print(f"{record['image']}: {share} -> {record['overlay']}, {record['mask']}")
    return 0


def cmd_eval_segmentation(args: argparse.Namespace) -> int:
    """``lightnets eval --task segmentation``: IoU per class and mIoU on a Penn-Fudan split."""
    model = _model(args)
    data = pennfudan(args.data, args.split)
    if args.limit:
        data.pairs = data.pairs[: args.limit]
    size = args.size or input_size_of(model)
    result = evaluate_segmentation(model, data, size)
    out: dict[str, Any] = result.to_dict() | {"weights": str(args.weights), "split": args.split}
    if args.format == "json":
        print(json.dumps(out, indent=2))
        return 0
    print(
        f"{args.weights} on {args.data} ({args.split}, {result.images} images, shorter side {size}): "
        f"mIoU {result.miou:.4f}, pixel accuracy {result.pixel_accuracy:.4f}"
    )
    rows = [(name, value) for name, value in zip(result.classes, result.iou, strict=True)]
    print(render(("class", "IoU"), rows, "table", floatfmt=".4f"))
    return 0


def add_segmentation_eval_options(parser: argparse.ArgumentParser) -> None:
    """The options ``eval`` takes for ``--task segmentation``."""
    parser.add_argument(
        "--task",
        choices=TASKS,
        default="classification",
        help="classification (an image folder) or segmentation (a Penn-Fudan folder: IoU per class, mIoU)",
    )
    parser.add_argument(
        "--split", choices=("train", "val", "all"), default="val", help="segmentation: the Penn-Fudan split"
    )
    parser.add_argument("--size", type=int, help="segmentation: the shorter side at the input (default: the weights')")


def cmd_segment_train(args: argparse.Namespace) -> int:
    kwargs = model_kwargs(args, args.model)
    backbone_weights = kwargs.pop("backbone_weights", None)
    kwargs.pop("num_classes", None)
    run = SegmentationRun(
        model=args.model,
        data=args.data,
        out=args.out,
        resolution=args.resolution,
        eval_size=args.eval_size,
        scale=(args.scale_range[0], args.scale_range[1]),
        batch_size=args.batch_size,
        minutes=args.minutes,
        lr=args.lr,
        backbone_weights=backbone_weights,
        freeze_stride=args.freeze_stride,
        seed=args.seed,
        threads=args.threads,
        model_kwargs=kwargs,
    )
    summary = train_segmentation(run)
    val = summary["val"]
    ious = ", ".join(f"{k} {v:.4f}" for k, v in val["iou"].items())
    print(
        f"{summary['steps']} steps ({summary['epochs']} epochs) in {summary['train_seconds'] / 60:.1f} min; "
        f"val ({summary['val_images']} images): mIoU {val['miou']:.4f} ({ious}); weights {summary['weights']}"
    )
    return 0


def add_segment_parsers(sub: Any) -> None:
    """Add ``segment`` and ``segment-train`` to the ``lightnets`` subcommands."""
    p = sub.add_parser(
        "segment",
        help="segment photos: PNG overlays and class masks",
        description="Run a segmentation model (a weights file from segment-train) on photos or "
        "folders of photos; writes <name>_overlay.png and <name>_mask.png (class index per pixel).",
    )
    p.add_argument("images", nargs="+", metavar="IMAGES")
    add_weights_options(p, "a segmentation weights file (model.safetensors)")
    p.add_argument("--out", default="segmented", metavar="DIR", help="output folder (default segmented/)")
    p.add_argument("--size", type=int, help="the shorter side at the input (default: the weights')")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser(
        "segment-train",
        help="fine-tune a segmentation model on Penn-Fudan (person / background) under a time budget",
        description="Train a deeplabv3_* model on Penn-Fudan's fixed training split from a backbone's "
        "ImageNet weights (--backbone-weights), then report IoU on the validation split.",
    )
    p.add_argument("--model", default="deeplabv3_mobilenet_v2")
    p.add_argument("--data", required=True, metavar="DIR", help="the Penn-Fudan folder")
    p.add_argument("--out", required=True, metavar="DIR", help="the run folder")
    p.add_argument("--resolution", type=int, default=224, help="training crop side (default 224)")
    p.add_argument(
        "--eval-size", type=int, help="shorter side of the photos at evaluation (default: --resolution)"
    )
    p.add_argument(
        "--scale-range", type=float, nargs=2, default=(0.75, 1.5), metavar=("LOW", "HIGH"),
        help="training photos' shorter side, times the evaluation size (default 0.75 1.5)",
    )  # fmt: skip
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--minutes", type=float, default=20.0, help="training time budget (default 20)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3)")
    p.add_argument("--freeze-stride", type=int, default=4, help="freeze backbone layers up to this stride")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="PyTorch threads (default 1)")
    add_model_options(p)
    p.set_defaults(func=cmd_segment_train)
