"""The task commands: ``segment``, ``detect``, and ``train`` / ``eval`` with ``--task segmentation`` or ``detection``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from ..data.images import is_image_file
from ..files import write_text
from ..render import render
from ..train.trainer import process_start
from ..zoo import add_weights_options, model_for_weights, model_kwargs
from ..zoo.options import given_model_options
from .deeplab import DeepLabV3
from .detdata import open_detection_data
from .detect import DRAW_THRESHOLD, detect_images, evaluate_detection
from .dettrain import DEFAULT_ZOOM_OUT, DetectionTask
from .dettrain import DEFAULTS as DETECTION_DEFAULTS
from .segdata import pennfudan
from .segment import evaluate_segmentation, segment_images
from .segtrain import DEFAULTS as SEGMENTATION_DEFAULTS
from .segtrain import SegmentationTask
from .ssd import SSD
from .task_model import input_size_of
from .task_training import RUN_FILE, Task, TaskRun, load_task_run, train_task

TASKS = ("classification", "segmentation", "detection")


def _model(args: argparse.Namespace, kind: type[torch.nn.Module] = DeepLabV3) -> Any:
    """The task model of ``--weights``: a segmentation (``DeepLabV3``) or detection (``SSD``) model."""
    what = "segmentation" if kind is DeepLabV3 else "detection"
    if getattr(args, "backend", None) not in (None, "pytorch"):
        raise ValueError(f"{what} runs with the pytorch backend only")
    model = model_for_weights(args.weights, args.model, args.weights_root, **model_kwargs(args, args.model))
    if not isinstance(model, kind):
        family = "deeplabv3_*" if kind is DeepLabV3 else "ssd300_* or ssdlite_*"
        raise ValueError(f"{args.weights} is not a {what} model ({family}): {args.command} needs one")
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


def cmd_detect(args: argparse.Namespace) -> int:
    """``lightnets detect``: drawings and a COCO-style JSON of the detections."""
    model = _model(args, SSD)
    records = detect_images(model, _image_paths(args.images), args.out, args.size, args.threshold)
    results = [{"file_name": Path(r["image"]).name, **d} for r in records for d in r["detections"]]
    listing = write_text(Path(args.out) / "detections.json", json.dumps(results, indent=1) + "\n")
    if args.format == "json":
        print(json.dumps(records, indent=2))
        return 0
    for record in records:
        found = ", ".join(f"{d['category']} {d['score']:.2f}" for d in record["detections"]) or "nothing"
        print(f"{record['image']}: {found} -> {record['drawing']}")
    print(f"all detections: {listing}")
    return 0


def cmd_eval_detection(args: argparse.Namespace) -> int:
    """``lightnets eval --task detection``: COCO-style average precision."""
    model = _model(args, SSD)
    data = open_detection_data(args.data, args.split)
    if args.limit:
        data.items = data.items[: args.limit]
    size = args.size or input_size_of(model, model.default_input_size)
    scores = evaluate_detection(model, data, size)
    if args.format == "json":
        print(json.dumps(scores.to_dict() | {"weights": str(args.weights), "size": size}, indent=2))
        return 0
    print(
        f"{args.weights} on {args.data} ({scores.images} images, {scores.objects} objects, {size}x{size}): "
        f"mAP@[.5:.95] {scores.map:.4f}, AP50 {scores.ap50:.4f}, AP75 {scores.ap75:.4f}"
    )
    print(render(("class", "AP@[.5:.95]"), list(scores.per_class.items()), "table", floatfmt=".4f"))
    return 0


def add_segmentation_eval_options(parser: argparse.ArgumentParser) -> None:
    """The options ``eval`` takes for ``--task segmentation``."""
    parser.add_argument(
        "--task",
        choices=TASKS,
        default="classification",
        help="classification (an image folder), segmentation (a Penn-Fudan folder: IoU per class, mIoU) "
        "or detection (a Penn-Fudan or YOLO folder, or a COCO .json: COCO-style mAP, AP50, AP per class)",
    )
    parser.add_argument(
        "--split",
        choices=("train", "val", "all"),
        default="val",
        help="segmentation, detection: the Penn-Fudan split",
    )
    parser.add_argument(
        "--size",
        type=int,
        help="segmentation: the shorter side at the input; detection: the input side (default: the weights')",
    )


# ``lightnets train`` options that a segmentation or detection run takes, and the run's field for each.
TASK_TRAIN_OPTIONS = {
    "model": "model",
    "data": "data",
    "out": "out",
    "resolution": "resolution",
    "batch_size": "batch_size",
    "epochs": "epochs",
    "lr": "lr",
    "weight_decay": "weight_decay",
    "freeze_bn": "freeze_batchnorm",
    "freeze_stride": "freeze_stride",
    "amp": "amp",
    "seed": "seed",
    "threads": "threads",
}
# The options of one task only, and the run's ``options`` key for each.
TASK_OPTIONS = {
    "segmentation": {"eval_resolution": "eval_size", "scale_range": "scale"},
    "detection": {"val_data": "val_data", "zoom_out": "zoom_out"},
}
# Options of every command, and ``train`` options that hold a value even when not given.
NOT_TRAINING_OPTIONS = ("command", "func", "format", "debug", "max_pixels", "task", "resume", "progress")
DEFAULT_BUDGET = 20 * 60.0


def add_task_train_options(parser: argparse.ArgumentParser) -> None:
    """The options ``lightnets train`` takes for ``--task segmentation`` and ``detection``."""
    g = parser.add_argument_group(
        "segmentation and detection (--task segmentation | detection)",
        "Fine-tune a deeplabv3_* model on a Penn-Fudan folder (person / background, fixed\n"
        "train / val split), or an ssd300_* / ssdlite_* detector on a Penn-Fudan folder, a YOLO\n"
        "folder (images/, labels/) or a COCO .json (scored on --val-data, Penn-Fudan's val split,\n"
        "or else the training photos), from the backbone's ImageNet weights (--backbone-weights):\n"
        "AdamW, warm-up and poly decay fitted to --time-budget (of the whole run; default 20m) or\n"
        "--epochs, bfloat16 where the CPU has it (--amp), a checkpoint every minute at an epoch's\n"
        "end (--resume continues; --out DIR --resume is enough), then the scores on the val data.\n"
        "Takes --model, --data, --out, --resolution (crop side, default 224; detection: the\n"
        "input side, 320), --batch-size (8; detection 16), --lr (1e-3; detection 2e-3),\n"
        "--weight-decay (1e-4), --epochs, --freeze-bn (backbone BatchNorm statistics frozen;\n"
        "default: below 8 images a batch), --amp, --seed, --threads and the model options;\n"
        "segmentation also --eval-resolution (the photos' shorter side at evaluation),\n"
        "detection --val-data and --zoom-out.",
    )
    g.add_argument(
        "--task",
        choices=TASKS,
        default="classification",
        help="classification (the default: class folders, the options above), segmentation or detection",
    )
    g.add_argument(
        "--scale-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
        help="segmentation: training photos' shorter side, times the evaluation size (default 0.75 1.5)",
    )  # fmt: skip
    g.add_argument(
        "--zoom-out", type=float, metavar="RATIO",
        help=f"detection: the photos are placed on canvases up to RATIO times larger, half of the time "
        f"(default {DEFAULT_ZOOM_OUT}; SSD's 4 for long runs; 1: never)",
    )  # fmt: skip
    g.add_argument(
        "--freeze-stride",
        type=int,
        help="freeze the backbone's layers up to this stride (default 4; 0: none)",
    )


def refuse_task_options(args: argparse.Namespace) -> None:
    """``ValueError`` when a classification run is given an option of segmentation or detection runs."""
    given = [
        f"--{name.replace('_', '-')}"
        for name in ("scale_range", "freeze_stride", "zoom_out")
        if getattr(args, name, None)
    ]
    if given:
        raise ValueError(f"{', '.join(given)}: options of --task segmentation and detection only")


TASK_CLASSES: dict[str, type[Task]] = {"segmentation": SegmentationTask, "detection": DetectionTask}
TASK_DEFAULTS = {"segmentation": SEGMENTATION_DEFAULTS, "detection": DETECTION_DEFAULTS}


def saved_task(out: str | None) -> str | None:
    """The task of the run in ``out`` (None: no task run there)."""
    path = Path(out or "") / RUN_FILE
    return str(json.loads(path.read_text())["task"]) if out and path.is_file() else None


def task_run(args: argparse.Namespace, task: str) -> tuple[TaskRun, bool]:
    """The run that ``lightnets train --task TASK`` options describe, and whether it resumes one."""
    model_options = given_model_options(args)
    given = {
        name: value
        for name, value in vars(args).items()
        if value is not None and name not in NOT_TRAINING_OPTIONS and name not in model_options
    }
    if args.resume:
        if "out" not in given:
            raise ValueError("--resume needs --out, the run's folder")
        changed = sorted(f"--{k.replace('_', '-')}" for k in given if k not in ("out", "threads"))
        if changed:
            raise ValueError(f"--resume continues the run as it was set: drop {', '.join(changed)}")
        run = load_task_run(given["out"])
        if "threads" in given:
            run.threads = given["threads"]
        return run, True
    own = TASK_OPTIONS[task]
    unused = sorted(
        f"--{name.replace('_', '-')}"
        for name in given
        if name not in TASK_TRAIN_OPTIONS and name not in own and name != "time_budget"
    )
    if unused:
        raise ValueError(f"--task {task} does not take {', '.join(unused)}")
    missing = [f"--{name}" for name in ("model", "data") if name not in given]
    if missing:
        raise ValueError(f"{' and '.join(missing)} needed")
    if "epochs" in given and "time_budget" in given:
        raise ValueError("--epochs and --time-budget: a run is planned by one of them")
    kwargs = model_kwargs(args, given["model"])
    if "num_classes" in kwargs:
        raise ValueError(f"--num-classes: a {task} model gets the classes of its data")
    fields = TASK_DEFAULTS[task] | {
        TASK_TRAIN_OPTIONS[k]: v for k, v in given.items() if k in TASK_TRAIN_OPTIONS
    }
    fields.setdefault("out", f"runs/{task}")
    options = {own[k]: v for k, v in given.items() if k in own}
    run = TaskRun(
        **fields,
        minutes=given.get("time_budget", DEFAULT_BUDGET) / 60.0,
        backbone_weights=kwargs.pop("backbone_weights", None),
        model_kwargs=kwargs,
        options=options,
    )
    return run, False


def cmd_train_task(args: argparse.Namespace, task: str) -> int:
    """``lightnets train --task segmentation`` or ``detection``."""
    run, resume = task_run(args, task)
    if not run.backbone_weights and not resume:
        print("note: no --backbone-weights: the backbone starts from random weights", file=sys.stderr)
    summary = train_task(run, TASK_CLASSES[task](), resume, started=process_start(), progress=args.progress)
    if summary is None:  # not rank 0 of a distributed run: rank 0 reports
        return 0
    if args.format == "json":
        print(json.dumps(summary, indent=2))
        return 0
    val = summary["val"]
    if task == "segmentation":
        ious = ", ".join(f"{k} {v:.4f}" for k, v in val["iou"].items())
        scores = f"mIoU {val['miou']:.4f} ({ious})"
    else:
        scores = f"mAP@[.5:.95] {val['mAP']:.4f}, AP50 {val['AP50']:.4f}"
    seconds = summary["seconds"]
    print(
        f"{summary['steps']} steps ({summary['epochs']} epochs) in {seconds['training'] / 60:.1f} min; "
        f"val ({summary['val_images']} images): {scores}; weights {summary['weights']} "
        f"({'the EMA of the weights' if summary['recommended'] == 'ema' else 'the last weights'})"
    )
    return 0


# The photo commands: name -> (help, what the weights are, what it writes, output folder, size).
PHOTO_COMMANDS = {
    "segment": (
        "segment photos: PNG overlays and class masks",
        "a segmentation model (a weights file from 'lightnets train --task segmentation')",
        "<name>_overlay.png and <name>_mask.png (class index per pixel)",
        "segmented",
        "the shorter side at the input",
    ),
    "detect": (
        "detect objects in photos: PNG drawings and a COCO-style JSON",
        "a detector (ssd300_* / ssdlite_* weights)",
        "<name>_detections.png (boxes outlined and labelled) and detections.json (per detection: "
        "file_name, bbox as x y w h in pixels, category_id, category, score)",
        "detected",
        "the input side",
    ),
}


def add_photo_parsers(sub: Any) -> None:
    """Add ``segment`` and ``detect`` to the ``lightnets`` subcommands."""
    for name, (summary, model, writes, out, size) in PHOTO_COMMANDS.items():
        p = sub.add_parser(
            name, help=summary, description=f"Run {model} on photos or folders of photos; writes {writes}."
        )
        p.add_argument("images", nargs="+", metavar="IMAGES")
        add_weights_options(p, f"{model.split(' (')[0]}: its weights file (model.safetensors)")
        p.add_argument("--out", default=out, metavar="DIR", help=f"output folder (default {out}/)")
        p.add_argument("--size", type=int, help=f"{size} (default: the weights')")
        p.add_argument("--format", choices=("table", "json"), default="table")
        p.set_defaults(func=cmd_segment if name == "segment" else cmd_detect)
        if name == "detect":
            p.add_argument("--threshold", type=float, default=DRAW_THRESHOLD,
                           help=f"lowest score kept (default {DRAW_THRESHOLD})")  # fmt: skip
