"""Training: from scratch, fine-tuning and distillation, on one process or many.

``train(TrainConfig(...))`` runs a training; ``lightnets train`` and
``torchrun -m lightnets.train`` are its command line. See :mod:`.trainer` for why runs
resume exactly and why N processes match one.
"""

from .config import TrainConfig
from .distill import TeacherCache, distillation_loss
from .ema import ModelEMA
from .recipes import LRSchedule, parameter_groups
from .rmsprop_tf import RMSpropTF
from .trainer import SkippedImageWarning, TrainResult, train

__all__ = [
    "LRSchedule",
    "ModelEMA",
    "RMSpropTF",
    "SkippedImageWarning",
    "TeacherCache",
    "TrainConfig",
    "TrainResult",
    "distillation_loss",
    "parameter_groups",
    "train",
]
