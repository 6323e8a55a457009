"""Fine-tuning a segmentation model on a CPU under a time budget.

A loop of its own (the classification trainer takes image-level labels): AdamW with a
poly learning-rate decay over the *time* budget (``lr * (1 - elapsed / budget) ** 0.9``,
so the schedule ends when the budget does, whatever the machine's speed), the
cross-entropy that ignores the void label, and the joint augmentation of
:mod:`.segdata`. The layers at strides 2 and 4 of an ImageNet-initialised backbone
stay frozen (weights and BatchNorm statistics): they hold generic edges and colours,
and on a CPU their backward pass, at the largest maps, is a third of a step's time.

The run folder gets ``metrics.jsonl`` (one record per step), ``model.safetensors``
(readable by ``create_model(..., weights=)`` and ``lightnets segment --weights``) and
``summary.json`` (the configuration, the validation IoUs, the time taken).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..files import append_line, write_json
from ..zoo import create_model
from .deeplab import segmentation_loss
from .segdata import Normalise, SegmentationAugment, pennfudan
from .segment import evaluate_segmentation
from .task_model import normalise_of, save_task_weights


@dataclass
class SegmentationRun:
    """What a run trains, on what, and for how long."""

    model: str = "deeplabv3_mobilenet_v2"
    data: str = ""
    out: str = "runs/segment"
    resolution: int = 224  # training crop side
    eval_size: int | None = None  # shorter side of the photos at evaluation (default: resolution)
    scale: tuple[float, float] = (0.75, 1.5)  # of eval_size: the training photos' shorter side
    batch_size: int = 8
    minutes: float = 20.0
    lr: float = 1e-3
    weight_decay: float = 1e-4
    backbone_weights: str | None = "mobilenet_v2_100_224.tflite_uint8"
    freeze_stride: int = 4  # backbone layers at strides up to this stay frozen (0: none)
    seed: int = 0
    threads: int | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks = {
            "resolution": self.resolution >= 16,
            "eval_size": self.eval_size is None or self.eval_size >= 16,
            "batch_size": self.batch_size >= 1,
            "minutes": self.minutes > 0,
            "lr": self.lr > 0,
            "weight_decay": self.weight_decay >= 0,
            "freeze_stride": self.freeze_stride >= 0,
            "scale": 0 < self.scale[0] <= self.scale[1],
        }
        wrong = [name for name, ok in checks.items() if not ok]
        if wrong:
            shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in wrong)
            raise ValueError(
                f"invalid segmentation run: {shown} (need resolution and eval size >= 16 px, "
                "batch size >= 1, minutes and lr > 0, weight decay and freeze stride >= 0, "
                "0 < scale low <= high)"
            )


def _freeze_early(model: nn.Module, max_stride: int) -> list[nn.Module]:
    """Freeze the backbone's layers at strides <= ``max_stride``; returns them."""
    backbone = getattr(model, "backbone", None)
    if backbone is None or max_stride <= 0:
        return []
    frozen = [
        layer
        for layer, info in zip(backbone.features, backbone.layer_info, strict=True)
        if info.reduction <= max_stride
    ]
    for layer in frozen:
        layer.requires_grad_(False)
    return frozen


def train_segmentation(run: SegmentationRun) -> dict[str, Any]:
    """Train ``run.model`` on Penn-Fudan's training split, evaluate on its val split."""
    if run.threads:
        torch.set_num_threads(run.threads)
    torch.manual_seed(run.seed)
    out = Path(run.out)
    kwargs = dict(run.model_kwargs)
    if run.backbone_weights:
        kwargs["backbone_weights"] = run.backbone_weights
    model = create_model(run.model, num_classes=2, **kwargs)
    normalise: Normalise = normalise_of(model)
    eval_size = run.eval_size or run.resolution
    augment = SegmentationAugment(
        run.resolution, normalise, scale=run.scale, seed=run.seed, short_side=eval_size
    )
    train = pennfudan(run.data, "train", augment)
    val = pennfudan(run.data, "val")
    loader = torch.utils.data.DataLoader(
        train, batch_size=run.batch_size, shuffle=True, drop_last=True,
        generator=torch.Generator().manual_seed(run.seed),
    )  # fmt: skip
    frozen = _freeze_early(model, run.freeze_stride)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(parameters, lr=run.lr, weight_decay=run.weight_decay)
    budget = run.minutes * 60.0
    log = out / "metrics.jsonl"
    if log.exists():
        log.unlink()
    start = time.monotonic()
    step, epoch, seen = 0, 0, 0
    done = False
    while not done:
        for images, targets in loader:
            elapsed = time.monotonic() - start
            if elapsed >= budget:
                done = True
                break
            lr = run.lr * (1 - elapsed / budget) ** 0.9
            for group in optimiser.param_groups:
                group["lr"] = lr
            model.train()
            for layer in frozen:
                layer.eval()  # frozen BatchNorm statistics too
            loss = segmentation_loss(model(images), targets)
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"the loss became {loss.item()} at step {step}")
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            step += 1
            seen += images.shape[0]
            record = {"step": step, "epoch": epoch, "seconds": round(time.monotonic() - start, 2),
                      "lr": lr, "loss": round(loss.item(), 5)}  # fmt: skip
            append_line(log, json.dumps(record))
        epoch += 1
    train_seconds = time.monotonic() - start
    weights = save_task_weights(
        model, out / "model.safetensors", run.model, {**run.model_kwargs, **kwargs}, train.classes, eval_size
    )
    evaluation_start = time.monotonic()
    result = evaluate_segmentation(model, val, eval_size, normalise)
    summary = {
        "run": asdict(run),
        "train_images": len(train),
        "val_images": len(val),
        "steps": step,
        "epochs": round(seen / max(1, len(train)), 2),
        "train_seconds": round(train_seconds, 1),
        "eval_seconds": round(time.monotonic() - evaluation_start, 1),
        "val": result.to_dict(),
        "weights": str(weights),
    }
    write_json(out / "summary.json", summary)
    return summary
