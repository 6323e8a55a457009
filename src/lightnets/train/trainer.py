"""The training loop: one process or many, from scratch, fine-tuned or distilled.

A run is a :class:`~.config.TrainConfig` and an output folder. The folder receives
``config.json``, ``checkpoint.pt`` (every ``checkpoint_every`` steps and every epoch),
``metrics.jsonl`` / ``metrics.csv``, ``curves.png``, ``summary.json`` and the final
weights as lightnets safetensors files (``model.safetensors``, and
``model_ema.safetensors`` with an EMA), which ``create_model(name, weights=path)`` and
``lightnets eval --weights path`` load.

Why a resumed run ends with the same weights as an uninterrupted one: nothing random
is drawn from a stream whose position would have to be restored. The epoch order is
seeded by (seed, epoch), each image's augmentation by (seed, view, image) and its
dropout mask by (seed, step, image); the learning rate is a function of the step; the
checkpoint holds the optimiser, EMA and BatchNorm state and the position in the epoch.
(The random streams are saved and restored as well, for code that does use them.)

Why N processes compute what one process computes with the same global batch: every
process takes an equal slice of the same global batch; BatchNorm statistics are
synchronised over the global batch (:mod:`.sync_batchnorm`); dropout is keyed to the
image; the loss is a sum over images divided by the global image count (DDP averages
gradients over processes, so each process's sum is scaled by the process count).
"""

from __future__ import annotations

import inspect
import json
import random
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from ..data.train_transforms import IMAGENET_MEAN, IMAGENET_STD, TrainTransform
from ..models import create_model
from ..weights import PretrainedConfig
from ..weights.lightnets_format import write_safetensors
from ..weights.load import metadata_json
from . import distributed
from .checkpoint import (
    LATEST,
    load_checkpoint,
    remove_stale_temporaries,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .config import CONFIG_FILE, TrainConfig
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
from .recipes import LRSchedule, build_optimizer, parameter_groups
from .records import PLOT, MetricsLog, plot_curves
from .sync_batchnorm import convert_sync_batchnorm

SUMMARY = "summary.json"
WEIGHTS_FILE = "model.safetensors"
EMA_WEIGHTS_FILE = "model_ema.safetensors"


class SkippedImageWarning(UserWarning):
    """An image of the training or validation data could not be read and was left out."""


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


def train(config: TrainConfig, resume: bool = False) -> TrainResult:
    """Run (or with ``resume``, continue) the training ``config`` describes.

    Under ``torchrun`` every process calls this; rank 0 writes the files.
    """
    env = distributed.setup(config.device)
    try:
        return Trainer(config, env, resume).run()
    finally:
        distributed.cleanup(env)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """One run's state and loop; see the module docstring. Use :func:`train`."""

    def __init__(self, config: TrainConfig, env: distributed.DistEnv, resume: bool = False) -> None:
        self.env = env
        self.out = Path(config.out)
        config = self._check_folder(config.resolved(), resume)
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
        self.elapsed = 0.0
        self.records_written = 0
        self.epoch_sums = [0.0, 0.0, 0.0]  # loss sum, correct, images of the current epoch
        self.interval_sums = [0.0, 0.0, 0.0]  # the same since the last step record
        self.last_epoch_record: dict | None = None
        self.warned: set[str] = set()
        self.metrics = MetricsLog(self.out) if env.is_main else None
        checkpoint = self.out / LATEST
        if resume and checkpoint.is_file():
            self._restore(load_checkpoint(checkpoint))
        if self.metrics is not None:
            self.metrics.truncate(self.records_written)
        self.ddp = self._wrap()

    # ----------------------------------------------------------------- set-up
    def _check_folder(self, config: TrainConfig, resume: bool) -> TrainConfig:
        if resume:
            saved = TrainConfig.load(self.out).resolved()
            config = saved.resume_with({k: v for k, v in config.to_dict().items() if k != "out"})
            config.out = str(self.out)
        elif (self.out / CONFIG_FILE).is_file() or (self.out / LATEST).is_file():
            raise ValueError(
                f"{self.out} already holds a training run; continue it with --resume or pick another --out"
            )
        distributed.barrier(self.env)  # every process has looked before rank 0 writes
        if self.env.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.out)
            config.save(self.out)
        distributed.barrier(self.env)
        return config

    def _build_data(self) -> None:
        c = self.config
        # Decode JPEGs shrunk by powers of two while they stay twice the training side:
        # even the smallest random crops then keep their detail; huge photos decode fast.
        min_side = 2 * c.resolution
        self.train_source = open_source(c.data, "train", min_side)
        val_path = c.val_data or (c.data if has_split(c.data, "val") else None)
        self.val_source = open_source(val_path, "val", min_side) if val_path else None
        self.classes = list(self.train_source.classes)
        if self.val_source is not None and list(self.val_source.classes) != self.classes:
            raise ValueError(
                f"the validation classes ({len(self.val_source.classes)}) differ from the training classes"
            )
        self.train_indices = first_per_class(self.train_source, c.limit_per_class)
        self.val_indices = first_per_class(self.val_source, c.val_limit_per_class) if self.val_source else []
        self.sampler = ShardedBatches(
            self.train_indices, c.batch_size, c.seed, self.env.rank, self.env.world_size, c.views
        )
        self.steps_per_epoch = self.sampler.batches_per_epoch

    def _build_model(self) -> None:
        c = self.config
        num_classes = len(self.classes)
        self.model = create_model(c.model, weights=c.weights, num_classes=num_classes, **c.model_kwargs)
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
            mean=tuple(mean),
            std=tuple(std),
            channel_order=order,
        )
        self.eval_transform = self.transform.eval_transform()
        if c.freeze_backbone:
            freeze_backbone(self.model)
        self.model_name = self.model.model_name
        self.model_kwargs = dict(self.model.model_kwargs)
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
        if c.channels_last:
            self.model.to(memory_format=torch.channels_last)
            if self.ema is not None:
                self.ema.module.to(memory_format=torch.channels_last)

    def _build_optimisation(self) -> None:
        c = self.config
        groups = parameter_groups(self.model, c.weight_decay, c.backbone_lr_scale)
        self.optimizer = build_optimizer(c.optimizer, groups, c.lr, c.momentum)
        self.schedule = LRSchedule(
            c.lr, self.steps_per_epoch, c.epochs, c.schedule, c.warmup_epochs, c.lr_decay
        )
        amp = c.amp
        if amp == "auto":
            amp = "fp16" if self.device.type == "cuda" and c.dtype == "float32" else "off"
        self.amp_dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
        self.scaler = torch.amp.GradScaler(self.device.type) if self.amp_dtype == torch.float16 else None

    def _build_teacher(self) -> None:
        c = self.config
        self.teacher = None
        self.teacher_cache = None
        if not c.teacher:
            return
        self.teacher = load_teacher(c.teacher, c.teacher_weights, len(self.classes)).to(
            self.device, self.dtype
        )
        if c.channels_last:
            self.teacher.to(memory_format=torch.channels_last)
        loaded = getattr(self.teacher, "pretrained_cfg", None)
        self.teacher_norm = (
            (tuple(loaded.transform.mean), tuple(loaded.transform.std))
            if loaded is not None
            else (IMAGENET_MEAN, IMAGENET_STD)
        )
        if c.teacher_cache:
            names = [self.train_source.name_of(i) for i in self.train_indices]
            details = {"transform": self.transform.to_dict(), "seed": c.seed, "views": c.views}
            key = fingerprint(self.teacher, names, details)
            if self.env.is_main:
                TeacherCache(c.teacher_cache, len(self.train_source), len(self.classes), key)
            distributed.barrier(self.env)
            self.teacher_cache = TeacherCache(c.teacher_cache, len(self.train_source), len(self.classes), key)

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
        return ddp(
            self.model,
            device_ids=[self.device] if self.device.type == "cuda" else None,
            **{name: not self.sync_bn},
        )

    # ----------------------------------------------------------------- state
    def _state(self) -> dict:
        return {
            "config": self.config.to_dict(),
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
                "records": self.metrics.count if self.metrics else self.records_written,
                "epoch_sums": list(self.epoch_sums),
                "interval_sums": list(self.interval_sums),
            },
        }

    def _restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
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
        self.records_written = int(progress["records"])
        self.epoch_sums = [float(x) for x in progress["epoch_sums"]]
        self.interval_sums = [float(x) for x in progress["interval_sums"]]

    def save(self) -> None:
        if self.env.is_main:
            if self.teacher_cache is not None:
                self.teacher_cache.flush()
            save_checkpoint(self._state(), self.out / LATEST)

    # ----------------------------------------------------------------- steps
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
        self._warn_skipped(batch.skipped)
        lr = self.schedule.apply(self.optimizer)
        images = batch.images.to(self.device, self.dtype, non_blocking=True)
        images = images.contiguous(memory_format=self.memory_format)
        labels = batch.labels.to(self.device, non_blocking=True)
        teacher_logits = (
            self._teacher_logits(batch, images) if self.teacher is not None and len(batch) else None
        )
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
            correct = float((logits.argmax(1) == labels).sum())
        loss_sum = float(per_image.detach().sum())
        total_loss, total_correct, total_images = distributed.all_reduce_sum(
            self.env, [loss_sum, correct, float(len(batch))]
        )
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
                nn.utils.clip_grad_norm_(self.model.parameters(), c.clip_grad)
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
    def _loaders(self) -> None:
        c = self.config
        pin = self.device.type == "cuda"
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
        self._loaders()
        main = self.env.is_main
        if main and c.progress:
            tqdm.write(
                f"training {self.model_name} on {len(self.train_indices)} images ({len(self.classes)} classes), "
                f"{self.steps_per_epoch} steps/epoch x {c.epochs} epochs, global batch {c.batch_size} "
                f"over {self.env.world_size} process(es), {c.resolution}px, recipe {c.recipe} "
                f"({c.optimizer}, lr {c.lr:g})"
                + (f", resuming at epoch {self.epoch + 1} step {self.step}" if self.step else "")
            )
        last_lr = self.schedule.lr_at(self.step)
        for epoch in range(self.epoch, c.epochs):
            self.epoch = epoch
            self.sampler.set_epoch(epoch, self.batch_in_epoch)
            set_train_mode(self.model, c.freeze_bn, c.freeze_backbone)
            started = time.perf_counter()
            interval = self.interval_sums
            interval_start = started
            bar = tqdm(
                total=self.steps_per_epoch,
                initial=self.batch_in_epoch,
                desc=f"epoch {epoch + 1}/{c.epochs}",
                unit="step",
                disable=not (main and c.progress),
                dynamic_ncols=True,
                leave=True,
            )
            for batch in self.train_loader:
                sums = self.train_step(batch)
                last_lr = self.last_lr
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
            bar.close()
            self._end_epoch(epoch, started, last_lr)
        return self._finish()

    def _end_epoch(self, epoch: int, started: float, lr: float) -> None:
        c = self.config
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
        if self.val_loader is not None:
            result = self.evaluate(self.model)
            record.update(val_loss=result["loss"], val_top1=result["top1"], val_top5=result["top5"])
            if self.ema is not None:
                record["val_top1_ema"] = self.evaluate(self.ema.module)["top1"]
        self.elapsed += time.perf_counter() - started
        record["wall_time"] = self.elapsed
        self._record(record)
        self.last_epoch_record = record
        if self.env.is_main and c.progress:
            parts = [f"epoch {epoch + 1}/{c.epochs}"]
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
        model.pretrained_cfg = PretrainedConfig(str(self.out), self.eval_transform, self.classes)
        return write_safetensors(model, path, metadata_json(model, self.model_name, self.model_kwargs))

    def _finish(self) -> TrainResult:
        weights = None
        epochs = self.metrics.read() if self.metrics is not None else []
        epoch_records = [r for r in epochs if r["kind"] == "epoch"]
        last = epoch_records[-1] if epoch_records else (self.last_epoch_record or {})
        if self.env.is_main:
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
                "epochs": self.config.epochs,
                "steps": self.step,
                "processes": self.env.world_size,
                "wall_time": self.elapsed,
                "skipped_images": sorted(self.warned),
                "teacher_cache": (
                    {"hits": self.teacher_cache.hits, "misses": self.teacher_cache.misses}
                    if self.teacher_cache is not None
                    else None
                ),
                "last_epoch": last,
            }
            (self.out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
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
        )


def result_dict(result: TrainResult) -> dict:
    data = asdict(result)
    data["out"] = str(result.out)
    data["weights"] = str(result.weights) if result.weights else None
    return data
