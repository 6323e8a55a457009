"""From a detector's raw outputs to detections: decoding, score threshold, per-class
non-maximum suppression, as the papers' SSD configurations post-process (IoU
:data:`NMS_IOU`, at most :data:`MAX_DETECTIONS` per image)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .anchors import decode
from .boxes import batched_nms

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
