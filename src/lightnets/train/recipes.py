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
from typing import Any

import numpy as np
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


# What the recipes change for a network without normalisation layers trained from scratch
# (SqueezeNet): nothing rescales its activations, so the learning rate that suits a
# BatchNorm network tips its ReLUs off (at 0.1 per 256 images, SqueezeNet 1.1's class
# scores go to zero for some images within 100 steps; at 0.04 they do not). The SqueezeNet
# release trained with SGD from lr 0.04 at a batch of 512 (0.02 per 256 images); the
# recipe takes 0.04 per 256 (0.4 x the sgd recipe's), reached over a longer warm-up, with
# the gradient norm clipped as a guard.
NORM_FREE = {"lr_scale": 0.4, "warmup_epochs": 2.0, "clip_grad": 5.0}


def norm_free_settings(recipe: str, batch_size: int) -> dict:
    """The recipe's learning rate, warm-up and clipping for a network without
    normalisation layers trained from scratch."""
    d = recipe_defaults(recipe, batch_size)
    return {
        "lr": d["lr"] * NORM_FREE["lr_scale"],
        "warmup_epochs": max(d["warmup_epochs"], NORM_FREE["warmup_epochs"]),
        "clip_grad": NORM_FREE["clip_grad"],
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
    name: str, groups: list[dict], lr: float, momentum: float | None = None, fused: bool = False
) -> torch.optim.Optimizer:
    """``rmsprop`` (TensorFlow's), ``sgd`` (Nesterov) or ``adamw`` over ``groups``.

    ``fused``: SGD and AdamW update every parameter of a group in one kernel (CPU and
    CUDA), instead of a loop of small operations per parameter tensor.
    """
    speed: dict[str, Any] = {"fused": True} if fused else {"foreach": True}
    if name == "rmsprop":
        return RMSpropTF(groups, lr=lr, decay=0.9, momentum=0.9 if momentum is None else momentum)
    if name == "sgd":
        return torch.optim.SGD(
            groups, lr=lr, momentum=0.9 if momentum is None else momentum, nesterov=True, **speed
        )
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, **speed)
    raise ValueError(f"unknown optimizer {name!r}; expected rmsprop, sgd or adamw")


SCHEDULES = ("cosine", "onecycle", "exponential", "constant")
# One-cycle (Smith and Topin, 2019), with the defaults of PyTorch's OneCycleLR: the rate rises
# from lr / 25 to lr over the first 30 % of the run and falls to lr / 25 / 1e4 over the rest,
# both on half cosines, while the momentum moves the other way, 0.95 -> 0.85 -> 0.95.
# (OneCycleLR itself fixes the run's length when it is made; a budgeted run plans it again
# while running, so the schedule here is a function of the step and the current length.)
ONE_CYCLE_RISE = 0.3
ONE_CYCLE_START_DIV = 25.0
ONE_CYCLE_END_DIV = 1e4
ONE_CYCLE_MOMENTUM = (0.95, 0.85)


def _half_cosine(start: float, end: float, fraction: float) -> float:
    """From ``start`` at 0 to ``end`` at 1 on half a cosine."""
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * min(max(fraction, 0.0), 1.0)))


@dataclass
class LRSchedule:
    """The learning rate at every step: a function of the step alone.

    ``exponential``: ``lr * decay_rate ** floor(epoch)`` (the papers' 0.98 per epoch);
    ``cosine``: half a cosine from ``lr`` to ``min_lr`` over the run; ``constant``.
    Either after a linear warm-up of ``warmup_epochs`` from ``lr / 100``. ``onecycle``
    instead rises over the first :data:`ONE_CYCLE_RISE` of the run (its warm-up, whatever
    ``warmup_epochs`` says) and cycles the momentum (:meth:`momentum_at`). Having no
    state but the step, it resumes exactly.

    ``total_steps`` (0: ``epochs`` whole epochs) sets the run's length in steps, as a
    time budget plans it. The first ``probe_steps`` of such a run are taken before its
    length is known (they measure the throughput), on the warm-up line of
    ``warmup_epochs``; when the run turns out too short for that warm-up, the warm-up
    ends after ``warmup_fraction`` of the run instead, reaching the peak on a straight
    line from where the probe left it.
    """

    lr: float
    steps_per_epoch: int
    epochs: int
    kind: str = "cosine"
    warmup_epochs: float = 0.0
    decay_rate: float = 0.98
    min_lr: float = 0.0
    step: int = 0
    total_steps: int = 0
    probe_steps: int = 0
    warmup_fraction: float = 0.2
    # Set when a budgeted run plans its length again after its warm-up: the warm-up it had
    # stays as it was (otherwise a longer plan would move its end past the current step).
    fixed_warmup_steps: int = 0

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.kind!r}; expected one of {', '.join(SCHEDULES)}")
        if self.steps_per_epoch <= 0 or self.epochs <= 0:
            raise ValueError("a schedule needs at least one epoch of at least one step")

    @property
    def total(self) -> int:
        """Steps in the run."""
        return self.total_steps or self.steps_per_epoch * self.epochs

    @property
    def warmup_steps(self) -> int:
        full = round(self.warmup_epochs * self.steps_per_epoch)
        if self.fixed_warmup_steps:
            return self.fixed_warmup_steps
        if self.kind == "onecycle":
            return max(1, round(ONE_CYCLE_RISE * self.total))
        if not self.total_steps:
            return full
        return min(full, max(self.probe_steps, round(self.warmup_fraction * self.total_steps)))

    def lr_at(self, step: int) -> float:
        total = self.total
        if self.kind == "onecycle":
            rise, low = self.warmup_steps, self.lr / ONE_CYCLE_START_DIV
            if step < rise:
                return _half_cosine(low, self.lr, step / rise)
            return _half_cosine(self.lr, low / ONE_CYCLE_END_DIV, (step - rise) / max(1, total - rise))
        full = round(self.warmup_epochs * self.steps_per_epoch)
        warmup = self.warmup_steps
        if step < warmup:
            start = self.lr / 100
            knee = min(self.probe_steps, warmup) if warmup < full else warmup
            if step < knee:
                return start + (self.lr - start) * step / full
            at_knee = start + (self.lr - start) * knee / full
            return at_knee + (self.lr - at_knee) * (step - knee) / (warmup - knee)
        if self.kind == "constant":
            return self.lr
        if self.kind == "exponential":
            return self.lr * self.decay_rate ** (step // self.steps_per_epoch)
        progress = (step - warmup) / max(1, total - warmup)
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    def momentum_at(self, step: int) -> float | None:
        """The momentum of a one-cycle schedule at ``step`` (None for the others: the
        optimiser keeps its own)."""
        if self.kind != "onecycle":
            return None
        high, low = ONE_CYCLE_MOMENTUM
        rise = self.warmup_steps
        if step < rise:
            return _half_cosine(high, low, step / rise)
        return _half_cosine(low, high, (step - rise) / max(1, self.total - rise))

    def apply(self, optimizer: torch.optim.Optimizer) -> float:
        """Set every group's learning rate (and, one-cycle, momentum: SGD's and RMSprop's
        ``momentum``, Adam's first beta) for the current step; returns the base rate."""
        lr = self.lr_at(self.step)
        momentum = self.momentum_at(self.step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
            if momentum is not None and "betas" in group:
                group["betas"] = (momentum, group["betas"][1])
            elif momentum is not None and "momentum" in group:
                group["momentum"] = momentum
        return lr

    def advance(self) -> None:
        self.step += 1

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


# Progressive resizing: the training resolution grows linearly from the start size to the
# final one over the first RESIZE_RAMP of the run, in steps of RESIZE_MULTIPLE pixels (each
# size compiles its own kernels; fewer sizes, less warm-up), and stays final for the rest,
# so the model ends on the resolution it is evaluated near.
RESIZE_RAMP = 0.75
RESIZE_MULTIPLE = 16


def progressive_resolutions(steps: np.ndarray, total: int, start: int | None, final: int) -> np.ndarray:
    """The training resolution at each of ``steps`` in a run of ``total`` steps that
    resizes from ``start`` to ``final`` pixels (``start`` None: ``final`` throughout)."""
    steps = np.asarray(steps)
    if start is None or start >= final:
        return np.full(steps.shape, final)
    ramp = RESIZE_RAMP * total
    linear = start + (final - start) * steps / ramp
    rounded = np.maximum(start, np.floor(linear / RESIZE_MULTIPLE) * RESIZE_MULTIPLE)
    return np.where(steps >= ramp, final, np.minimum(final, rounded)).astype(int)


def resized_cost(first: int, last: int, total: int, start: int | None, final: int) -> float:
    """The work of steps ``first`` .. ``last - 1`` in steps at the final resolution (a
    convolutional network's work grows with the pixels: the square of the side)."""
    if last <= first:
        return 0.0
    sizes = progressive_resolutions(np.arange(first, last), total, start, final)
    return float(np.sum((sizes / final) ** 2))


def steps_fitting(step: int, seconds: float, seconds_per_unit: float, start: int | None, final: int) -> int:
    """The run length (at least ``step + 1``) whose remaining steps, from ``step``, take
    ``seconds`` at ``seconds_per_unit`` per step at the final resolution. The ramp
    stretches with the run, so the length is searched (the work grows with it)."""

    seconds = max(0.0, seconds)
    if start is None or start >= final:  # every step costs the same
        return step + max(1, int(seconds / seconds_per_unit))
    low = step + 1  # the first step always runs
    high = step + 2 + int(seconds / (seconds_per_unit * (start / final) ** 2))
    while low < high:  # the largest length that fits
        middle = (low + high + 1) // 2
        if resized_cost(step, middle, middle, start, final) * seconds_per_unit <= seconds:
            low = middle
        else:
            high = middle - 1
    return low


def fitted_ema_decay(total_steps: int) -> float:
    """An EMA decay for a run of ``total_steps``: an averaging horizon of a tenth of the
    run (1 - 10 / steps), within [0.9, 0.9998]. A fixed 0.9998 averages over 5,000
    steps, longer than a short run: its average would still hold the initialisation."""
    return min(0.9998, max(0.9, 1.0 - 10.0 / max(1, total_steps)))


# The train-test resolution discrepancy (Touvron et al., 2019): random-resized crops of as
# little as a tenth of the photo show objects larger than a centre crop of the same side
# does, so the network scores best when tested at a larger side than it trained at.
# Measured on Imagenette, trained at 128 px and tested at 160 (benchmarks/train_budget.py):
# MobileNetV2 +3.3 points after 30 minutes, +2.1 to +2.5 after 5; ShuffleNet +2.0. Of 128 to
# 192 px, 160 scored best, and the sides off the networks' 32-pixel grid (144, 176) below
# their on-grid neighbours (the strided layers pad an off-grid side unevenly), so the side
# stays on the grid (benchmarks/eval_resolution.py).
EVAL_RESOLUTION_RATIO = 1.25
EVAL_RESOLUTION_MIN_ZOOM = 0.25  # crops no smaller than this fraction of the area: no change
NETWORK_GRID = 32


def default_eval_resolution(resolution: int, crop_scale: float) -> int:
    """The default evaluation side of a network trained on random-resized crops of
    ``resolution`` pixels whose smallest crop is ``crop_scale`` of the photo's area."""
    if crop_scale > EVAL_RESOLUTION_MIN_ZOOM:
        return resolution
    return max(resolution, NETWORK_GRID * round(resolution * EVAL_RESOLUTION_RATIO / NETWORK_GRID))
