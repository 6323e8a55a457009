"""Training a segmentation model: DeepLabv3 on Penn-Fudan in the task loop of :mod:`.task_training`.

The cross-entropy that ignores the void label, on the joint augmentation of
:mod:`.segdata`: the photos' shorter side scaled to the evaluation size times a factor
drawn from ``options["scale"]``, then a ``resolution`` crop, so the network trains on
crops of photos at the scale it is evaluated at (``options["eval_size"]``, default
``resolution``). Scored by IoU on Penn-Fudan's val split, at each photo's full size.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn

from ..models.registry import get_entry
from ..zoo import create_model
from .deeplab import FAMILY, segmentation_loss
from .segdata import SegmentationAugment, SegmentationData, pennfudan
from .segment import evaluate_segmentation
from .task_model import normalise_of
from .task_training import Task, TaskRun

DEFAULTS = {"resolution": 224, "batch_size": 8, "lr": 1e-3, "weight_decay": 1e-4}
DEFAULT_SCALE = (0.75, 1.5)


class SegmentationTask(Task):
    """DeepLabv3 on Penn-Fudan's person / background."""

    name = "segmentation"

    def check(self, run: TaskRun) -> None:
        if get_entry(run.model).family != FAMILY:
            raise ValueError(
                f"{run.model} is not a segmentation model; --task segmentation trains deeplabv3_*"
            )
        eval_size, scale = self._settings(run)
        if eval_size < 16 or not 0 < scale[0] <= scale[1]:
            raise ValueError(
                f"invalid segmentation run: eval size {eval_size} (need >= 16 px), scale {scale} (need 0 < low <= high)"
            )

    @staticmethod
    def _settings(run: TaskRun) -> tuple[int, tuple[float, float]]:
        low, high = run.options.get("scale") or DEFAULT_SCALE
        return int(run.options.get("eval_size") or run.resolution), (low, high)

    def build(self, run: TaskRun) -> tuple[nn.Module, SegmentationData, SegmentationData]:
        eval_size, scale = self._settings(run)
        kwargs = dict(run.model_kwargs)
        if run.backbone_weights:
            kwargs["backbone_weights"] = run.backbone_weights
        model = create_model(run.model, num_classes=2, **kwargs)
        augment = SegmentationAugment(
            run.resolution, normalise_of(model), scale=scale, seed=run.seed, short_side=eval_size
        )
        train = pennfudan(run.data, "train", augment)
        self.input_size, self.model_name, self.model_kwargs, self.classes = (
            eval_size,
            run.model,
            kwargs,
            train.classes,
        )
        return model, train, pennfudan(run.data, "val")

    def collate(self, batch: list[Any]) -> Any:
        return torch.utils.data.default_collate(batch)

    def loss(
        self, model: nn.Module, batch: Any, autocast: AbstractContextManager
    ) -> tuple[torch.Tensor, dict[str, float]]:
        images, targets = batch
        with autocast:
            scores = model(images.contiguous(memory_format=torch.channels_last))
        return segmentation_loss(scores.float(), targets), {}

    def evaluate(self, model: nn.Module, data: Any) -> dict[str, Any]:
        return evaluate_segmentation(model, data, self.input_size).to_dict()

    def score(self, scores: dict[str, Any]) -> float:
        return float(scores["miou"])
