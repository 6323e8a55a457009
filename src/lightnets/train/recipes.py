"""Training recipes: the optimiser, its parameter groups and the learning-rate schedule.

Two families of recipe:

* ``paper``: the MobileNet papers' ImageNet recipe (MobileNetV2, Section 6.1; TF-slim):
  RMSprop with decay 0.9 and momentum 0.9 (TensorFlow's variant, :mod:`.rmsprop_tf`),
  learning rate 0.045 decaying by 0.98 every epoch, weight decay 4e-5.
* ``sgd`` and ``adamw``: a modern recipe: SGD with Nesterov momentum (or AdamW),
  linear warm-up then cosine decay to zero, label smoothing 0.1 and an EMA of the
  weights. The SGD learning rate follows the linear scaling rule (0.1 per 256 images).

In every recipe, depthwise filters, BatchNorm parameters and biases get no weight decay:
depthwise filters have so few parameters that decaying them hurts (MobileNet v1,
Section 3.2), and decaying BatchNorm scales or biases only fights the normalisation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .rmsprop_tf import RMSpropTF

RECIPES = ("paper", "sgd", "adamw")


@dataclass(frozen=True)
class RecipeDefaults:
    """What a recipe sets when the user does not."""

    optimizer: str
    lr_per_256: float | None  # learning rate scaled with the batch (linear scaling rule)
    lr: float | None  # a fixed learning rate, whatever the batch
    weight_decay: float
    schedule: str
    warmup_epochs: float
    label_smoothing: float
    ema_decay: float  # 0: no EMA


DEFAULTS = {
    # lr 0.045 is the papers' (for their per-GPU batch of 96); 0.98 per epoch.
    "paper": RecipeDefaults("rmsprop", None, 0.045, 4e-5, "exponential", 0.0, 0.0, 0.0),
    "sgd": RecipeDefaults("sgd", 0.1, None, 4e-5, "cosine", 1.0, 0.1, 0.9998),
    "adamw": RecipeDefaults("adamw", None, 2e-3, 0.05, "cosine", 1.0, 0.1, 0.9998),
}


def recipe_defaults(recipe: str, batch_size: int) -> dict:
    """The optimiser settings of ``recipe`` for a global batch of ``batch_size``."""
    if recipe not in DEFAULTS:
        raise ValueError(f"unknown recipe {recipe!r}; expected one of {RECIPES}")
    d = DEFAULTS[recipe]
    lr = d.lr if d.lr is not None else d.lr_per_256 * batch_size / 256  # type: ignore[operator]
    return {
        "optimizer": d.optimizer,
        "lr": lr,
        "weight_decay": d.weight_decay,
        "schedule": d.schedule,
        "warmup_epochs": d.warmup_epochs,
        "label_smoothing": d.label_smoothing,
        "ema_decay": d.ema_decay,
    }


def is_depthwise(module: nn.Module) -> bool:
    """A convolution with one filter group per input channel."""
    return isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels


def parameter_groups(
    model: nn.Module, weight_decay: float, backbone_lr_scale: float = 1.0, head: str = "head"
) -> list[dict]:
    """Trainable parameters split by weight decay (none on depthwise filters, BatchNorm and
    biases) and by learning rate (``backbone_lr_scale`` for all but the ``head`` module,
    for fine-tuning). Each group carries ``lr_scale``, which the schedule multiplies in.
    """
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            full = f"{module_name}.{name}" if module_name else name
            no_decay = (
                param.ndim <= 1 or is_depthwise(module) or isinstance(module, nn.modules.batchnorm._NormBase)
            )
            in_head = full == head or full.startswith(head + ".")
            groups.setdefault((not no_decay, in_head), []).append(param)
    result = []
    for (decay, in_head), params in sorted(groups.items()):
        result.append(
            {
                "params": params,
                "weight_decay": weight_decay if decay else 0.0,
                "lr_scale": 1.0 if in_head else backbone_lr_scale,
                "name": f"{'head' if in_head else 'backbone'}/{'decay' if decay else 'no_decay'}",
            }
        )
    if not result:
        raise ValueError("the model has no trainable parameters")
    return result


def build_optimizer(
    name: str, groups: list[dict], lr: float, momentum: float | None = None
) -> torch.optim.Optimizer:
    """``rmsprop`` (TensorFlow's), ``sgd`` (Nesterov) or ``adamw`` over ``groups``."""
    if name == "rmsprop":
        return RMSpropTF(groups, lr=lr, decay=0.9, momentum=0.9 if momentum is None else momentum)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9 if momentum is None else momentum, nesterov=True)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}; expected rmsprop, sgd or adamw")


@dataclass
class LRSchedule:
    """The learning rate at every step: a function of the step alone.

    ``exponential``: ``lr * decay_rate ** floor(epoch)`` (the papers' 0.98 per epoch);
    ``cosine``: half a cosine from ``lr`` to ``min_lr`` over the run; ``constant``.
    Either after a linear warm-up of ``warmup_epochs`` from ``lr / 100``. Having no
    state but the step, it resumes exactly.
    """

    lr: float
    steps_per_epoch: int
    epochs: int
    kind: str = "cosine"
    warmup_epochs: float = 0.0
    decay_rate: float = 0.98
    min_lr: float = 0.0
    step: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("cosine", "exponential", "constant"):
            raise ValueError(f"unknown schedule {self.kind!r}; expected cosine, exponential or constant")
        if self.steps_per_epoch <= 0 or self.epochs <= 0:
            raise ValueError("a schedule needs at least one epoch of at least one step")

    def lr_at(self, step: int) -> float:
        total = self.steps_per_epoch * self.epochs
        warmup = round(self.warmup_epochs * self.steps_per_epoch)
        if step < warmup:
            start = self.lr / 100
            return start + (self.lr - start) * step / warmup
        if self.kind == "constant":
            return self.lr
        if self.kind == "exponential":
            return self.lr * self.decay_rate ** (step // self.steps_per_epoch)
        progress = (step - warmup) / max(1, total - warmup)
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    def apply(self, optimizer: torch.optim.Optimizer) -> float:
        """Set every group's learning rate for the current step; returns the base rate."""
        lr = self.lr_at(self.step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def advance(self) -> None:
        self.step += 1

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)
