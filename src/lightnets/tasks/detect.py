"""From a detector's raw outputs to detections: decoding, score threshold, per-class
non-maximum suppression, as the papers' SSD configurations post-process (IoU
:data:`NMS_IOU`, at most :data:`MAX_DETECTIONS` per image)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from ..data.images import load_image
from ..files import write_bytes
from .anchors import decode, ssd_anchors
from .boxes import batched_nms
from .detdata import DetectionData, DetectionResize
from .segment import PALETTE, png_bytes
from .ssd import SSD
from .task_model import class_names_of, input_size_of, normalise_of

if TYPE_CHECKING:
    from .average_precision import DetectionScores

NMS_IOU = 0.6
MAX_DETECTIONS = 100
CANDIDATES = 1000  # the highest scores kept before suppression, per image
SCORE_THRESHOLD = 0.01  # for evaluation (the mAP needs the low scores); drawing uses a higher one
DRAW_THRESHOLD = 0.5


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


def in_pixels(boxes: Tensor, size: tuple[int, int]) -> np.ndarray:
    """Boxes in units of a photo's sides as pixels of a photo of ``size`` (width, height)."""
    width, height = size
    return boxes.double().numpy() * np.array([width, height, width, height])


def model_anchors(model: SSD, size: int) -> Tensor:
    """The anchors of ``model`` (an :class:`~.ssd.SSD`) for ``size`` x ``size`` inputs.

    The map sizes come from a forward pass in evaluation mode (a training-mode
    BatchNorm refuses the 1 x 1 maps of a single image, and must not update its
    statistics on a blank one); the model's mode is restored."""
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            maps = model.feature_maps(torch.zeros(1, 3, size, size, device=next(model.parameters()).device))
    finally:
        model.train(training)
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
        for index in range(start, min(start + batch_size, len(data))):
            photo = data.photo(index)
            sizes.append(photo.size)
            images.append(resize(photo, np.zeros((0, 4)), np.zeros(0))[0])
        box_offsets, scores = model(torch.stack(images))
        found += postprocess(box_offsets, scores, anchors, score_threshold)
    return found, sizes


def evaluate_detection(model: SSD, data: DetectionData, size: int) -> DetectionScores:
    """COCO-style average precision of ``model`` on ``data`` at ``size`` x ``size``."""
    from .average_precision import coco_scores

    found, sizes = detect_photos(model, data, size)
    return coco_scores(data, found, sizes)


def draw_detections(
    photo: Image.Image, boxes: np.ndarray, labels: list[str], classes: list[int]
) -> Image.Image:
    """The photo with each box (pixels) outlined in its class's colour and labelled."""
    drawn = photo.copy()
    pen = ImageDraw.Draw(drawn)
    width = max(2, round(min(photo.size) / 200))
    for box, label, cls in zip(boxes.tolist(), labels, classes, strict=True):
        colour = tuple(int(c) for c in PALETTE[1 + cls % (len(PALETTE) - 1)])
        pen.rectangle(box, outline=colour, width=width)
        left, top = box[0], max(0.0, box[1] - 12)
        pen.rectangle(pen.textbbox((left, top), label), fill=colour)
        pen.text((left, top), label, fill=(255, 255, 255))
    return drawn


def detect_images(
    model: SSD,
    paths: Iterable[str | Path],
    out: str | Path,
    size: int | None = None,
    threshold: float = DRAW_THRESHOLD,
) -> list[dict[str, Any]]:
    """Detect objects in photos; ``<stem>_detections.png`` in ``out`` shows them.

    Returns one record per photo: the drawing and the detections as COCO-style
    results (``bbox`` as ``x y w h`` in pixels, ``category_id`` 0-based, ``score``).
    """
    model.eval()
    size = size or input_size_of(model, model.default_input_size)
    names = class_names_of(model, model.num_classes - 1)  # the background has no name
    resize = DetectionResize(size, normalise_of(model))
    anchors = model_anchors(model, size)
    records = []
    for path in paths:
        photo = load_image(path)
        image = resize(photo, np.zeros((0, 4)), np.zeros(0))[0]
        with torch.no_grad():
            box_offsets, scores = model(image[None])
        [found] = postprocess(box_offsets, scores, anchors, threshold)
        pixels = in_pixels(found.boxes, photo.size)
        classes = found.classes.tolist()
        labels = [f"{names[c]} {s:.2f}" for c, s in zip(classes, found.scores.tolist(), strict=True)]
        drawing = write_bytes(
            Path(out) / f"{Path(path).stem}_detections.png",
            png_bytes(draw_detections(photo, pixels, labels, classes)),
        )
        detections = [
            {"bbox": [round(x1, 1), round(y1, 1), round(x2 - x1, 1), round(y2 - y1, 1)],
             "category_id": c, "category": names[c], "score": round(s, 4)}
            for (x1, y1, x2, y2), c, s in zip(pixels.tolist(), classes, found.scores.tolist(), strict=True)
        ]  # fmt: skip
        records.append({"image": str(path), "drawing": str(drawing), "detections": detections})
    return records
