"""SSD's anchors (default boxes) and the box coder, as the papers' detectors use them.

The anchors are those of the TensorFlow Object Detection API's SSD configurations
(``ssd_anchor_generator``) that MobileNet v1's SSD300 and MobileNetV2's SSDLite were
trained with: on map ``k`` of ``m`` the scale ``s_k`` runs linearly from
:data:`MIN_SCALE` to :data:`MAX_SCALE`; each position of the first map has 3 anchors
(scale 0.1 at aspect ratio 1, and ``s_0`` at 2 and 1/2: the configurations'
``reduce_boxes_in_lowest_layer``), each position of the others 6 (``s_k`` at the
:data:`ASPECT_RATIOS`, and ``sqrt(s_k * s_{k+1})`` at ratio 1). An anchor of scale
``s`` and ratio ``r`` is ``s * sqrt(r)`` wide and ``s / sqrt(r)`` high, in units of the
image side, centred on its cell.

Boxes are ``(x1, y1, x2, y2)`` in units of the image side (0..1). The coder encodes a
box against its anchor as ``(10 dx / w_a, 10 dy / h_a, 5 log(w / w_a), 5 log(h / h_a))``
(``dx``, ``dy``: the centres' offset), the scaling of the configurations'
``faster_rcnn_box_coder``; the order here is x before y.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

MIN_SCALE = 0.2
MAX_SCALE = 0.95
LOWEST_SCALE = 0.1  # the first map's anchor of aspect ratio 1
ASPECT_RATIOS = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)
LOWEST_ASPECT_RATIOS = (1.0, 2.0, 0.5)
CODER_SCALES = (10.0, 10.0, 5.0, 5.0)  # x, y, width, height
# exp() of a width or height offset above this would overflow a float16 box; SSD decoders
# clamp here (log(1000 / 16), as torchvision's BoxCoder does).
MAX_LOG_SIZE = math.log(1000.0 / 16)


def anchors_per_position(maps: int) -> list[int]:
    """Anchors at each position of each of ``maps`` maps: 3 on the first, 6 on the others."""
    return [len(LOWEST_ASPECT_RATIOS)] + [len(ASPECT_RATIOS) + 1] * (maps - 1)


def anchor_shapes(maps: int) -> list[list[tuple[float, float]]]:
    """``(width, height)`` of each anchor of a position, map by map, in image units."""
    scales = [MIN_SCALE + (MAX_SCALE - MIN_SCALE) * k / max(1, maps - 1) for k in range(maps)] + [1.0]
    shapes = []
    for k in range(maps):
        if k == 0:
            pairs = [(LOWEST_SCALE, 1.0)] + [(scales[0], r) for r in LOWEST_ASPECT_RATIOS[1:]]
        else:
            pairs = [(scales[k], r) for r in ASPECT_RATIOS] + [(math.sqrt(scales[k] * scales[k + 1]), 1.0)]
        shapes.append([(s * math.sqrt(r), s / math.sqrt(r)) for s, r in pairs])
    return shapes


def ssd_anchors(map_sizes: list[tuple[int, int]]) -> Tensor:
    """The anchors of maps of ``(height, width)`` cells, ``(A, 4)`` as ``(x1, y1, x2, y2)``,
    in the order the predictors' outputs are flattened: map, row, column, anchor."""
    boxes = []
    for (height, width), shapes in zip(map_sizes, anchor_shapes(len(map_sizes)), strict=True):
        ys = (torch.arange(height, dtype=torch.float64) + 0.5) / height
        xs = (torch.arange(width, dtype=torch.float64) + 0.5) / width
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        wh = torch.tensor(shapes, dtype=torch.float64)  # (anchors, 2)
        centres = torch.stack([cx, cy], dim=-1).reshape(-1, 1, 2)  # (positions, 1, 2)
        half = wh.reshape(1, -1, 2) / 2
        boxes.append(torch.cat([centres - half, centres + half], dim=-1).reshape(-1, 4))
    return torch.cat(boxes).float()


def _centre_size(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    width, height = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + width / 2, boxes[..., 1] + height / 2, width, height


def encode(boxes: Tensor, anchors: Tensor) -> Tensor:
    """Offsets of ``boxes`` from ``anchors`` (both ``(..., 4)``, ``x1 y1 x2 y2``, positive size)."""
    x, y, w, h = _centre_size(boxes)
    xa, ya, wa, ha = _centre_size(anchors)
    sx, sy, sw, sh = CODER_SCALES
    return torch.stack(
        [sx * (x - xa) / wa, sy * (y - ya) / ha, sw * torch.log(w / wa), sh * torch.log(h / ha)], -1
    )


def decode(offsets: Tensor, anchors: Tensor) -> Tensor:
    """The boxes that :func:`encode` gave ``offsets`` for (``x1 y1 x2 y2``)."""
    xa, ya, wa, ha = _centre_size(anchors)
    sx, sy, sw, sh = CODER_SCALES
    x = offsets[..., 0] / sx * wa + xa
    y = offsets[..., 1] / sy * ha + ya
    w = torch.exp((offsets[..., 2] / sw).clamp(max=MAX_LOG_SIZE)) * wa
    h = torch.exp((offsets[..., 3] / sh).clamp(max=MAX_LOG_SIZE)) * ha
    return torch.stack([x - w / 2, y - h / 2, x + w / 2, y + h / 2], -1)
