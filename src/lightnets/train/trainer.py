"""The training loop: one process or many, from scratch, fine-tuned or distilled.

A run is a :class:`~.config.TrainConfig` and an output folder. The folder receives
``config.json``, ``checkpoint.pt`` (every ``checkpoint_every`` steps and every epoch),
``metrics.jsonl`` / ``metrics.csv``, ``curves.png``, ``summary.json`` and the final
weights as lightnets safetensors files (``model.safetensors``, and
``model_ema.safetensors`` with an EMA), which ``create_model(name, weights=path)`` and
``lightnets eval --weights path`` load. While a process trains in the folder,
``train.lock`` names it (:class:`~.checkpoint.RunLock`).

Why a resumed run ends with the same weights as an uninterrupted one: nothing random
is drawn from a stream whose position would have to be restored. The epoch order is
seeded by (seed, epoch), each image's augmentation by (seed, view, image) and its
dropout mask by (seed, step, image); the learning rate is a function of the step; the
checkpoint holds the optimiser, EMA and BatchNorm state and the position in the epoch.
(The random streams are saved and restored as well, for code that does use them.)

Why a run that cannot work writes nothing: the options, the data (it exists and holds
readable images), the model (its name and options build; the resolution fits it) and the
teacher (its classes are the data's) are all checked before the folder is touched. A run
that goes wrong later stops with a ``ValueError`` saying why and where: a loss or
gradient that is not finite (nothing of that step is saved; the checkpoint keeps the
last good state), a full or read-only disk (the file being written is named, the previous
one is kept).

Why N processes compute what one process computes with the same global batch: every
process takes an equal slice of the same global batch; BatchNorm statistics are
synchronised over the global batch (:mod:`.sync_batchnorm`); dropout is keyed to the
image; the loss is a sum over images divided by the global image count (DDP averages
gradients over processes, so each process's sum is scaled by the process count).
"""

from __future__ import annotations

import hashlib
import inspect
import math
import os
import random
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from ..data.images import UnreadableImage
from ..data.train_transforms import IMAGENET_MEAN, IMAGENET_STD, TrainTransform
from ..files import OutputError, write_bytes, write_json, write_text
from ..layers import to_channels_last
from ..weights import PretrainedConfig
from ..weights.lightnets_format import METADATA_KEY
from ..weights.load import metadata_json
from ..weights.store import cache_folder
from ..zoo import create_model
from . import distributed
from .cache import build_cache, cache_side
from .checkpoint import (
    LATEST,
    RunLock,
    load_checkpoint,
    remove_stale_temporaries,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .config import EXECUTION_FIELDS, EXTENDABLE_FIELDS, RELOCATABLE_FIELDS, TrainConfig
from .data import (
    AugmentedImages,
    Batch,
    EvalImages,
    ShardedBatches,
    first_per_class,
    has_split,
    loader,
    open_source,
)
from .distill import TeacherCache, distillation_loss, fingerprint, load_teacher, renormalise
from .dropout import sample_keys, set_dropout_keys, use_keyed_dropout
from .ema import ModelEMA
from .finetune import freeze_backbone, set_train_mode
from .hardware import auto_amp, cpu_has_bf16
from .init import has_normalisation, norm_free_init
from .mixing import Mixing
from .recipes import (
    LRSchedule,
    build_optimizer,
    default_eval_resolution,
    fitted_ema_decay,
    norm_free_settings,
    parameter_groups,
    progressive_resolutions,
    recipe_defaults,
    resized_cost,
    steps_fitting,
)
from .records import PLOT, MetricsLog, plot_curves
from .sync_batchnorm import convert_sync_batchnorm

SUMMARY = "summary.json"
WEIGHTS_FILE = "model.safetensors"  # the weights the run recommends
EMA_WEIGHTS_FILE = "model_ema.safetensors"
LAST_WEIGHTS_FILE = "model_last.safetensors"  # the optimiser's weights, when the EMA is recommended
PROBE_STEPS = 10  # a budgeted run measures its throughput over its first steps
PROBE_FRACTION = 0.03  # ... or over fewer, once they took this fraction of the budget
PROVISIONAL_STEPS = 10**9  # a budgeted run's length before the probe has measured it
# A planned run checks its pace after each tenth of its steps (once warmed up), and plans
# its length again when that pace would end it off its budget by more than PACE_DRIFT of
# the budget: a machine shared with other jobs slows down and speeds up.
PACE_CHECKS = 10
PACE_DRIFT = 0.03


class SkippedImageWarning(UserWarning):
    """An image of the training or validation data could not be read and was left out."""


class NotLearningWarning(UserWarning):
    """The training loss is still that of constant logits (ln C) after the warm-up."""


class NonFiniteError(ValueError):
    """The loss or the gradients stopped being finite numbers: the run diverged."""


@dataclass
class TrainResult:
    """How a run ended (``val_*`` are None without validation data)."""

    out: Path
    epochs: int
    steps: int
    train_loss: float | None
    train_accuracy: float | None
    val_top1: float | None
    val_top1_ema: float | None
    wall_time: float  # seconds spent training and evaluating, summed over resumptions
    weights: Path | None  # model.safetensors (None on processes other than rank 0)
    recommended: str = "last"  # what model.safetensors holds: "last" weights or "ema"


def train(config: TrainConfig, resume: bool = False, started: float | None = None) -> TrainResult:
    """Run (or with ``resume``, continue) the training ``config`` describes.

    Under ``torchrun`` every process calls this; rank 0 writes the files. A time budget
    counts from ``started`` (a ``time.perf_counter`` time; default: now); the command
    passes its process's start (:func:`process_start`).
    """
    started = time.perf_counter() if started is None else started
    check_device(config.device)
    env = distributed.setup(config.device)
    try:
        trainer = Trainer(config, env, resume, started=started)
        try:
            return trainer.run()
        finally:
            trainer.close()
    finally:
        distributed.cleanup(env)


def process_start() -> float | None:
    """When this process started, on the ``time.perf_counter`` clock (None if unknown):
    a time budget covers the command's start-up (Python, PyTorch) too."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        age = uptime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    return time.perf_counter() - age if 0 <= age < 3600 else None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model(name: str, weights: str | None, num_classes: int, kwargs: dict) -> nn.Module:
    """``create_model`` with any failure to build said as a ``ValueError`` naming the model."""
    try:
        return create_model(name, weights=weights, num_classes=num_classes, **kwargs)
    except ValueError:
        raise
    except Exception as error:  # a builder rejecting an option's value in its own way
        options = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "its default options"
        raise ValueError(f"cannot build {name} with {options}: {error}") from None


def check_resolution(model: nn.Module, name: str, resolution: int, option: str = "--resolution") -> None:
    """``ValueError`` unless an input of ``resolution`` pixels (given as ``option``) passes ``model``."""
    try:
        check = getattr(model, "check_input_size", None)
        if check is not None:
            check(resolution, resolution)
        else:
            was_training = model.training
            model.eval()
            with torch.no_grad():
                model(torch.zeros(1, 3, resolution, resolution))
            model.train(was_training)
    except (ValueError, RuntimeError) as error:
        raise ValueError(f"{option} {resolution} does not fit {name}: {error}") from None


def listing_digest(source, indices: list[int], root: str) -> str:
    """A digest of which images (names relative to ``root``) with which labels a run trains on."""
    digest = hashlib.sha256("\n".join(source.classes).encode())
    for index in indices:
        name = source.name_of(index)
        if os.path.isabs(name):
            name = os.path.relpath(name, root)
        digest.update(f"\n{source.label_of(index)}\t{name}".encode())
    return digest.hexdigest()


def check_device(device: str) -> None:
    """``ValueError`` unless ``device`` exists on this machine."""
    if device == "auto":
        return
    chosen = torch.device(device)
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: no CUDA device is available here (use cpu or auto)")
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise ValueError(
                f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    elif chosen.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: MPS is not available here (use cpu or auto)")


def norm_free_defaults(config: TrainConfig) -> TrainConfig:
    """``config`` with the recipe's settings for networks without normalisation layers
    (:data:`~.recipes.NORM_FREE`) where the user left them to the recipe, when its model
    is such a network trained from scratch."""
    if config.weights:
        return config
    kwargs = {k: v for k, v in config.model_kwargs.items() if k != "num_classes"}
    if has_normalisation(build_model(config.model, None, 2, kwargs)):
        return config
    settings = norm_free_settings(config.recipe, config.batch_size)
    return replace(config, **{k: v for k, v in settings.items() if getattr(config, k) is None})


def check_readable(source, indices: list[int], path: str | None, what: str) -> None:
    """``ValueError`` naming ``path`` unless at least one of these images can be read
    (reads images until one can: one, normally)."""
    if not indices:
        raise ValueError(f"{path} holds no {what} images")
    reason = ""
    for index in indices:
        try:
            source.image(index)
            return
        except UnreadableImage as error:
            reason = str(error)
    raise ValueError(f"none of the {len(indices)} {what} images in {path} can be read (e.g. {reason})")


class Trainer:
    """One run's state and loop; see the module docstring. Use :func:`train`."""

    def __init__(
        self,
        config: TrainConfig,
        env: distributed.DistEnv,
        resume: bool = False,
        started: float | None = None,
    ) -> None:
        # The budget's clock: this process's time since train() was called, plus the
        # time the run's earlier processes spent up to their last checkpoint.
        self.session_start = time.perf_counter() if started is None else started
        self.spent_before = 0.0
        self.budget_log: dict[str, float] = {}
        self.pace_time, self.pace_step = 0.0, 0  # where a planned run's pace is measured from
        self.env = env
        self.out = Path(config.out)  # as given: every file of the run is found from it
        self.lock: RunLock | None = None
        # Everything is checked before anything is written.
        self.resuming = resume
        config, self.changes = self._plan(config, resume)
        self.config = config
        if config.threads:
            torch.set_num_threads(config.threads)
        seed_everything(config.seed)
        self.device = env.device
        self._build_data()
        self._build_model()
        self._build_optimisation()
        self._build_teacher()
        self.epoch = 0
        self.batch_in_epoch = 0
        self.step = 0
        self.saved_step: int | None = None  # the step of the checkpoint on disk
        self.elapsed = 0.0
        self.not_learning_checked = False
        self.records_written = 0
        self.epoch_sums = [0.0, 0.0, 0.0]  # loss sum, correct, images of the current epoch
        self.interval_sums = [0.0, 0.0, 0.0]  # the same since the last step record
        self.last_epoch_record: dict | None = None
        self.warned: set[str] = set()
        self.metrics: MetricsLog | None = None
        try:
            self._open_folder(resume)
        except BaseException:
            self.close()
            raise
        self.ddp = self._wrap()

    def close(self) -> None:
        """Let go of the run folder (another process may continue the run)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    # ----------------------------------------------------------------- set-up
    def _plan(self, config: TrainConfig, resume: bool) -> tuple[TrainConfig, dict[str, tuple]]:
        """The run to do, and the options a resumption changes (``{name: (old, new)}``)."""
        if not resume:
            config = norm_free_defaults(config)
        config = config.resolved().with_absolute_paths()
        if not resume:
            # A folder whose run saved no checkpoint holds nothing to continue (a start that
            # failed early): a new start may take it.
            if (self.out / LATEST).is_file():
                raise ValueError(
                    f"{self.out} already holds a training run; continue it with --resume or pick another --out"
                )
            return config, {}
        saved = TrainConfig.load(self.out).resolved()
        continued = saved.resume_with(config.to_dict())
        changes = saved.differences(continued, ignore=EXECUTION_FIELDS)
        return continued, changes

    def _open_folder(self, resume: bool) -> None:
        """Take the folder (lock, config, records), and with ``resume`` the checkpoint."""
        distributed.barrier(self.env)  # every process has checked before rank 0 writes
        checkpoint = self.out / LATEST
        if self.env.is_main:
            try:
                self.out.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise OutputError(
                    f"cannot create the run folder {self.out}: {error.strerror or error}",
                    self.out,
                    error.errno,
                ) from None
            self.lock = RunLock(self.out).acquire()
            if not resume and (self.out / LATEST).is_file():
                # Another run started here while this one was being checked.
                raise ValueError(
                    f"{self.out} already holds a training run; continue it with --resume or pick another --out"
                )
        state = load_checkpoint(checkpoint) if resume and checkpoint.is_file() else None
        if state is not None:
            self._check_checkpoint(state, checkpoint)
        if self.env.is_main:
            remove_stale_temporaries(self.out)
            self.config.save(self.out)
            if self.teacher is not None and self.config.teacher_cache:
                TeacherCache(
                    self.config.teacher_cache, len(self.train_source), len(self.classes), self.cache_key
                )
        distributed.barrier(self.env)
        if self.teacher is not None and self.config.teacher_cache:
            self.teacher_cache: TeacherCache | None = TeacherCache(
                self.config.teacher_cache,
                len(self.train_source),
                len(self.classes),
                self.cache_key,
                create=False,
            )
        self.metrics = MetricsLog(self.out) if self.env.is_main else None
        if state is not None:
            self._restore(state)
            self.saved_step = self.step
        if self.metrics is not None:
            self.metrics.truncate(self.records_written)
            if self.changes:
                changed = {k: list(v) for k, v in self.changes.items()}
                self._record({"kind": "resume", "step": self.step, "changed": changed})
                if self.config.progress:
                    tqdm.write(
                        "resuming with "
                        + ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in self.changes.items())
                    )

    def _check_checkpoint(self, state: dict, path: Path) -> None:
        """Refuse a checkpoint another run wrote (a copied file, another configuration)."""
        try:
            theirs = TrainConfig.from_stored(state["config"], self.out).resolved()
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path} does not describe its run ({error}); it cannot be resumed") from None
        differ = theirs.differences(
            self.config, ignore=EXECUTION_FIELDS | EXTENDABLE_FIELDS | RELOCATABLE_FIELDS
        )
        if theirs.epochs > self.config.epochs:
            differ["epochs"] = (theirs.epochs, self.config.epochs)
        if theirs.data != self.config.data and state.get("data_listing") != self.data_listing:
            # Moved data must be the same images; anything else is another run's data.
            differ["data"] = (theirs.data, self.config.data)
        if differ:
            listed = ", ".join(f"{k}={a!r} (the run has {b!r})" for k, (a, b) in differ.items())
            raise ValueError(
                f"{path} belongs to another run: {listed}; resume the run it came from, "
                f"or remove it to restart this one"
            )

    def _build_data(self) -> None:
        c = self.config
        # Decode JPEGs shrunk by powers of two while they stay twice the training side:
        # even the smallest random crops then keep their detail; huge photos decode fast.
        min_side = 2 * c.resolution
        for name in ("data", "val_data"):
            path = getattr(c, name)
            if path and not os.path.exists(path):
                hint = f" (if the run's data moved, give its new place with --{name.replace('_', '-')})"
                raise ValueError(f"{path}: no such file or folder" + (hint if self.resuming else ""))
        try:
            self.train_source = open_source(c.data, "train", min_side)
            val_path = c.val_data or (c.data if has_split(c.data, "val") else None)
            self.val_source = open_source(val_path, "val", min_side) if val_path else None
        except OSError as error:  # e.g. a folder this user may not list
            where = error.filename or c.data
            raise ValueError(f"cannot read the data at {where}: {error.strerror or error}") from None
        self.classes = list(self.train_source.classes)
        if self.val_source is not None and list(self.val_source.classes) != self.classes:
            raise ValueError(
                f"the validation classes ({len(self.val_source.classes)}) differ from the training classes"
            )
        self.train_indices = first_per_class(self.train_source, c.limit_per_class)
        self.val_indices = first_per_class(self.val_source, c.val_limit_per_class) if self.val_source else []
        if len(self.train_indices) < c.batch_size:
            raise ValueError(
                f"{c.data}: {len(self.train_indices)} training images"
                + (f" (--limit-per-class {c.limit_per_class})" if c.limit_per_class else "")
                + f" do not fill one batch of {c.batch_size}; give a --batch-size of at most "
                f"{len(self.train_indices)}"
            )
        check_readable(self.train_source, self.train_indices, c.data, "training")
        if self.val_source is not None:
            check_readable(self.val_source, self.val_indices, val_path, "validation")
        self.data_listing = listing_digest(self.train_source, self.train_indices, c.data)
        self.sampler = ShardedBatches(
            self.train_indices, c.batch_size, c.seed, self.env.rank, self.env.world_size, c.views
        )
        self.steps_per_epoch = self.sampler.batches_per_epoch

    def _build_model(self) -> None:
        c = self.config
        num_classes = len(self.classes)
        kwargs = dict(c.model_kwargs)
        given = kwargs.pop("num_classes", num_classes)
        if given != num_classes:
            raise ValueError(
                f"--num-classes {given} does not match the {num_classes} classes of {c.data}; leave it out"
            )
        self.model = build_model(c.model, c.weights, num_classes, kwargs)
        check_resolution(self.model, c.model, c.resolution)
        self.norm_free = not has_normalisation(self.model)
        if self.norm_free and not c.weights:
            norm_free_init(self.model)
        loaded = getattr(self.model, "pretrained_cfg", None)
        mean, std, order = IMAGENET_MEAN, IMAGENET_STD, "RGB"
        if c.weights and loaded is not None:
            # Fine-tuning: feed pixels the way the weights were trained on.
            mean, std, order = loaded.transform.mean, loaded.transform.std, loaded.transform.channel_order
        self.transform = TrainTransform(
            size=c.resolution,
            scale=(c.crop_scale, 1.0),
            hflip=c.hflip,
            color_jitter=c.color_jitter,
            mean=(*mean,),
            std=(*std,),
            channel_order=order,
        )
        self.eval_transform = self.transform.eval_transform()
        if c.start_resolution is not None:
            check_resolution(self.model, c.model, c.start_resolution, "--start-resolution")
        eval_resolution = c.eval_resolution or default_eval_resolution(c.resolution, c.crop_scale)
        if eval_resolution != c.resolution:
            if c.eval_resolution:
                check_resolution(self.model, c.model, eval_resolution, "--eval-resolution")
            self.eval_transform = TrainTransform.from_dict(
                {**self.transform.to_dict(), "size": eval_resolution}
            ).eval_transform()
        if c.freeze_backbone:
            freeze_backbone(self.model)
        model_name, model_kwargs = self.model.model_name, self.model.model_kwargs
        assert isinstance(model_name, str) and isinstance(model_kwargs, dict)  # recorded by build_model
        self.model_name = model_name
        self.model_kwargs = dict(model_kwargs)
        # The EMA copy is made from the plain model: it is only ever evaluated.
        self.ema = ModelEMA(self.model, c.ema_decay) if c.ema_decay else None
        use_keyed_dropout(self.model)
        self.sync_bn = self.env.distributed and c.sync_bn and not c.freeze_bn
        if self.sync_bn:
            # A group of its own keeps BatchNorm's collectives apart from DDP's gradient buckets.
            group = torch.distributed.new_group(backend=self.env.backend)
            convert_sync_batchnorm(self.model, group, self.device.type)
        self.dtype = {"float32": torch.float32, "float64": torch.float64}[c.dtype]
        self.model.to(self.device, self.dtype)
        if self.ema is not None:
            self.ema.module.to(self.device, self.dtype)
        self.memory_format = torch.channels_last if c.channels_last else torch.contiguous_format
        self.mixing = Mixing(c.mixup, c.cutmix)
        if c.channels_last:
            to_channels_last(self.model)
            if self.ema is not None:
                to_channels_last(self.ema.module)

    def _build_optimisation(self) -> None:
        c = self.config
        # resolved() filled these in from the recipe
        assert c.optimizer is not None and c.lr is not None and c.weight_decay is not None
        assert c.schedule is not None and c.warmup_epochs is not None
        groups = parameter_groups(self.model, c.weight_decay, c.backbone_lr_scale)
        fused = self.device.type in ("cpu", "cuda")
        self.optimizer = build_optimizer(c.optimizer, groups, c.lr, c.momentum, fused=fused)
        total = c.steps or (PROVISIONAL_STEPS if c.time_budget else 0)
        self.schedule = LRSchedule(
            c.lr,
            self.steps_per_epoch,
            c.epochs,
            c.schedule,
            c.warmup_epochs,
            c.lr_decay,
            total_steps=total,
            probe_steps=PROBE_STEPS if total else 0,
        )
        # A budgeted run's EMA averages over a tenth of it (unless --ema-decay is given).
        self.fit_ema = bool(total) and self.ema is not None and c.ema_decay == self._recipe_ema()
        if self.fit_ema and c.steps and self.ema is not None:
            self.ema.decay = fitted_ema_decay(c.steps)
        amp = c.amp
        if amp == "auto":
            amp = auto_amp(self.device.type, c.dtype)
        self.precision = {"off": c.dtype, "bf16": "bfloat16 autocast", "fp16": "float16 autocast"}[amp]
        self.amp_dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
        self.scaler = torch.amp.GradScaler(self.device.type) if self.amp_dtype == torch.float16 else None

    def _build_teacher(self) -> None:
        c = self.config
        self.teacher = None
        self.teacher_cache = None
        if not c.teacher:
            return
        self.teacher = load_teacher(c.teacher, c.teacher_weights, len(self.classes), self.classes).to(
            self.device, self.dtype
        )
        if c.channels_last:
            to_channels_last(self.teacher)
        loaded = getattr(self.teacher, "pretrained_cfg", None)
        self.teacher_norm = (
            (tuple(loaded.transform.mean), tuple(loaded.transform.std))
            if loaded is not None
            else (IMAGENET_MEAN, IMAGENET_STD)
        )
        if c.teacher_cache:
            names = [self.train_source.name_of(i) for i in self.train_indices]
            details = {"transform": self.transform.to_dict(), "seed": c.seed, "views": c.views}
            self.cache_key: str = fingerprint(self.teacher, names, details)
            # Opened (and created) with the run folder: nothing is written before that.

    def _wrap(self) -> nn.Module:
        if not self.env.distributed:
            return self.model
        ddp = nn.parallel.DistributedDataParallel
        # Synchronised statistics are already equal everywhere; local ones follow rank 0.
        # (torch 2.13 renamed broadcast_buffers to forward_sync_buffers.)
        name = (
            "forward_sync_buffers"
            if "forward_sync_buffers" in inspect.signature(ddp).parameters
            else "broadcast_buffers"
        )
        sync_buffers: dict[str, Any] = {name: not self.sync_bn}
        return ddp(
            self.model,
            device_ids=[self.device] if self.device.type == "cuda" else None,
            **sync_buffers,
        )

    # ----------------------------------------------------------------- state
    def _state(self) -> dict:
        return {
            "config": self.config.stored(self.out),
            "classes": list(self.classes),
            "data_listing": self.data_listing,
            # How to rebuild the network (with what weights from a tag or file fixed).
            "model_name": self.model_name,
            "model_kwargs": self.model_kwargs,
            "num_classes": len(self.classes),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "rng": rng_state(),
            "progress": {
                "epoch": self.epoch,
                "batch": self.batch_in_epoch,
                "step": self.step,
                "sampler_epoch": self.sampler.epoch,
                "elapsed": self.elapsed,
                "spent": self.spent(),
                "budget_log": dict(self.budget_log),
                "not_learning_checked": self.not_learning_checked,
                "records": self.metrics.count if self.metrics else self.records_written,
                "epoch_sums": list(self.epoch_sums),
                "interval_sums": list(self.interval_sums),
            },
        }

    def _restore(self, state: dict) -> None:
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as error:
            raise ValueError(f"{self.out / LATEST} does not fit this run's model: {error}") from None
        self.schedule.load_state_dict(state["schedule"])
        self.schedule.epochs = self.config.epochs  # a run extended on resume
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        progress = state["progress"]
        self.epoch = int(progress["epoch"])
        self.batch_in_epoch = int(progress["batch"])
        self.step = int(progress["step"])
        self.elapsed = float(progress["elapsed"])
        # Time spent before the last checkpoint counts; time after it (redone now) and
        # time the run lay dead do not.
        self.spent_before = float(progress.get("spent", self.elapsed))
        self.budget_log = {k: float(v) for k, v in progress.get("budget_log", {}).items()}
        self.not_learning_checked = bool(progress.get("not_learning_checked", False))
        self.records_written = int(progress["records"])
        self.epoch_sums = [float(x) for x in progress["epoch_sums"]]
        self.interval_sums = [float(x) for x in progress["interval_sums"]]

    def save(self) -> None:
        # A finite gradient times a huge learning rate can still overflow the weights:
        # such a state is never saved over the last good one.
        for name, module in (("weights", self.model), ("EMA weights", self.ema.module if self.ema else None)):
            if module is not None and not all(
                bool(torch.isfinite(t).all()) for t in module.state_dict().values() if t.is_floating_point()
            ):
                raise self._diverged(name, math.nan, after=True)
        if self.env.is_main:
            if self.teacher_cache is not None:
                self.teacher_cache.flush()
            save_checkpoint(self._state(), self.out / LATEST)
        self.saved_step = self.step

    def _diverged(self, what: str, value: float, after: bool = False) -> NonFiniteError:
        where = f"after step {self.step}" if after else f"at step {self.step + 1}"
        kept = (
            f"{self.out / LATEST} keeps the last good state (step {self.saved_step})"
            if self.saved_step is not None
            else "no checkpoint had been written yet"
        )
        return NonFiniteError(
            f"the {what} {'are not finite' if after else f'is not finite ({value})'} {where} "
            f"(epoch {self.epoch + 1}); "
            f"training stopped and {kept}. A lower --lr (now {self.config.lr:g}) or --clip-grad may help"
        )

    # ----------------------------------------------------------------- steps
    def _recipe_ema(self) -> float:
        return recipe_defaults(self.config.recipe, self.config.batch_size)["ema_decay"]

    # ----------------------------------------------------------------- budget
    @property
    def budgeted(self) -> bool:
        """A run whose length is set in steps (a time budget or ``--steps``), not epochs."""
        return bool(self.schedule.total_steps)

    @property
    def planning(self) -> bool:
        """A budgeted run still measuring its throughput."""
        return self.schedule.total_steps == PROVISIONAL_STEPS

    @property
    def total_epochs(self) -> int:
        return math.ceil(self.schedule.total / self.steps_per_epoch)

    def spent(self) -> float:
        """Seconds of the budget spent: this process's and the run's earlier ones'."""
        return self.spent_before + time.perf_counter() - self.session_start

    def _plan_budget(self, seconds_per_step: float, again: bool = False) -> None:
        """Fit the run's length to what is left of the budget at ``seconds_per_step``, a
        step at the final resolution (``again``: a run that already planned once and is
        off its pace)."""
        c = self.config
        assert c.time_budget is not None
        if again:
            evaluation = self.budget_log["reserved_evaluation_s"]
        else:  # the model and its EMA on the validation images, one batch timed now
            val_images = len(self.val_indices)
            evaluation = val_images * self._eval_seconds_per_image() * (2 if self.ema is not None else 1)
        finish = 2.0 + 0.01 * c.time_budget  # writing the weights and the last checkpoint
        left = c.time_budget - self.spent() - evaluation - finish
        steps = steps_fitting(self.step, left, seconds_per_step, c.start_resolution, c.resolution)
        # Every process runs rank 0's plan.
        steps = int(distributed.all_reduce_sum(self.env, [float(steps if self.env.is_main else 0)])[0])
        self.schedule.total_steps = steps
        if self.fit_ema:
            assert self.ema is not None
            self.ema.decay = fitted_ema_decay(steps)
        if again:
            self.budget_log.update(
                {
                    "replans": self.budget_log.get("replans", 0.0) + 1,
                    "last_replan_at_step": self.step,
                    "last_replan_images_per_s": c.batch_size / seconds_per_step,
                }
            )
            if self.env.is_main and c.progress:
                tqdm.write(
                    f"time budget: {c.batch_size / seconds_per_step:.1f} img/s since the last check, "
                    f"the run planned again to {steps} steps"
                )
            return
        self.budget_log.update(
            {
                "planned_at_step": self.step,
                "seconds_per_step": seconds_per_step,
                "images_per_s": c.batch_size / seconds_per_step,
                "reserved_evaluation_s": evaluation,
                "reserved_finish_s": finish,
            }
        )
        if self.env.is_main and c.progress:
            tqdm.write(
                f"time budget {c.time_budget:g} s: {c.batch_size / seconds_per_step:.1f} img/s measured, "
                f"{steps} steps ({steps / self.steps_per_epoch:.1f} epochs), warm-up "
                f"{self.schedule.warmup_steps} steps"
                + (f", EMA decay {self.ema.decay:.4f}" if self.ema is not None else "")
            )

    def _keep_pace(self) -> bool:
        """After each of PACE_CHECKS parts of a planned run: plan again if the pace since
        the last check would end it off its budget (by more than PACE_DRIFT of it).
        Returns whether it planned again. Rank 0 decides for all processes."""
        c = self.config
        assert c.time_budget is not None
        if self.step < self.schedule.warmup_steps:
            return False
        if self.step - self.pace_step < max(1, self.schedule.total // PACE_CHECKS):
            return False
        now = time.perf_counter()
        seconds_per_step = (now - self.pace_time) / self._work(self.pace_step, self.step)
        self.pace_time, self.pace_step = now, self.step
        log = self.budget_log
        reserved = log.get("reserved_evaluation_s", 0.0) + log.get("reserved_finish_s", 0.0)
        end = self.spent() + self._work(self.step, self.schedule.total) * seconds_per_step + reserved
        off = abs(end - c.time_budget) > PACE_DRIFT * c.time_budget
        if not distributed.all_reduce_sum(self.env, [float(off and self.env.is_main)])[0]:
            return False
        self.schedule.fixed_warmup_steps = self.schedule.warmup_steps
        self._plan_budget(seconds_per_step, again=True)
        return True

    def resolution_at(self, step: int) -> int:
        """The training resolution at ``step`` (progressive resizing: growing from
        ``start_resolution`` to ``resolution``; a budgeted run probes at the start size)."""
        c = self.config
        total = self.schedule.total
        return int(progressive_resolutions(np.array([step]), total, c.start_resolution, c.resolution)[0])

    def _work(self, first: int, last: int) -> float:
        """Steps ``first`` .. ``last - 1`` counted in steps at the final resolution."""
        c = self.config
        return resized_cost(first, last, self.schedule.total, c.start_resolution, c.resolution)

    def _probe_done(self, probe_start: float, steps: int) -> bool:
        """Whether the throughput has been measured long enough: after PROBE_STEPS, or
        fewer slow ones that took PROBE_FRACTION of the budget. Rank 0 decides for all
        processes (they must plan at the same step)."""
        done = steps >= PROBE_STEPS or (
            time.perf_counter() - probe_start >= PROBE_FRACTION * (self.config.time_budget or 0)
        )
        return bool(distributed.all_reduce_sum(self.env, [float(done and self.env.is_main)])[0])

    @torch.no_grad()
    def _eval_seconds_per_image(self) -> float:
        """Seconds per image of an evaluation forward pass, timed on one validation batch
        (0 without validation data). Evaluation mode changes no state of the run."""
        if self.val_loader is None:
            return 0.0
        batch = next(iter(self.val_loader))
        if not len(batch):
            return 0.0
        images = batch.images.to(self.device, self.dtype).contiguous(memory_format=self.memory_format)
        self.model.eval()
        try:
            started = time.perf_counter()
            with self._autocast():
                self.model(images)
            took = time.perf_counter() - started
        finally:
            set_train_mode(self.model, self.config.freeze_bn, self.config.freeze_backbone)
        return took / len(batch)

    def _check_learning(self, interval_loss: float) -> None:
        """Warn once when the loss after the warm-up is still ln C (constant logits)."""
        if self.not_learning_checked or self.step < self.schedule.warmup_steps + max(
            10, self.steps_per_epoch // 2
        ):
            return
        self.not_learning_checked = True
        chance = math.log(len(self.classes))
        if abs(interval_loss - chance) < 0.01 * chance:
            warnings.warn(
                f"the training loss is {interval_loss:.4f} after {self.step} steps, the loss of "
                f"constant logits (ln {len(self.classes)} = {chance:.4f}): {self.config.model} is not "
                f"learning. A lower --lr (now {self.config.lr:g}) or a longer --warmup-epochs may help",
                NotLearningWarning,
                stacklevel=2,
            )

    def _teacher_logits(self, batch: Batch, images: Tensor) -> Tensor:
        assert self.teacher is not None
        view = self.sampler.view_of(self.epoch)
        if self.teacher_cache is not None:
            cached = self.teacher_cache.lookup(view, batch.indices)
            if cached is not None:
                return cached.to(self.device)
        with torch.no_grad(), self._autocast():
            inputs = renormalise(images, self.transform.mean, self.transform.std, *self.teacher_norm)
            logits = self.teacher(inputs).to(self.dtype)
        if not bool(torch.isfinite(logits).all()):
            raise NonFiniteError(
                f"the teacher {self.config.teacher} gives logits that are not finite numbers at step "
                f"{self.step + 1} (epoch {self.epoch + 1}); check its weights"
            )
        if self.teacher_cache is not None:
            self.teacher_cache.store(view, batch.indices, logits)
        return logits

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def _warn_skipped(self, messages: list[str]) -> None:
        for message in messages:
            if message not in self.warned:
                self.warned.add(message)
                warnings.warn(f"skipping {message}", SkippedImageWarning, stacklevel=3)

    def train_step(self, batch: Batch) -> tuple[float, float, float]:
        """One optimiser step; returns the global (loss sum, correct, images) of the batch."""
        c = self.config
        assert c.label_smoothing is not None  # resolved() filled it in from the recipe
        self._warn_skipped(batch.skipped)
        lr = self.schedule.apply(self.optimizer)
        images = batch.images.to(self.device, self.dtype, non_blocking=True)
        images = images.contiguous(memory_format=self.memory_format)
        labels = batch.labels.to(self.device, non_blocking=True)
        teacher_logits = (
            self._teacher_logits(batch, images) if self.teacher is not None and len(batch) else None
        )
        size = self.resolution_at(self.step)
        if len(batch) and size != images.shape[-1]:  # progressive resizing (the teacher saw full size)
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True)
        partner, lam = None, 1.0
        if self.mixing.on and len(batch):
            images, partner, lam = self.mixing.mix(images, c.seed, self.step, self.env.rank)
        set_dropout_keys(self.model, sample_keys(c.seed, self.step, batch.indices))
        with self._autocast():
            logits = self.ddp(images) if len(batch) else None
        set_dropout_keys(self.model, None)
        if logits is None:
            per_image = torch.zeros(0, device=self.device)
            correct = 0.0
        else:
            logits = logits.to(self.dtype)  # mixed precision: the loss in full precision
            if teacher_logits is not None:
                per_image = distillation_loss(
                    logits, teacher_logits, labels, c.distill_alpha, c.distill_temperature, c.label_smoothing
                )
            else:
                per_image = F.cross_entropy(
                    logits, labels, reduction="none", label_smoothing=c.label_smoothing
                )
            if partner is not None:
                partner_labels = labels[partner]
                per_image = lam * per_image + (1 - lam) * F.cross_entropy(
                    logits, partner_labels, reduction="none", label_smoothing=c.label_smoothing
                )
                if lam < 0.5:  # accuracy against the label with the larger share
                    labels = partner_labels
            correct = float((logits.argmax(1) == labels).sum())
        loss_sum = float(per_image.detach().sum())
        total_loss, total_correct, total_images = distributed.all_reduce_sum(
            self.env, [loss_sum, correct, float(len(batch))]
        )
        if not math.isfinite(total_loss):
            raise self._diverged("loss", total_loss)
        self.optimizer.zero_grad(set_to_none=True)
        if total_images > 0:
            # A sum over this process's images over the global count: the average over
            # the global batch once DDP has averaged the processes' gradients.
            loss = per_image.sum() * (self.env.world_size / total_images)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.optimizer)
            else:
                loss.backward()
            if c.clip_grad:
                norm = nn.utils.clip_grad_norm_(self.model.parameters(), c.clip_grad)
            elif self.scaler is None:
                grads = [p.grad for p in self.model.parameters() if p.grad is not None]
                norm = nn.utils.get_total_norm(grads) if grads else torch.zeros(())
            # The fp16 gradient scaler skips steps with overflowing gradients by design.
            if self.scaler is None and not math.isfinite(float(norm)):
                raise self._diverged("gradient norm", float(norm))
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.model)
        self.schedule.advance()
        self.step += 1
        self.last_lr = lr
        return total_loss, total_correct, total_images

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Loss, top-1 and top-5 (percent) on the validation images, over all processes."""
        model.eval()
        sums = [0.0, 0.0, 0.0, 0.0]  # loss, top-1 hits, top-5 hits, images
        assert self.val_loader is not None  # called only for a run with validation images
        for batch in self.val_loader:
            self._warn_skipped(batch.skipped)
            if not len(batch):
                continue
            images = batch.images.to(self.device, self.dtype).contiguous(memory_format=self.memory_format)
            labels = batch.labels.to(self.device)
            with self._autocast():
                logits = model(images).to(self.dtype)
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            sums[0] += float(F.cross_entropy(logits, labels, reduction="sum"))
            sums[1] += float((top[:, 0] == labels).sum())
            sums[2] += float((top == labels[:, None]).any(dim=1).sum())
            sums[3] += len(batch)
        loss, top1, top5, n = distributed.all_reduce_sum(self.env, sums)
        if n == 0:
            raise ValueError("no readable validation images")
        return {"loss": loss / n, "top1": 100.0 * top1 / n, "top5": 100.0 * top5 / n}

    # ----------------------------------------------------------------- loop
    def _cache(self) -> None:
        """Decode the images once into the run's cache (rank 0 makes it, the rest read it)."""
        c = self.config
        if not c.cache:
            return
        started = time.perf_counter()
        folder = cache_folder("images")
        for rank_turn in (True, False):
            if self.env.is_main == rank_turn:
                self.train_source, _ = build_cache(
                    self.train_source, self.train_indices, cache_side(c.resolution), folder, "train"
                )
                if self.val_source is not None:
                    self.val_source, _ = build_cache(
                        self.val_source, self.val_indices, self.eval_transform.resize, folder, "val"
                    )
            distributed.barrier(self.env)
        self.budget_log["caching_s"] = self.budget_log.get("caching_s", 0.0) + time.perf_counter() - started

    def _loaders(self) -> None:
        c = self.config
        pin = self.device.type == "cuda"
        self._cache()
        self.train_loader = loader(
            AugmentedImages(self.train_source, self.transform, c.seed), self.sampler, c.workers, pin
        )
        self.val_loader = None
        if self.val_source is not None:
            mine = self.val_indices[self.env.rank :: self.env.world_size]
            local = max(1, c.batch_size // self.env.world_size)
            batches = [mine[i : i + local] for i in range(0, len(mine), local)]
            self.val_loader = loader(
                EvalImages(self.val_source, self.eval_transform), batches, c.workers, pin
            )

    def _record(self, record: dict) -> None:
        if self.metrics is not None:
            self.metrics.write(record)

    def run(self) -> TrainResult:
        c = self.config
        self.budget_log["start_up_s"] = self.budget_log.get("start_up_s", 0.0) + (
            time.perf_counter() - self.session_start
        )
        self._loaders()
        main = self.env.is_main
        if main and c.progress:
            length = (
                f"a time budget of {c.time_budget:g} s"
                if self.planning
                else f"{self.schedule.total} steps"
                if self.budgeted
                else f"{c.epochs} epochs"
            )
            tqdm.write(
                f"training {self.model_name} on {len(self.train_indices)} images ({len(self.classes)} classes), "
                f"{self.steps_per_epoch} steps/epoch, {length}, global batch {c.batch_size} "
                f"over {self.env.world_size} process(es), {c.resolution}px, recipe {c.recipe} "
                f"({c.optimizer}, lr {c.lr:g}), {self.precision}"
                + (", channels-last" if c.channels_last else "")
                + (", cached images" if c.cache else "")
                + (f", resuming at epoch {self.epoch + 1} step {self.step}" if self.step else "")
            )
        last_lr = self.schedule.lr_at(self.step)
        probe_start: float | None = None
        probe_first = self.step
        self.pace_time, self.pace_step = time.perf_counter(), self.step
        training_start = time.perf_counter()
        epoch = self.epoch
        while epoch < self.total_epochs and self.step < self.schedule.total:
            self.epoch = epoch
            self.sampler.set_epoch(epoch, self.batch_in_epoch)
            set_train_mode(self.model, c.freeze_bn, c.freeze_backbone)
            started = time.perf_counter()
            interval = self.interval_sums
            interval_start = started
            bar = tqdm(
                total=min(self.steps_per_epoch, self.schedule.total - epoch * self.steps_per_epoch),
                initial=self.batch_in_epoch,
                desc=f"epoch {epoch + 1}" + ("" if self.planning else f"/{self.total_epochs}"),
                unit="step",
                disable=not (main and c.progress),
                dynamic_ncols=True,
                leave=True,
            )
            for batch in self.train_loader:
                sums = self.train_step(batch)
                last_lr = self.last_lr
                replanned = False
                if self.planning:
                    # The first two steps (allocation, caches warming) are not timed.
                    if self.step - probe_first == 2:
                        probe_start = time.perf_counter()
                    elif probe_start is not None and self._probe_done(probe_start, self.step - probe_first):
                        elapsed = time.perf_counter() - probe_start
                        self._plan_budget(elapsed / self._work(probe_first + 2, self.step))
                        self.pace_time, self.pace_step = time.perf_counter(), self.step
                        replanned = True
                elif c.time_budget is not None:
                    replanned = self._keep_pace()
                if replanned:  # the epoch's bar ends where the new plan does
                    bar.total = min(self.steps_per_epoch, self.schedule.total - epoch * self.steps_per_epoch)
                self.batch_in_epoch += 1
                for i in range(3):
                    interval[i] += sums[i]
                    self.epoch_sums[i] += sums[i]
                now = time.perf_counter()
                if self.epoch_sums[2]:
                    bar.set_postfix(
                        loss=f"{self.epoch_sums[0] / self.epoch_sums[2]:.4f}",
                        acc=f"{100 * self.epoch_sums[1] / self.epoch_sums[2]:.1f}%",
                        img_s=f"{interval[2] / max(now - interval_start, 1e-9):.1f}",
                        refresh=False,
                    )
                bar.update(1)
                if c.log_every and (
                    self.step % c.log_every == 0 or self.batch_in_epoch == self.steps_per_epoch
                ):
                    if interval[2]:
                        self._check_learning(interval[0] / interval[2])
                        self._record(
                            {
                                "kind": "step",
                                "step": self.step,
                                "epoch": epoch + 1,
                                "epoch_float": self.step / self.steps_per_epoch,
                                "lr": last_lr,
                                "loss": interval[0] / interval[2],
                                "accuracy": 100.0 * interval[1] / interval[2],
                                "images": int(interval[2]),
                                "images_per_s": interval[2] / max(now - interval_start, 1e-9),
                            }
                        )
                    interval[:] = [0.0, 0.0, 0.0]
                    interval_start = now
                if c.checkpoint_every and self.step % c.checkpoint_every == 0:
                    self.elapsed += time.perf_counter() - started
                    started = time.perf_counter()
                    self.save()
                if self.step >= self.schedule.total:
                    break
            bar.close()
            self._end_epoch(epoch, started, last_lr)
            epoch += 1
        self.budget_log["training_s"] = self.budget_log.get("training_s", 0.0) + (
            time.perf_counter() - training_start
        )
        return self._finish()

    def _end_epoch(self, epoch: int, started: float, lr: float) -> None:
        c = self.config
        if not self.epoch_sums[2]:
            raise ValueError(
                f"no training image of {c.data} could be read in epoch {epoch + 1}; nothing was learnt"
            )
        record: dict = {
            "kind": "epoch",
            "step": self.step,
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": self.epoch_sums[0] / self.epoch_sums[2] if self.epoch_sums[2] else None,
            "train_accuracy": 100.0 * self.epoch_sums[1] / self.epoch_sums[2] if self.epoch_sums[2] else None,
            "val_loss": None,
            "val_top1": None,
            "val_top5": None,
            "val_top1_ema": None,
        }
        if self.val_loader is not None and (not self.budgeted or self.step >= self.schedule.total):
            evaluation_start = time.perf_counter()
            result = self.evaluate(self.model)
            record.update(val_loss=result["loss"], val_top1=result["top1"], val_top5=result["top5"])
            if self.ema is not None:
                record["val_top1_ema"] = self.evaluate(self.ema.module)["top1"]
            if self.budgeted:
                self.budget_log["evaluation_s"] = time.perf_counter() - evaluation_start
        self.elapsed += time.perf_counter() - started
        record["wall_time"] = self.elapsed
        self._record(record)
        self.last_epoch_record = record
        if self.env.is_main and c.progress:
            parts = [f"epoch {epoch + 1}/{self.total_epochs}"]
            if record["train_loss"] is not None:
                parts.append(
                    f"train loss {record['train_loss']:.4f}, accuracy {record['train_accuracy']:.2f}%"
                )
            if record["val_top1"] is not None:
                parts.append(f"val top-1 {record['val_top1']:.2f}% (top-5 {record['val_top5']:.2f}%)")
            if record["val_top1_ema"] is not None:
                parts.append(f"EMA top-1 {record['val_top1_ema']:.2f}%")
            tqdm.write(", ".join(parts))
        self.epoch = epoch + 1
        self.batch_in_epoch = 0
        self.epoch_sums = [0.0, 0.0, 0.0]
        self.save()

    def _export(self, model: nn.Module, path: Path) -> Path:
        """The weights as a lightnets safetensors file (and its ``.json``), written whole."""
        from safetensors.torch import save as safetensors_bytes

        # A plain attribute, not a submodule: setattr keeps nn.Module's typed __setattr__ out of it.
        setattr(model, "pretrained_cfg", PretrainedConfig(str(self.out), self.eval_transform, self.classes))  # noqa: B010
        metadata = metadata_json(model, self.model_name, self.model_kwargs)
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        write_bytes(path, safetensors_bytes(state, metadata={METADATA_KEY: metadata}))
        write_text(path.with_suffix(".json"), metadata + "\n")
        return path

    def _finish(self) -> TrainResult:
        weights = None
        epochs = self.metrics.read() if self.metrics is not None else []
        epoch_records = [r for r in epochs if r["kind"] == "epoch"]
        last = epoch_records[-1] if epoch_records else (self.last_epoch_record or {})
        # The recommended model: the EMA when it scores higher on the validation images.
        recommended = "last"
        if self.ema is not None and last.get("val_top1_ema") is not None and last.get("val_top1") is not None:
            if last["val_top1_ema"] > last["val_top1"]:
                recommended = "ema"
        if self.env.is_main:
            if recommended == "ema":
                assert self.ema is not None
                weights = self._export(self.ema.module, self.out / WEIGHTS_FILE)
                self._export(self.model, self.out / LAST_WEIGHTS_FILE)
            else:
                weights = self._export(self.model, self.out / WEIGHTS_FILE)
            if self.ema is not None:
                self._export(self.ema.module, self.out / EMA_WEIGHTS_FILE)
            if epochs:
                plot_curves(epochs, self.out / PLOT, f"{self.model_name} {self.model_kwargs or ''}".strip())
            summary = {
                "model": self.model_name,
                "model_kwargs": self.model_kwargs,
                "classes": self.classes,
                "train_images": len(self.train_indices),
                "val_images": len(self.val_indices),
                "epochs": self.total_epochs,
                "steps": self.step,
                "processes": self.env.world_size,
                "wall_time": self.elapsed,
                "recommended": {
                    "file": WEIGHTS_FILE,
                    "holds": "the EMA of the weights" if recommended == "ema" else "the last weights",
                    "val_top1": last.get("val_top1_ema" if recommended == "ema" else "val_top1"),
                    "val_top1_last": last.get("val_top1"),
                    "val_top1_ema": last.get("val_top1_ema"),
                },
                "execution": {
                    "precision": self.precision,
                    "cpu_native_bf16": cpu_has_bf16(),
                    "channels_last": self.config.channels_last,
                    "optimizer_step": "fused" if self.device.type in ("cpu", "cuda") else "foreach",
                    "image_cache": self.config.cache,
                    "threads": torch.get_num_threads(),
                    "device": str(self.device),
                },
                "resolution": self.config.resolution,
                "start_resolution": self.config.start_resolution,
                "eval_resolution": self.eval_transform.size,
                "schedule": {
                    "total_steps": self.schedule.total,
                    "warmup_steps": self.schedule.warmup_steps,
                    "peak_lr": self.schedule.lr,
                    "kind": self.schedule.kind,
                    "ema_decay": self.ema.decay if self.ema is not None else None,
                    "replay": f"--steps {self.schedule.total}" if self.budgeted else None,
                    # A run that planned again mid-way ran its first part on the earlier
                    # plan's schedule; the replay runs the final plan from the start.
                    "replay_exact": not self.budget_log.get("replans"),
                },
                "budget": self._budget_summary(),
                "skipped_images": sorted(self.warned),
                "teacher_cache": (
                    {
                        "hits": self.teacher_cache.hits,
                        "misses": self.teacher_cache.misses,
                        "repaired": self.teacher_cache.repaired,
                    }
                    if self.teacher_cache is not None
                    else None
                ),
                "last_epoch": last,
            }
            write_json(self.out / SUMMARY, summary)
        distributed.barrier(self.env)
        return TrainResult(
            self.out,
            self.epoch,
            self.step,
            last.get("train_loss"),
            last.get("train_accuracy"),
            last.get("val_top1"),
            last.get("val_top1_ema"),
            self.elapsed,
            weights,
            recommended,
        )

    def _budget_summary(self) -> dict | None:
        """How a budgeted run spent its time (seconds, summed over its processes)."""
        if self.config.time_budget is None:
            return None
        spent = self.spent()
        log = self.budget_log
        parts = {
            "start_up_s": log.get("start_up_s", 0.0),
            "caching_s": log.get("caching_s", 0.0),
            "evaluation_s": log.get("evaluation_s", 0.0),
        }
        return {
            "budget_s": self.config.time_budget,
            "spent_s": spent,
            **parts,
            "training_s": spent - sum(parts.values()),
            "steps": self.step,
            **{k: v for k, v in log.items() if k not in parts and k != "training_s"},
        }


def result_dict(result: TrainResult) -> dict:
    data = asdict(result)
    data["out"] = str(result.out)
    data["weights"] = str(result.weights) if result.weights else None
    return data
