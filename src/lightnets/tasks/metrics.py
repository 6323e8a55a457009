"""Segmentation metrics: a confusion matrix, per-class IoU and mIoU.

IoU of class c = true positives / (true positives + false positives + false
negatives), over all pixels of all images (PASCAL VOC's definition: the dataset's
pixels pooled, not a mean of per-image IoUs); pixels labelled void are left out. mIoU
is the mean over the classes that occur in the labels or the predictions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .segdata import VOID


@dataclass
class ConfusionMatrix:
    """Pixel counts ``matrix[label, prediction]``, accumulated with :meth:`update`."""

    num_classes: int
    matrix: Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    def update(self, prediction: Tensor, label: Tensor, ignore_index: int = VOID) -> None:
        """Add one batch: ``prediction`` and ``label`` of the same shape, class indices."""
        if prediction.shape != label.shape:
            raise ValueError(
                f"prediction {tuple(prediction.shape)} and label {tuple(label.shape)} differ in shape"
            )
        keep = label != ignore_index
        label, prediction = label[keep].long(), prediction[keep].long()
        if label.numel() and (label.max() >= self.num_classes or label.min() < 0):
            raise ValueError(f"labels outside 0..{self.num_classes - 1} (and the void {ignore_index})")
        index = label * self.num_classes + prediction
        self.matrix += torch.bincount(index, minlength=self.num_classes**2).reshape(self.num_classes, -1)

    def iou(self) -> list[float]:
        """IoU per class (NaN for a class absent from both labels and predictions)."""
        tp = self.matrix.diag().double()
        union = self.matrix.sum(0).double() + self.matrix.sum(1).double() - tp
        return [float(t / u) if u > 0 else float("nan") for t, u in zip(tp, union, strict=True)]

    def miou(self) -> float:
        present = [v for v in self.iou() if v == v]
        return sum(present) / len(present) if present else float("nan")

    def pixel_accuracy(self) -> float:
        total = int(self.matrix.sum())
        return float(self.matrix.diag().sum()) / total if total else float("nan")
