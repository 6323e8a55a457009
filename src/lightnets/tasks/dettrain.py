"""Training a detector: SSD's targets and loss in the task loop of :mod:`.task_training`.

The data is a Penn-Fudan folder (its train split; scored on its val split), a YOLO
folder or a COCO-JSON file (see :func:`.detdata.open_detection_data`), scored on
``options["val_data"]`` or, without one, on the training photos themselves (as is
customary for coco128: a check of the pipeline, not of accuracy). The detector gets one
output per class of the data and the background; every photo is augmented as SSD's
training does (:class:`.detdata.DetectionAugment`) and matched to the anchors of the
training side.
"""

from __future__ import annotations

import warnings
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn

from ..models.registry import get_entry
from ..zoo import create_model
from .detdata import DetectionAugment, DetectionData, collate_detection, open_detection_data
from .detect import evaluate_detection, model_anchors
from .multibox import match, multibox_loss
from .segdata import pennfudan_root
from .ssd import FAMILY, SSD
from .task_model import normalise_of
from .task_training import Task, TaskRun

DEFAULTS = {"resolution": 320, "batch_size": 16, "lr": 2e-3, "weight_decay": 1e-4}
# SSD zooms out up to 4x (MAX_ZOOM_OUT) to learn small objects over hundreds of thousands
# of steps; in a budget of minutes, exploratory 5-minute runs on Penn-Fudan (SSDLite
# MobileNetV2; `benchmarks/detect_pennfudan.py --minutes 5 --zoom-out 2` against the
# default) scored clearly lower with it, so it is off unless asked for.
DEFAULT_ZOOM_OUT = 1.0


class EvaluatedOnTrainingDataWarning(UserWarning):
    """A detection run without validation data is scored on its training photos."""


def _is_pennfudan(path: str) -> bool:
    try:
        pennfudan_root(path)
    except ValueError:
        return False
    return True


class DetectionTask(Task):
    """SSD / SSDLite on photos with boxes."""

    name = "detection"

    def __init__(self) -> None:
        super().__init__()
        self.anchors: torch.Tensor | None = None

    def check(self, run: TaskRun) -> None:
        if get_entry(run.model).family != FAMILY:
            raise ValueError(f"{run.model} is not a detector; --task detection trains ssd300_* and ssdlite_*")

    def build(self, run: TaskRun) -> tuple[nn.Module, DetectionData, DetectionData]:
        train = open_detection_data(run.data, "train")
        val_path = run.options.get("val_data")
        if val_path:
            val = open_detection_data(val_path, "val")
        elif _is_pennfudan(run.data):
            val = open_detection_data(run.data, "val")
        else:
            warnings.warn(
                f"no validation data: the run is scored on its training photos ({run.data})",
                EvaluatedOnTrainingDataWarning,
                stacklevel=2,
            )
            val = train
        if val.classes != train.classes:
            raise ValueError(
                f"the validation data's classes {val.classes} are not the training data's {train.classes}"
            )
        kwargs = dict(run.model_kwargs)
        if run.backbone_weights:
            kwargs["backbone_weights"] = run.backbone_weights
        model = create_model(run.model, num_classes=len(train.classes) + 1, **kwargs)
        assert isinstance(model, SSD)
        self.model_name, self.model_kwargs, self.classes = run.model, kwargs, train.classes
        self.input_size = run.resolution  # SSD trains and tests on the same square
        self.anchors = model_anchors(model, run.resolution)
        zoom_out = float(run.options.get("zoom_out", DEFAULT_ZOOM_OUT))
        train.transform = DetectionAugment(
            run.resolution, normalise_of(model), seed=run.seed, zoom_out=zoom_out
        )
        for data in (train, val):  # before the steps the budget plans from are timed
            data.decode_all()
        return model, train, val

    def collate(self, batch: list[Any]) -> Any:
        return collate_detection(batch)

    def loss(
        self, model: nn.Module, batch: Any, autocast: AbstractContextManager
    ) -> tuple[torch.Tensor, dict[str, float]]:
        images, boxes, classes = batch
        assert self.anchors is not None
        targets = [match(self.anchors, b, c) for b, c in zip(boxes, classes, strict=True)]
        labels = torch.stack([labels for labels, _ in targets])
        offsets = torch.stack([offsets for _, offsets in targets])
        with autocast:
            box_offsets, scores = model(images.contiguous(memory_format=torch.channels_last))
        return multibox_loss(box_offsets.float(), scores.float(), labels, offsets)

    def evaluate(self, model: nn.Module, data: Any) -> dict[str, Any]:
        assert isinstance(model, SSD)
        return evaluate_detection(model, data, self.input_size).to_dict()

    def score(self, scores: dict[str, Any]) -> float:
        return float(scores["mAP"])
