"""COCO-style average precision of detections, computed by pycocotools (the COCO
project's own evaluator): mAP@[.5:.95], AP@0.5 and AP@0.75, and AP@[.5:.95] per class.

The ground truth and the detections are handed to it in memory, boxes in pixels of
each photo, so any :class:`~.detdata.DetectionData` is scored the way COCO's
leaderboard scores (101-point interpolated precision, at most 100 detections per
photo, areas from the boxes).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .detdata import DetectionData
from .detect import Detections, in_pixels


@dataclass
class DetectionScores:
    """COCO-style scores (fractions in 0..1; -1 where a class has no ground truth)."""

    map: float  # AP@[.5:.95]
    ap50: float
    ap75: float
    per_class: dict[str, float]
    images: int
    objects: int

    def to_dict(self) -> dict:
        return {
            "mAP": self.map,
            "AP50": self.ap50,
            "AP75": self.ap75,
            "per_class_AP": self.per_class,
            "images": self.images,
            "objects": self.objects,
        }


def _xywh(boxes: np.ndarray) -> list[list[float]]:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).tolist()


def coco_scores(
    data: DetectionData, detections: Sequence[Detections], sizes: Sequence[tuple[int, int]]
) -> DetectionScores:
    """Score ``detections`` (boxes in units of the photo's sides) against ``data``'s
    boxes; ``sizes`` are the photos' ``(width, height)``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not len(detections) == len(sizes) == len(data):
        raise ValueError(f"{len(detections)} detections and {len(sizes)} sizes for {len(data)} photos")
    images: list[dict] = []
    truths: list[dict] = []
    found: list[dict] = []
    for key, (item, result, (width, height)) in enumerate(zip(data.items, detections, sizes, strict=True)):
        images.append({"id": key, "width": width, "height": height, "file_name": item.image.name})
        for box, label in zip(_xywh(item.boxes), item.classes.tolist(), strict=True):
            truths.append({"id": len(truths) + 1, "image_id": key, "category_id": label, "bbox": box,
                           "area": box[2] * box[3], "iscrowd": 0})  # fmt: skip
        pixels = in_pixels(result.boxes, (width, height))
        for box, score, label in zip(
            _xywh(pixels), result.scores.tolist(), result.classes.tolist(), strict=True
        ):
            found.append({"image_id": key, "category_id": label, "bbox": box, "score": score})
    truth = COCO()
    truth.dataset = {
        "images": images,
        "annotations": truths,
        "categories": [{"id": k, "name": name} for k, name in enumerate(data.classes)],
    }
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        truth.createIndex()
        predicted = truth.loadRes(found) if found else COCO()
        evaluator = COCOeval(truth, predicted, "bbox")
        if not found:
            predicted.dataset = {
                "images": images,
                "annotations": [],
                "categories": truth.dataset["categories"],
            }
            predicted.createIndex()
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    precision = evaluator.eval["precision"]  # (iou, recall, class, area, max detections)
    per_class = {}
    for k, name in enumerate(data.classes):
        values = precision[:, :, k, 0, -1]
        values = values[values > -1]
        per_class[name] = float(values.mean()) if values.size else -1.0
    stats = evaluator.stats
    return DetectionScores(
        float(stats[0]), float(stats[1]), float(stats[2]), per_class, len(data), len(truths)
    )
