"""Costs of task models: totals per part (backbone, head) and Table 7's counting.

MobileNetV2's Table 7 counts DeepLabv3 as the official TensorFlow code runs it, which
differs from :func:`lightnets.profile` in two ways, both measured and written down:

* **parameters** are TensorFlow's trainable variables: the weights and biases of the
  convolutions *and* BatchNorm's gamma and beta (``params + bn_params`` of a report).
  lightnets counts BatchNorm apart, as the classification tables of the papers do;
* **multiply-adds** are at DeepLab's 513x513 crop (a 33x33 map at output stride 16,
  where the table's "512x512" gives 32x32), and TensorFlow 1 ran every atrous
  convolution through ``space_to_batch``: the input is padded by ``(k - 1) * rate``,
  rounded up to a multiple of ``rate``, split into ``rate**2`` blocks, and each block
  convolved without padding. The convolution then computes ``rate * (ceil((n + (k - 1)
  * rate) / rate) - k + 1)`` positions per side instead of ``n``: 36 instead of 33 for
  the ASPP rates 6, 12 and 18, 19 % more multiply-adds in the three ASPP branches.
  :func:`tf_atrous_madds` gives the count with that grid.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..cost import CostReport


@dataclass
class PartCost:
    """Totals of the layers of one top-level child (``backbone``, ``head``)."""

    part: str
    params: int
    bn_params: int
    madds: int


def cost_by_part(report: CostReport, model: nn.Module) -> list[PartCost]:
    """Totals per part named in ``model.cost_parts`` (``[]`` for a model without parts)."""
    parts: tuple[str, ...] = tuple(getattr(model, "cost_parts", ()))
    rows = []
    for part in parts:
        child = model.get_submodule(part)
        bn = sum(
            p.numel()
            for m in child.modules()
            if isinstance(m, nn.modules.batchnorm._NormBase)
            for p in m.parameters(recurse=False)
        )
        total = sum(p.numel() for p in child.parameters())
        madds = sum(layer.madds for layer in report.layers if layer.name.startswith(part + "."))
        rows.append(PartCost(part, total - bn, bn, madds))
    return rows


def tf_atrous_positions(size: int, kernel: int, rate: int) -> int:
    """Output positions per side of a "SAME" atrous convolution run via ``space_to_batch``."""
    if rate == 1 or kernel == 1:
        return size
    blocks = -(-(size + (kernel - 1) * rate) // rate)
    return rate * (blocks - kernel + 1)


def tf_atrous_madds(model: nn.Module, report: CostReport) -> int:
    """``report.madds`` with every atrous convolution counted on TensorFlow's padded grid."""
    extra = 0
    layers = {layer.name: layer for layer in report.layers}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Conv2d) or module.dilation == (1, 1) or name not in layers:
            continue
        _, height, width = layers[name].output_shape
        kernel_h, kernel_w = module.kernel_size
        grid = tf_atrous_positions(height, kernel_h, module.dilation[0]) * tf_atrous_positions(
            width, kernel_w, module.dilation[1]
        )
        per_position = module.out_channels * module.in_channels // module.groups * kernel_h * kernel_w
        extra += (grid - height * width) * per_position
    return report.madds + extra
