"""Using a segmentation model: predict masks, evaluate IoU, write overlays and mask PNGs."""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from ..data.images import load_image
from ..files import write_bytes
from .metrics import ConfusionMatrix
from .segdata import Normalise, SegmentationData, resize_pair
from .task_model import class_names_of, input_size_of, normalise_of

# Colours of the overlay, class by class (background left clear).
PALETTE = np.array(
    [(0, 0, 0), (255, 40, 40), (40, 200, 40), (40, 80, 255), (255, 200, 0), (200, 0, 200), (0, 200, 200)],
    dtype=np.uint8,
)


@torch.no_grad()
def predict_classes(model: nn.Module, photo: np.ndarray, size: int, normalise: Normalise) -> np.ndarray:
    """Class per pixel of ``photo`` (H, W, 3 uint8), run with its shorter side at ``size``."""
    resized, _ = resize_pair(photo, None, size)
    scores = model(normalise(resized)[None])
    scores = F.interpolate(scores, size=photo.shape[:2], mode="bilinear", align_corners=False)
    return scores.argmax(1)[0].to(torch.uint8).numpy()


@dataclass
class SegmentationResult:
    """IoU per class and mIoU over a dataset, at one input size."""

    classes: list[str]
    iou: list[float]
    miou: float
    pixel_accuracy: float
    images: int
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "size": self.size,
            "miou": self.miou,
            "pixel_accuracy": self.pixel_accuracy,
            "iou": dict(zip(self.classes, self.iou, strict=True)),
        }


@torch.no_grad()
def evaluate_segmentation(
    model: nn.Module, data: SegmentationData, size: int, normalise: Normalise | None = None
) -> SegmentationResult:
    """Per-class IoU and mIoU of ``model`` on ``data``, scored at each photo's full size."""
    normalise = normalise or normalise_of(model)
    was_training = model.training
    model.eval()
    confusion = ConfusionMatrix(len(data.classes))
    for index in range(len(data)):
        photo, classes = data.arrays(index)
        predicted = predict_classes(model, photo, size, normalise)
        confusion.update(torch.from_numpy(predicted), torch.from_numpy(classes))
    model.train(was_training)
    return SegmentationResult(
        list(data.classes), confusion.iou(), confusion.miou(), confusion.pixel_accuracy(), len(data), size
    )


def png_bytes(image: Image.Image) -> bytes:
    """``image`` encoded as a PNG file."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def overlay(photo: np.ndarray, classes: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """The photo with each non-background class tinted in its palette colour."""
    colours = PALETTE[classes % len(PALETTE)].astype(np.float32)
    tinted = photo.astype(np.float32) * (1 - alpha) + colours * alpha
    out = np.where((classes > 0)[..., None], tinted, photo.astype(np.float32))
    return Image.fromarray(out.round().clip(0, 255).astype(np.uint8))


def segment_images(
    model: nn.Module, paths: Iterable[str | Path], out: str | Path, size: int | None = None
) -> list[dict[str, Any]]:
    """Segment photos: ``<stem>_overlay.png`` and ``<stem>_mask.png`` (class indices) in ``out``.

    Returns one record per photo: the files written and the share of pixels per class.
    """
    model.eval()
    size = size or input_size_of(model)
    normalise = normalise_of(model)
    names = class_names_of(model)
    folder = Path(out)
    records = []
    for path in paths:
        photo = np.asarray(load_image(path), dtype=np.uint8)
        classes = predict_classes(model, photo, size, normalise)
        stem = Path(path).stem
        mask_path = write_bytes(folder / f"{stem}_mask.png", png_bytes(Image.fromarray(classes, mode="L")))
        overlay_path = write_bytes(folder / f"{stem}_overlay.png", png_bytes(overlay(photo, classes)))
        counts = np.bincount(classes.reshape(-1), minlength=len(names)) / classes.size
        records.append(
            {
                "image": str(path),
                "mask": str(mask_path),
                "overlay": str(overlay_path),
                "share": {name: round(float(c), 4) for name, c in zip(names, counts, strict=False)},
            }
        )
    return records
