"""Everything a training run is made of, in one record saved beside its checkpoints.

A run folder holds ``config.json``; ``--resume`` reads it back, so the continued run is
the same run. Options that only change how a run executes (worker processes, threads,
progress bars) may differ on resume; the rest may not.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .recipes import RECIPES, recipe_defaults

CONFIG_FILE = "config.json"

# May change between the start of a run and its resumption without changing its results.
EXECUTION_FIELDS = frozenset({"workers", "threads", "progress", "device", "checkpoint_every", "log_every"})


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
    channels_last: bool = False
    amp: str = "auto"  # auto: float16 on CUDA, off on CPU; or off, bf16, fp16
    dtype: str = "float32"  # float64: for numerical checks (e.g. DDP against one process)
    sync_bn: bool = True  # distributed runs: BatchNorm statistics over the global batch
    checkpoint_every: int = 0  # steps; 0: at the end of each epoch only
    log_every: int = 10  # steps between metric records
    progress: bool = True

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}; expected one of {RECIPES}")
        for name in ("epochs", "batch_size", "resolution"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 < self.crop_scale <= 1:
            raise ValueError(f"crop_scale must be in (0, 1], got {self.crop_scale}")
        if not 0 <= self.distill_alpha <= 1:
            raise ValueError(f"distill_alpha must be in [0, 1], got {self.distill_alpha}")
        if self.distill_temperature <= 0:
            raise ValueError(f"distill_temperature must be positive, got {self.distill_temperature}")
        if self.views < 0:
            raise ValueError(f"views must be >= 0, got {self.views}")
        if self.amp not in ("auto", "off", "bf16", "fp16"):
            raise ValueError(f"amp must be auto, off, bf16 or fp16, got {self.amp!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        if self.dtype == "float64" and self.amp not in ("auto", "off"):
            raise ValueError("mixed precision and float64 exclude each other")
        if self.teacher_cache and not self.teacher:
            raise ValueError("teacher_cache needs a teacher")

    def resolved(self) -> TrainConfig:
        """A copy with every recipe default filled in."""
        defaults = recipe_defaults(self.recipe, self.batch_size)
        values = asdict(self)
        for key, value in defaults.items():
            if values.get(key) is None:
                values[key] = value
        return TrainConfig(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training options: {', '.join(unknown)}")
        return cls(**data)

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / CONFIG_FILE
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        temporary.replace(path)
        return path

    @classmethod
    def load(cls, folder: str | Path) -> TrainConfig:
        path = Path(folder) / CONFIG_FILE
        if not path.is_file():
            raise ValueError(f"{folder} holds no {CONFIG_FILE}: not a lightnets training run")
        return cls.from_dict(json.loads(path.read_text()))

    def resume_with(self, overrides: dict[str, Any]) -> TrainConfig:
        """This (saved) run with the execution options in ``overrides``; any other option
        that differs from the saved run raises ``ValueError``."""
        values = self.to_dict()
        conflicts = []
        for key, value in overrides.items():
            if key in EXECUTION_FIELDS:
                values[key] = value
            elif key in values and values[key] != value and not (key == "out"):
                conflicts.append(f"{key}={value!r} (the run has {values[key]!r})")
        if conflicts:
            raise ValueError(
                "--resume continues the run as it was started; these options differ: " + ", ".join(conflicts)
            )
        return TrainConfig(**values)
