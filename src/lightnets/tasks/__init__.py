"""Dense prediction on the lightnets backbones: DeepLabv3 semantic segmentation, SSD and
SSDLite detection.

Importing this package registers the task models (``deeplabv3_*``, family
``"deeplabv3"``; ``ssd300_*`` and ``ssdlite_*``, family ``"ssd"``) with the model registry, so ``create_model``, ``lightnets profile``
and the other commands take them like any model.
"""

from .atrous import dilate, truncate
from .deeplab import VOID, DeepLabV3, DeepLabV3Head, segmentation_loss
from .ssd import SSD, SSDHead

TASK_FAMILIES = ("deeplabv3", "ssd")

__all__ = [
    "TASK_FAMILIES",
    "VOID",
    "DeepLabV3",
    "DeepLabV3Head",
    "SSD",
    "SSDHead",
    "dilate",
    "segmentation_loss",
    "truncate",
]
