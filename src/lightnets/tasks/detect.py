"""From a detector's raw outputs to detections: decoding, score threshold, per-class
non-maximum suppression, as the papers' SSD configurations post-process (IoU
:data:`NMS_IOU`, at most :data:`MAX_DETECTIONS` per image)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..data.images import load_image
from .anchors import decode, ssd_anchors
from .boxes import batched_nms
from .detdata import DetectionData, DetectionResize
from .segment import normalise_of
from .ssd import SSD

if TYPE_CHECKING:
    from .average_precision import DetectionScores

NMS_IOU = 0.6
MAX_DETECTIONS = 100
CANDIDATES = 1000  # the highest scores kept before suppression, per image
SCORE_THRESHOLD = 0.01  # for evaluation (the mAP needs the low scores); drawing uses a higher one


@dataclass
class Detections:
    """One image's detections: boxes ``(D, 4)`` ``x1 y1 x2 y2`` in units of the image
    side, scores ``(D,)`` and 0-based dataset classes ``(D,)``, highest score first."""

    boxes: Tensor
    scores: Tensor
    classes: Tensor

    def __len__(self) -> int:
        return len(self.scores)


@torch.no_grad()
def postprocess(
    box_offsets: Tensor,
    scores: Tensor,
    anchors: Tensor,
    score_threshold: float = SCORE_THRESHOLD,
    iou_threshold: float = NMS_IOU,
    max_detections: int = MAX_DETECTIONS,
) -> list[Detections]:
    """Detections of each image of a batch of raw outputs ``(N, A, 4)``, ``(N, A, C)``."""
    boxes = decode(box_offsets.float(), anchors).clamp(0.0, 1.0)
    probabilities = scores.float().softmax(dim=-1)[..., 1:]  # the background's column dropped
    classes = probabilities.shape[-1]
    results = []
    for image_boxes, image_probabilities in zip(boxes, probabilities, strict=True):
        flat = image_probabilities.flatten()
        top = flat.topk(min(CANDIDATES, flat.numel())).indices
        top = top[flat[top] > score_threshold]
        anchor, label = top // classes, top % classes
        keep = batched_nms(image_boxes[anchor], flat[top], label, iou_threshold)[:max_detections]
        results.append(Detections(image_boxes[anchor[keep]], flat[top[keep]], label[keep]))
    return results


def model_anchors(model: SSD, size: int) -> Tensor:
    """The anchors of ``model`` (an :class:`~.ssd.SSD`) for ``size`` x ``size`` inputs."""
    with torch.no_grad():
        maps = model.feature_maps(torch.zeros(1, 3, size, size, device=next(model.parameters()).device))
    return ssd_anchors([(int(m.shape[-2]), int(m.shape[-1])) for m in maps])


@torch.no_grad()
def detect_photos(
    model: SSD,
    data: DetectionData,
    size: int,
    score_threshold: float = SCORE_THRESHOLD,
    batch_size: int = 8,
) -> tuple[list[Detections], list[tuple[int, int]]]:
    """Detections of every photo of ``data`` (resized to ``size`` x ``size``) and the
    photos' ``(width, height)``."""
    model.eval()
    resize = DetectionResize(size, normalise_of(model))
    anchors = model_anchors(model, size)
    found: list[Detections] = []
    sizes: list[tuple[int, int]] = []
    for start in range(0, len(data), batch_size):
        images = []
        for item in data.items[start : start + batch_size]:
            photo = load_image(item.image)
            sizes.append(photo.size)
            images.append(resize(photo, item.boxes, item.classes)[0])
        box_offsets, scores = model(torch.stack(images))
        found += postprocess(box_offsets, scores, anchors, score_threshold)
    return found, sizes


def evaluate_detection(model: SSD, data: DetectionData, size: int) -> DetectionScores:
    """COCO-style average precision of ``model`` on ``data`` at ``size`` x ``size``."""
    from .average_precision import coco_scores

    found, sizes = detect_photos(model, data, size)
    return coco_scores(data, found, sizes)
