"""Dense prediction on the lightnets backbones: DeepLabv3 semantic segmentation.

Importing this package registers the task models (``deeplabv3_*``, family
``"deeplabv3"``) with the model registry, so ``create_model``, ``lightnets profile``
and the other commands take them like any model.
"""

from .atrous import dilate, truncate
from .deeplab import VOID, DeepLabV3, DeepLabV3Head, segmentation_loss

TASK_FAMILIES = ("deeplabv3",)

__all__ = [
    "TASK_FAMILIES",
    "VOID",
    "DeepLabV3",
    "DeepLabV3Head",
    "dilate",
    "segmentation_loss",
    "truncate",
]
