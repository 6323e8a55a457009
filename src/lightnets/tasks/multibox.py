"""SSD's training targets and loss: anchor matching and the multibox loss with hard
negative mining (Liu et al., 2016, Section 2.2).

**Matching** (the papers' configurations' ``argmax_matcher``): each anchor takes the
ground-truth box it overlaps most and is positive when that IoU is at least
:data:`MATCH_IOU`; every ground-truth box is also given the anchor that overlaps it
most, whatever the IoU, so no object goes unlearned. Labels: 0 the background, ``k + 1``
the dataset's class ``k``.

**Loss**: smooth L1 on the encoded offsets of the positive anchors, plus softmax
cross-entropy on the positives and the hardest negatives (the negatives with the
highest loss, :data:`NEGATIVES_PER_POSITIVE` per positive of the image, at least
:data:`MIN_NEGATIVES` in every image so a photo without objects still teaches the
background), both summed and divided by the number of positives in the batch.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from .anchors import encode
from .boxes import box_iou

MATCH_IOU = 0.5
NEGATIVES_PER_POSITIVE = 3
MIN_NEGATIVES = 3
BACKGROUND = 0


def match(anchors: Tensor, boxes: Tensor, classes: Tensor) -> tuple[Tensor, Tensor]:
    """Targets of one image: the label of every anchor ``(A,)`` and its box offsets
    ``(A, 4)`` (zeros where the anchor is background), for ground-truth ``boxes``
    ``(G, 4)`` of dataset ``classes`` ``(G,)`` (0-based)."""
    labels = torch.full((len(anchors),), BACKGROUND, dtype=torch.long, device=anchors.device)
    offsets = torch.zeros(len(anchors), 4, dtype=anchors.dtype, device=anchors.device)
    if len(boxes) == 0:
        return labels, offsets
    iou = box_iou(boxes, anchors)  # (G, A)
    best_iou, best_box = iou.max(dim=0)
    forced = iou.argmax(dim=1)  # each box's best anchor
    best_box[forced] = torch.arange(len(boxes), device=boxes.device)
    best_iou[forced] = 1.0
    positive = best_iou >= MATCH_IOU
    labels[positive] = classes[best_box[positive]].long() + 1
    offsets[positive] = encode(boxes[best_box[positive]], anchors[positive])
    return labels, offsets


def multibox_loss(
    box_offsets: Tensor, scores: Tensor, labels: Tensor, target_offsets: Tensor
) -> tuple[Tensor, dict[str, float]]:
    """The loss of a batch: predictions ``(N, A, 4)`` and ``(N, A, C)``, targets from
    :func:`match` stacked to ``(N, A)`` and ``(N, A, 4)``. Returns the loss and its two
    terms (as numbers, for the log)."""
    positive = labels != BACKGROUND
    positives = positive.sum().clamp(min=1)
    box_loss = F.smooth_l1_loss(box_offsets[positive], target_offsets[positive], reduction="sum", beta=1.0)
    per_anchor = F.cross_entropy(scores.flatten(0, 1).float(), labels.flatten(), reduction="none").view(
        labels.shape
    )
    # The hardest negatives of each image: rank the negatives by their loss.
    negative_loss = per_anchor.detach().masked_fill(positive, -1.0)
    rank = negative_loss.argsort(dim=1, descending=True).argsort(dim=1)
    wanted = (positive.sum(dim=1) * NEGATIVES_PER_POSITIVE).clamp(min=MIN_NEGATIVES)
    negative = (rank < wanted[:, None]) & ~positive
    class_loss = per_anchor[positive | negative].sum()
    loss = (box_loss + class_loss) / positives
    terms = {
        "box_loss": float(box_loss.detach() / positives),
        "class_loss": float(class_loss.detach() / positives),
    }
    return loss, terms
