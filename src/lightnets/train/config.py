"""Everything a training run is made of, in one record saved beside its checkpoints.

A run folder holds ``config.json``; ``--resume`` reads it back, so the continued run is
the same run. Options that only change how a run executes (worker processes, threads,
progress bars) may differ on resume; ``epochs`` may grow (the run is extended); ``data`` and ``val_data`` may
point to where the same images moved; the rest may not.

The folder is the run's identity: ``config.json`` does not record where the folder is,
and paths inside it are stored relative to it, so a run folder can be moved or copied
and resumed from anywhere. Inputs outside the folder (data, weights files, a teacher)
are stored as absolute paths.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..files import write_text
from .recipes import RECIPES, SCHEDULES, recipe_defaults

CONFIG_FILE = "config.json"

# May change between the start of a run and its resumption without changing its results.
EXECUTION_FIELDS = frozenset(
    {"workers", "threads", "progress", "device", "checkpoint_every", "log_every", "teacher_cache"}
)
# May change on resume, in one direction, and the change is recorded: more epochs extend
# the run (the schedule is stretched over the new length from the step reached).
EXTENDABLE_FIELDS = frozenset({"epochs"})
# May change on resume when the data moved: the trainer checks that the training images
# found there are the ones the checkpoint was trained on (names and labels).
RELOCATABLE_FIELDS = frozenset({"data", "val_data"})
# Always paths: stored absolute, or relative to the run folder when inside it.
DATA_PATHS = ("data", "val_data", "teacher_cache")
# Either a path or a name (a weights tag, a registered model): a path only if it exists.
PATH_OR_NAME = ("weights", "teacher", "teacher_weights")

OPTIMIZERS = ("rmsprop", "sgd", "adamw")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_range(
    name: str,
    value: Any,
    low: float | None,
    high: float | None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
    unset: str = "",
) -> None:
    """``ValueError`` naming the option, the value and the accepted range."""
    if value is None:
        return
    ok = _finite(value) and (not integer or float(value).is_integer())
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if ok:
        return
    kind = "an integer" if integer else "a number"
    if low is not None and high is not None:
        bounds = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        bounds = f"{'>' if low_open else '>='} {low:g}"
    else:
        bounds = f"{'<' if high_open else '<='} {high:g}"
    flag = "--" + name.replace("_", "-")
    raise ValueError(f"{flag} must be {kind} {bounds}{unset}, got {value!r}")


DURATION_UNITS = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``5m``, ``1.5h`` or ``300`` (seconds); ``ValueError`` otherwise."""
    value = str(text).strip().lower()
    for unit in sorted(DURATION_UNITS, key=len, reverse=True):
        if value.endswith(unit):
            number, scale = value[: -len(unit)].strip(), DURATION_UNITS[unit]
            break
    else:
        number, scale = value, 1.0
    try:
        seconds = float(number) * scale
    except ValueError:
        raise ValueError(f"{text!r} is not a duration; expected e.g. 90s, 5m or 1.5h") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a duration must be positive, got {text!r}")
    return seconds


def _absolute(value: str, base: Path) -> str:
    return os.path.normpath(os.path.join(base, os.path.expanduser(value)))


@dataclass
class TrainConfig:
    """A training run. ``None`` fields are filled from the recipe by :meth:`resolved`."""

    model: str
    data: str
    out: str
    epochs: int = 10
    batch_size: int = 64  # global: split over the processes of a distributed run
    resolution: int = 224
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    # A wall-clock budget in seconds for the whole command (start-up, caching, training,
    # evaluation): the schedule is fitted to it and ``epochs`` is not used.
    time_budget: float | None = None
    steps: int | None = None  # a run of exactly this many steps (replays a budgeted run)
    eval_resolution: int | None = None  # None: recipes.default_eval_resolution of the training one
    # Progressive resizing: train from this side up to ``resolution`` (None: at ``resolution``
    # throughout); see recipes.progressive_resolutions.
    start_resolution: int | None = None
    cache: bool = True  # decode the images once into a memory-mapped uint8 cache
    val_data: str | None = None
    limit_per_class: int | None = None  # train on the first N images of each class
    val_limit_per_class: int | None = None
    # Fine-tuning.
    weights: str | None = None
    freeze_backbone: bool = False
    backbone_lr_scale: float = 1.0
    freeze_bn: bool = False  # BatchNorm statistics stay as loaded (small batches, folded weights)
    # Recipe; None: the recipe's default.
    recipe: str = "sgd"
    optimizer: str | None = None
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    schedule: str | None = None
    warmup_epochs: float | None = None
    lr_decay: float = 0.98  # per epoch, for the exponential schedule
    label_smoothing: float | None = None
    ema_decay: float | None = None
    clip_grad: float | None = None
    # Augmentation.
    crop_scale: float = 0.08  # smallest crop area fraction of random-resized crop
    hflip: float = 0.5
    color_jitter: float = 0.0
    views: int = 0  # 0: new augmentation every epoch; K: K fixed views cycled over epochs
    mixup: float = 0.0  # Beta(alpha, alpha) of mixup's blend; 0: off (see mixing.py)
    cutmix: float = 0.0  # the same for CutMix's box; with both, each batch takes one
    # Distillation.
    teacher: str | None = None
    teacher_weights: str | None = None
    distill_alpha: float = 0.9
    distill_temperature: float = 4.0
    teacher_cache: str | None = None
    # Execution.
    seed: int = 0
    workers: int = 0
    threads: int | None = None
    device: str = "auto"
    channels_last: bool = True  # NHWC: faster convolutions on CPUs (oneDNN) and tensor cores
    amp: str = "auto"  # auto: fp16 on CUDA, bf16 on CPUs with native bfloat16, else off
    dtype: str = "float32"  # float64: for numerical checks (e.g. DDP against one process)
    sync_bn: bool = True  # distributed runs: BatchNorm statistics over the global batch
    checkpoint_every: int = 0  # steps; 0: at the end of each epoch only
    log_every: int = 10  # steps between metric records
    progress: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Every option in its range, or ``ValueError`` naming the option, the value and
        what is accepted. (The data, model and teacher are checked when the run is built.)"""
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}; expected one of {', '.join(RECIPES)}")
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; expected one of {', '.join(SCHEDULES)}")
        for name in ("model", "data", "out"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"--{name} must be a non-empty string, got {value!r}")
        if not isinstance(self.model_kwargs, dict):
            raise ValueError(f"model_kwargs must be a dict of builder arguments, got {self.model_kwargs!r}")
        r = _check_range
        r("epochs", self.epochs, 1, None, integer=True)
        r("batch_size", self.batch_size, 1, None, integer=True)
        r("resolution", self.resolution, 1, None, integer=True)
        r("eval_resolution", self.eval_resolution, 1, None, integer=True, unset=" (or unset: the default)")
        r("start_resolution", self.start_resolution, 1, None, integer=True, unset=" (or unset: no resizing)")
        if self.start_resolution is not None and self.start_resolution >= self.resolution:
            raise ValueError(
                f"--start-resolution {self.start_resolution} must be below --resolution {self.resolution}: "
                "progressive resizing grows the images up to --resolution"
            )
        r("time_budget", self.time_budget, 0, None, low_open=True, unset=" (or unset: --epochs)")
        r("steps", self.steps, 1, None, integer=True, unset=" (or unset: --epochs)")
        if self.time_budget is not None and self.steps is not None:
            raise ValueError("--time-budget and --steps exclude each other: the budget chooses the steps")
        r("limit_per_class", self.limit_per_class, 1, None, integer=True, unset=" (or unset: every image)")
        r(
            "val_limit_per_class",
            self.val_limit_per_class,
            1,
            None,
            integer=True,
            unset=" (or unset: every image)",
        )
        r("backbone_lr_scale", self.backbone_lr_scale, 0, None)
        r("lr", self.lr, 0, None, low_open=True, unset=" (or unset: the recipe's)")
        r("momentum", self.momentum, 0, 1, high_open=True)
        r("weight_decay", self.weight_decay, 0, None)
        r("warmup_epochs", self.warmup_epochs, 0, None)
        r("lr_decay", self.lr_decay, 0, 1, low_open=True)
        r("label_smoothing", self.label_smoothing, 0, 1, high_open=True)
        r("ema_decay", self.ema_decay, 0, 1, high_open=True, unset=" (0: no EMA)")
        r("clip_grad", self.clip_grad, 0, None, unset=" (0 or unset: no clipping)")
        r("crop_scale", self.crop_scale, 0, 1, low_open=True)
        r("hflip", self.hflip, 0, 1)
        r("color_jitter", self.color_jitter, 0, 1)
        r("views", self.views, 0, None, integer=True, unset=" (0: a new augmentation every epoch)")
        r("mixup", self.mixup, 0, None, unset=" (0: off)")
        r("cutmix", self.cutmix, 0, None, unset=" (0: off)")
        if (self.mixup or self.cutmix) and self.teacher:
            raise ValueError(
                "--mixup / --cutmix and --teacher exclude each other: the teacher's logits are of the "
                "unmixed images"
            )
        r("distill_alpha", self.distill_alpha, 0, 1)
        r("distill_temperature", self.distill_temperature, 0, None, low_open=True)
        r("seed", self.seed, 0, 2**63 - 1, integer=True)
        r("workers", self.workers, 0, None, integer=True)
        r("threads", self.threads, 1, None, integer=True, unset=" (or unset: PyTorch's default)")
        r(
            "checkpoint_every",
            self.checkpoint_every,
            0,
            None,
            integer=True,
            unset=" (0: at the end of each epoch only)",
        )
        r("log_every", self.log_every, 0, None, integer=True, unset=" (0: epoch records only)")
        if self.amp not in ("auto", "off", "bf16", "fp16"):
            raise ValueError(f"--amp must be auto, off, bf16 or fp16, got {self.amp!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"--dtype must be float32 or float64, got {self.dtype!r}")
        if self.dtype == "float64" and self.amp not in ("auto", "off"):
            raise ValueError("mixed precision (--amp) and --dtype float64 exclude each other")
        if self.device != "auto":
            import torch

            try:
                torch.device(self.device)
            except (RuntimeError, ValueError, TypeError):
                raise ValueError(
                    f"--device {self.device!r} is not a device; expected auto, cpu, cuda, cuda:N ..."
                ) from None
        if self.teacher_cache and not self.teacher:
            raise ValueError("--teacher-cache needs a --teacher")
        if self.teacher_weights and not self.teacher:
            raise ValueError("--teacher-weights needs a --teacher")

    def resolved(self) -> TrainConfig:
        """A copy with every recipe default filled in."""
        defaults = recipe_defaults(self.recipe, self.batch_size)
        values = asdict(self)
        for key, value in defaults.items():
            if values.get(key) is None:
                values[key] = value
        return TrainConfig(**values)

    def with_absolute_paths(self, base: str | Path | None = None) -> TrainConfig:
        """A copy whose input paths are absolute (relative ones taken from ``base``, the
        current folder by default); names that are not existing paths (weights tags, model
        names) stay as they are."""
        base = Path(base) if base is not None else Path.cwd()
        values = asdict(self)
        for name in DATA_PATHS:
            if values[name]:
                values[name] = _absolute(values[name], base)
        for name in PATH_OR_NAME:
            if values[name] and os.path.exists(_absolute(values[name], base)):
                values[name] = _absolute(values[name], base)
        return TrainConfig(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training options: {', '.join(unknown)}")
        missing = sorted(
            f.name for f in fields(cls) if f.name in ("model", "data", "out") and f.name not in data
        )
        if missing:
            raise ValueError(f"training options missing: {', '.join(missing)}")
        return cls(**data)

    def stored(self, folder: str | Path) -> dict[str, Any]:
        """The record of this run as ``config.json`` in ``folder`` holds it: no ``out`` (the
        folder is the run), paths inside the folder relative to it, others absolute."""
        folder = Path(_absolute(str(folder), Path.cwd()))
        values = self.with_absolute_paths().to_dict()
        values.pop("out")
        for name in (*DATA_PATHS, *PATH_OR_NAME):
            value = values[name]
            if value and os.path.isabs(value):
                path = Path(value)
                if path == folder or folder in path.parents:
                    values[name] = str(path.relative_to(folder)) or "."
        return values

    def save(self, folder: str | Path) -> Path:
        """Write ``config.json`` into ``folder`` atomically."""
        return write_text(
            Path(folder) / CONFIG_FILE, json.dumps(self.stored(folder), indent=2, sort_keys=True) + "\n"
        )

    @classmethod
    def from_stored(cls, data: dict[str, Any], folder: str | Path) -> TrainConfig:
        """The run :meth:`stored` describes, in ``folder`` (as given: the run's identity)."""
        data = dict(data)
        # Runs started before the image cache existed decoded every image every epoch.
        data.setdefault("cache", False)
        if "out" in data:
            # Written before runs were folder-relative: relative paths were the caller's.
            data.pop("out")
            base = Path.cwd()
        else:
            base = Path(_absolute(str(folder), Path.cwd()))
        for name in DATA_PATHS:
            if data.get(name):
                data[name] = _absolute(data[name], base)
        for name in PATH_OR_NAME:
            if data.get(name) and os.path.exists(_absolute(data[name], base)):
                data[name] = _absolute(data[name], base)
        return cls.from_dict({**data, "out": str(folder)})

    @classmethod
    def load(cls, folder: str | Path) -> TrainConfig:
        path = Path(folder) / CONFIG_FILE
        if not path.is_file():
            raise ValueError(f"{folder} holds no {CONFIG_FILE}: not a lightnets training run")
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path} is not a readable run configuration: {error}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path} is not a readable run configuration: not a JSON object")
        try:
            return cls.from_stored(data, folder)
        except TypeError as error:
            raise ValueError(f"{path} is not a readable run configuration: {error}") from None

    def differences(self, other: TrainConfig, ignore: frozenset[str] = frozenset()) -> dict[str, tuple]:
        """``{option: (this value, other value)}`` for the options that differ, paths
        compared as absolute paths; ``out`` and ``ignore`` left out."""
        mine = self.with_absolute_paths().to_dict()
        theirs = other.with_absolute_paths().to_dict()
        return {
            key: (mine[key], theirs[key])
            for key in mine
            if key != "out" and key not in ignore and mine[key] != theirs[key]
        }

    def resume_with(self, overrides: dict[str, Any]) -> TrainConfig:
        """This (saved) run continued with ``overrides``: ``out`` (the folder the run is
        now in) and the execution options are taken; ``epochs`` may grow; the data may
        have moved (the trainer checks it is the same); any other option
        that differs from the saved run raises ``ValueError`` naming it. Relative paths in
        ``overrides`` are the caller's (the current folder)."""
        values = self.to_dict()
        unknown = sorted(set(overrides) - set(values))
        if unknown:
            raise ValueError(f"unknown training options: {', '.join(unknown)}")
        given = self.with_absolute_paths()
        given_values = {**given.to_dict(), **{k: v for k, v in overrides.items()}}
        for name in DATA_PATHS:
            if overrides.get(name):
                given_values[name] = _absolute(overrides[name], Path.cwd())
        for name in PATH_OR_NAME:
            if overrides.get(name) and os.path.exists(overrides[name]):
                given_values[name] = _absolute(overrides[name], Path.cwd())
        saved = given.to_dict()
        conflicts = []
        for key in overrides:
            value = given_values[key]
            if key == "out" or key in EXECUTION_FIELDS or key in RELOCATABLE_FIELDS:
                values[key] = value
            elif key in EXTENDABLE_FIELDS and isinstance(value, int) and value >= saved[key]:
                values[key] = value
            elif saved[key] != value:
                hint = "; a run can be extended, not shortened" if key in EXTENDABLE_FIELDS else ""
                conflicts.append(f"{key}={value!r} (the run has {saved[key]!r}{hint})")
        if conflicts:
            raise ValueError(
                "--resume continues the run as it was started; these options differ: "
                + ", ".join(conflicts)
                + " (start a new run with another --out to change them)"
            )
        return TrainConfig(**values)
