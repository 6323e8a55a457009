"""Training a segmentation or detection model on a CPU under a time budget.

The classification trainer takes image-level labels; the task models share this loop
instead, each task saying how to build its model and data, what its loss is and how it
is scored (:class:`Task`; :mod:`.segtrain` and :mod:`.dettrain` are the two).

**Schedule.** AdamW, a linear warm-up over :data:`WARMUP_STEPS` steps, then a poly
decay ``lr * (1 - step / steps) ** 0.9`` to zero at the last step. With ``epochs`` the
number of steps is fixed; with a time budget the first :data:`PROBE_STEPS` steps
measure the machine's pace and the run plans as many steps as fit in what is left of the
budget, keeping the time the final evaluation will take (measured too). At the end of
an epoch, when the pace of the last :data:`PACE_STEPS` steps or more would end the run
more than :data:`PACE_DRIFT` of the budget early or late (the machine got busier or
freer), the run plans again from there (``summary.json`` counts the ``replans``). The
plan is saved with the checkpoints: a resumed run continues it.

**Fast where it is safe.** Channels-last tensors and bfloat16 autocast on CPUs with
native bfloat16 (``amp="auto"``; the losses are computed in float32); the decoded
photos are kept in memory, so after the first epoch a step is augmentation and model.

**Frozen layers.** The backbone's layers at strides up to ``freeze_stride`` stay frozen
(weights and BatchNorm statistics): they hold generic edges and colours, and on a CPU
their backward pass, at the largest maps, is a third of a step's time. With batches
smaller than :data:`SMALL_BATCH` every BatchNorm of the backbone keeps its ImageNet
statistics (``freeze_batchnorm``, default automatic): statistics of a few images are
too noisy to learn.

**Nothing is lost.** ``checkpoint.pt`` (model, optimiser, EMA, plan, random states,
the time spent) is written atomically at the end of an epoch, at most every
:data:`CHECKPOINT_SECONDS`; the data order and the augmentation are drawn from the seed
and the epoch, so ``resume=True`` continues from the last checkpoint, and a run of
``epochs`` ends with the weights an uninterrupted run would have (a budgeted run
continues its plan, adjusting it to the pace it meets). The folder is locked while a
run uses it, and a new run refuses a folder whose run is unfinished.

**Several processes.** Under ``torchrun --nproc_per_node=N -m lightnets train --task
...`` (gloo on CPUs) each process takes its share of every global batch (``batch_size``
images in all), the gradients are averaged and BatchNorm's statistics are the global
batch's; rank 0 plans the budget, writes the files and scores the model. Each process
draws its own augmentation, so the run is not the one-process run image for image.

**The model it recommends.** An exponential moving average of the weights (its decay
fitted to the planned length, as the classification trainer's) is scored beside the
weights themselves; ``model.safetensors`` is the better of the two by the task's score
(readable by ``create_model(..., weights=)`` and the task's command), the other is
``model_ema.safetensors`` or ``model_last.safetensors``. The run folder also gets
``metrics.jsonl`` (one record per step) and ``summary.json`` (the configuration, the
plan, how the time was spent, both models' scores, which one is recommended).
"""

from __future__ import annotations

import json
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from ..cpu import cpu_has_bf16, cpu_model
from ..files import append_line, write_json, write_text
from ..train import distributed
from ..train.checkpoint import LATEST, RunLock, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from ..train.distributed import DistEnv, all_reduce_sum
from ..train.ema import ModelEMA
from ..train.recipes import fitted_ema_decay
from ..train.sync_batchnorm import convert_sync_batchnorm
from ..train.trainer import EMA_WEIGHTS_FILE, LAST_WEIGHTS_FILE, WEIGHTS_FILE
from .task_model import save_task_weights

WARMUP_STEPS = 30
PROBE_STEPS = 10  # steps that measure the pace of a budgeted run (after one uncounted step)
SMALL_BATCH = 8  # batches smaller than this keep the backbone's BatchNorm statistics
CHECKPOINT_SECONDS = 60.0
EVAL_MARGIN = 1.5  # the final evaluation is planned at this many times its measured estimate
PACE_STEPS = 20  # steps a budgeted run times before it checks its pace again
PACE_DRIFT = 0.05  # of the budget: a finish further from it than this is planned again
AMP_CHOICES = ("auto", "bf16", "off")
RUN_FILE = "run.json"  # the task and the run's settings, for --resume


@dataclass
class TaskRun:
    """What a run trains, on what, and for how long (the task's own settings in ``options``)."""

    model: str
    data: str = ""
    out: str = "runs/task"
    resolution: int = 224  # the training input side (a crop's, or the square's)
    batch_size: int = 8
    minutes: float = 20.0  # the whole run's budget, unless ``epochs`` is given
    epochs: int | None = None
    lr: float = 1e-3
    weight_decay: float = 1e-4
    backbone_weights: str | None = None
    freeze_stride: int = 4  # backbone layers at strides up to this stay frozen (0: none)
    freeze_batchnorm: bool | None = None  # None: when batch_size < SMALL_BATCH
    amp: str = "auto"
    seed: int = 0
    threads: int | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)  # the task's settings

    def __post_init__(self) -> None:
        checks = {
            "resolution": self.resolution >= 16,
            "batch_size": self.batch_size >= 1,
            "minutes": self.minutes > 0,
            "epochs": self.epochs is None or self.epochs >= 1,
            "lr": self.lr > 0,
            "weight_decay": self.weight_decay >= 0,
            "freeze_stride": self.freeze_stride >= 0,
            "amp": self.amp in AMP_CHOICES,
        }
        wrong = [name for name, ok in checks.items() if not ok]
        if wrong:
            shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in wrong)
            raise ValueError(
                f"invalid training run: {shown} (need resolution >= 16 px, batch size and epochs >= 1, "
                f"minutes and lr > 0, weight decay and freeze stride >= 0, amp one of {', '.join(AMP_CHOICES)})"
            )

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON values (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))

    @property
    def frozen_batchnorm(self) -> bool:
        return self.batch_size < SMALL_BATCH if self.freeze_batchnorm is None else self.freeze_batchnorm


def load_task_run(out: str | Path) -> TaskRun:
    """The settings of the run in ``out`` (its ``run.json``)."""
    path = Path(out) / RUN_FILE
    if not path.is_file():
        raise ValueError(f"{path}: no segmentation or detection run to resume there")
    try:
        return TaskRun(**json.loads(path.read_text())["run"])
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(f"{path} is not a run's settings: {error}") from None


class Task(ABC):
    """What a task brings to the loop: its model and data, loss and score.

    :meth:`build` also records what the weights file says of the model (its name and
    arguments, the class names, the input size it is used at)."""

    name: str

    def __init__(self) -> None:
        self.model_name = ""
        self.model_kwargs: dict[str, Any] = {}
        self.classes: Sequence[str] = ()
        self.input_size = 0

    @abstractmethod
    def check(self, run: TaskRun) -> None:
        """``ValueError`` if the run is not one of this task (before anything is written)."""

    @abstractmethod
    def build(self, run: TaskRun) -> tuple[nn.Module, Any, Any]:
        """The model, the training data (its transform augmenting) and the validation data."""

    @abstractmethod
    def collate(self, batch: list[Any]) -> Any:
        """A batch of training items."""

    @abstractmethod
    def loss(
        self, model: nn.Module, batch: Any, autocast: AbstractContextManager
    ) -> tuple[Tensor, dict[str, float]]:
        """The batch's loss (float32) and the terms to log; the forward pass under ``autocast``."""

    @abstractmethod
    def evaluate(self, model: nn.Module, data: Any) -> dict[str, Any]:
        """The validation scores, as a JSON-ready dictionary."""

    @abstractmethod
    def score(self, scores: dict[str, Any]) -> float:
        """The number of :meth:`evaluate`'s scores that decides between two models (higher is better)."""

    def save(self, model: nn.Module, path: Path) -> Path:
        """The model's weights file (with its classes and input size)."""
        return save_task_weights(
            model, path, self.model_name, self.model_kwargs, self.classes, self.input_size
        )

    def images(self, batch: Any) -> int:
        """The number of images in a batch."""
        return len(batch[0])


def _freeze(model: nn.Module, run: TaskRun) -> list[nn.Module]:
    """Freeze the backbone's layers at strides <= ``run.freeze_stride``; returns the
    modules that must stay in evaluation mode (those layers, and with frozen BatchNorm
    every BatchNorm of the backbone)."""
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        return []
    frozen = [
        layer
        for layer, info in zip(backbone.features, backbone.layer_info, strict=True)
        if info.reduction <= run.freeze_stride
    ]
    for layer in frozen:
        layer.requires_grad_(False)
    if run.frozen_batchnorm:
        frozen += [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    return frozen


def _lr(run: TaskRun, step: int, steps: int | None) -> float:
    """The learning rate of step ``step`` (from 0) of ``steps`` (None: not planned yet)."""
    warmup = WARMUP_STEPS if steps is None else min(WARMUP_STEPS, max(1, steps // 5))
    if step < warmup:
        return run.lr * (step + 1) / warmup
    if steps is None:
        return run.lr
    return run.lr * max(0.0, 1 - step / steps) ** 0.9


class TaskTrainer:
    """One run of ``task`` as ``run`` describes (see the module docstring)."""

    def __init__(
        self,
        run: TaskRun,
        task: Task,
        resume: bool = False,
        started: float | None = None,
        progress: bool | None = None,
        env: DistEnv | None = None,
    ) -> None:
        self.run, self.task, self.progress = run, task, progress
        self.env = env or DistEnv()
        self.started = time.perf_counter() if started is None else started
        task.check(run)
        if run.batch_size % self.env.world_size:
            raise ValueError(
                f"--batch-size {run.batch_size} is the global batch: it must divide among the "
                f"{self.env.world_size} processes"
            )
        self.out = Path(run.out)
        self.lock: RunLock | None = None
        if self.env.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            self.lock = RunLock(self.out).acquire()
        try:
            self._set_up(resume)
        except BaseException:
            self.close()
            raise

    def _set_up(self, resume: bool) -> None:
        run, task = self.run, self.task
        if run.threads:
            torch.set_num_threads(run.threads)
        torch.manual_seed(run.seed)
        self.model, self.train_data, self.val_data = task.build(run)
        self.per_process = run.batch_size // self.env.world_size
        self.steps_per_epoch = len(self.train_data) // self.env.world_size // self.per_process
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"{len(self.train_data)} training images make no batch of {run.batch_size}: lower --batch-size"
            )
        self.step, self.epoch = 0, 0
        self.steps: int | None = run.epochs * self.steps_per_epoch if run.epochs else None
        # Of the plain model (it is only evaluated); the decay is fitted to the run's length
        # (a budgeted run's is set when it is planned).
        self.ema = ModelEMA(self.model, fitted_ema_decay(self.steps or 10**6))
        if self.env.distributed:
            # The global batch's statistics, as one process would compute them.
            convert_sync_batchnorm(self.model, torch.distributed.new_group(backend=self.env.backend))
        self.frozen = _freeze(self.model, run)
        self.bf16 = run.amp == "bf16" or (run.amp == "auto" and cpu_has_bf16())
        self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.optimiser = torch.optim.AdamW(parameters, lr=run.lr, weight_decay=run.weight_decay)
        self.trained = nn.parallel.DistributedDataParallel(self.model) if self.env.distributed else self.model
        self.pace: dict[str, Any] = {}
        self.spent = 0.0  # seconds of earlier sessions of this run
        self.log = self.out / "metrics.jsonl"
        if resume:
            self._restore()
            return
        if self.env.is_main:
            if (self.out / LATEST).exists():
                raise ValueError(
                    f"{self.out} holds an unfinished run (its {LATEST}): continue it with --resume, "
                    "or train into another --out"
                )
            self.log.unlink(missing_ok=True)
            write_json(self.out / RUN_FILE, {"task": task.name, "run": run.to_dict()})

    # -- checkpoints -------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "run": self.run.to_dict(),
            "model": self.model.state_dict(),
            "optimiser": self.optimiser.state_dict(),
            "ema": self.ema.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "steps": self.steps,
            "pace": self.pace,
            "spent": self.elapsed(),
            "rng": rng_state(),
        }

    def _restore(self) -> None:
        path = self.out / LATEST
        if not path.exists():
            raise ValueError(f"{path}: no checkpoint to resume from (the run ended, or never reached one)")
        state = load_checkpoint(path)
        saved, now = state["run"], self.run.to_dict()
        changed = sorted(k for k in now if k not in ("threads",) and saved.get(k) != now[k])
        if changed:
            shown = ", ".join(f"{k} {saved.get(k)!r} -> {now[k]!r}" for k in changed)
            raise ValueError(f"{path} is of another run ({shown}): resume with the run's own settings")
        self.model.load_state_dict(state["model"])
        self.optimiser.load_state_dict(state["optimiser"])
        self.ema.load_state_dict(state["ema"])
        self.step, self.epoch, self.steps = state["step"], state["epoch"], state["steps"]
        self.pace, self.spent = dict(state["pace"]), float(state["spent"])
        set_rng_state(state["rng"])
        if self.env.is_main and self.log.exists():  # the records of steps after the checkpoint are replayed
            kept = [
                line for line in self.log.read_text().splitlines() if json.loads(line)["step"] <= self.step
            ]
            write_text(self.log, "".join(f"{line}\n" for line in kept))

    def save_checkpoint(self) -> None:
        if self.env.is_main:
            save_checkpoint(self._state(), self.out / LATEST)

    # -- the loop ------------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.spent + time.perf_counter() - self.started

    def _autocast(self) -> AbstractContextManager:
        return torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else nullcontext()

    def _loader(self, epoch: int) -> torch.utils.data.DataLoader:
        """This process's batches of the epoch: order and augmentation drawn from the
        seed, the epoch (and the process's rank)."""
        reseed = getattr(getattr(self.train_data, "transform", None), "reseed", None)
        if reseed is not None:
            reseed(self.run.seed, epoch, self.env.rank)
        sampler: torch.utils.data.DistributedSampler = torch.utils.data.DistributedSampler(
            self.train_data,
            self.env.world_size,
            self.env.rank,
            shuffle=True,
            seed=self.run.seed,
            drop_last=True,
        )
        sampler.set_epoch(epoch)
        return torch.utils.data.DataLoader(
            self.train_data,
            batch_size=self.per_process,
            sampler=sampler,
            drop_last=True,
            collate_fn=self.task.collate,
        )

    def _train_step(self, batch: Any) -> dict[str, float]:
        lr = _lr(self.run, self.step, self.steps)
        for group in self.optimiser.param_groups:
            group["lr"] = lr
        self.model.train()
        for module in self.frozen:
            module.eval()
        loss, terms = self.task.loss(self.trained, batch, self._autocast())
        # The numbers logged (and checked) are the global batch's: the processes' mean.
        value, *term_values = (
            v / self.env.world_size for v in all_reduce_sum(self.env, [loss.item(), *terms.values()])
        )
        terms = dict(zip(terms, term_values, strict=True))
        if not math.isfinite(value):
            raise FloatingPointError(
                f"the loss became {value} at step {self.step + 1}: lower --lr (now {self.run.lr:g})"
            )
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.optimiser.step()
        self.ema.update(self.model)
        self.step += 1
        return {"lr": lr, "loss": round(value, 5), **{k: round(v, 5) for k, v in terms.items()}}

    def _plan(self, probe_start: float, batch: Any) -> None:
        """Fix the number of steps that fit in the budget (see the module docstring)."""
        per_step = (time.perf_counter() - probe_start) / (self.step - 1)
        evaluation_start = time.perf_counter()
        self.model.eval()
        with torch.no_grad(), self._autocast():
            self.model(batch[0].contiguous(memory_format=torch.channels_last))
        per_image = (time.perf_counter() - evaluation_start) / self.task.images(batch)
        evaluation = EVAL_MARGIN * per_image * len(self.val_data) * 2  # the weights and their EMA
        self.pace = {"seconds_per_step": round(per_step, 4), "evaluation_estimate_seconds": round(evaluation, 1),
                     "replans": 0}  # fmt: skip
        self._fit_steps(per_step)

    def _fit_steps(self, per_step: float) -> None:
        """The number of steps that, at ``per_step`` seconds each, end in the budget (rank 0's)."""
        left = self.run.minutes * 60.0 - self.elapsed() - self.pace["evaluation_estimate_seconds"]
        steps = max(self.step + 1, self.step + int(left / per_step))
        self.steps = int(all_reduce_sum(self.env, [steps if self.env.is_main else 0])[0])
        self.ema.decay = fitted_ema_decay(self.steps)

    def _keep_pace(self, since: float, steps: int) -> bool:
        """At an epoch's end: plan again when the pace of the last ``steps`` steps (from
        ``since``) would end the run more than :data:`PACE_DRIFT` of the budget away from it
        (the machine got busier or freer). Returns whether the pace was measured."""
        if steps < PACE_STEPS or self.steps is None:
            return False
        per_step = (time.perf_counter() - since) / steps
        budget = self.run.minutes * 60.0
        finish = (
            self.elapsed() + (self.steps - self.step) * per_step + self.pace["evaluation_estimate_seconds"]
        )
        drifted = abs(finish - budget) > PACE_DRIFT * budget
        if int(all_reduce_sum(self.env, [float(drifted and self.env.is_main)])[0]):
            self._fit_steps(per_step)
            self.pace["replans"] += 1
        return True

    def fit(self) -> None:
        shown = self.progress if self.env.is_main else False  # None: on a terminal
        progress = tqdm(total=self.steps, initial=self.step, desc="train", unit="step",
                        disable=None if shown is None else not shown)  # fmt: skip
        probe_start: float | None = None
        last_checkpoint = pace_since = time.perf_counter()
        pace_step = self.step
        try:
            while self.steps is None or self.step < self.steps:
                for batch in self._loader(self.epoch):
                    if self.steps is not None and self.step >= self.steps:
                        break
                    record = self._train_step(batch)
                    if self.env.is_main:
                        append_line(self.log, json.dumps(
                            {"step": self.step, "epoch": self.epoch, "seconds": round(self.elapsed(), 2), **record}
                        ))  # fmt: skip
                    progress.update()
                    progress.set_postfix(loss=f"{record['loss']:.3f}", refresh=False)
                    if self.steps is None:  # a budgeted run: the first step is uncounted
                        if self.step == 1:
                            probe_start = time.perf_counter()
                        elif probe_start is not None and self.step == PROBE_STEPS + 1:
                            self._plan(probe_start, batch)
                            progress.total = self.steps
                            pace_since, pace_step = time.perf_counter(), self.step
                self.epoch += 1
                if self.pace and self._keep_pace(pace_since, self.step - pace_step):
                    pace_since, pace_step = time.perf_counter(), self.step
                    progress.total = self.steps
                if self.steps is not None and time.perf_counter() - last_checkpoint >= CHECKPOINT_SECONDS:
                    self.save_checkpoint()
                    last_checkpoint = time.perf_counter()
        finally:
            progress.close()

    def finish(self) -> dict[str, Any] | None:
        """Rank 0 saves, scores and summarises the run (the other processes return None)."""
        if not self.env.is_main:
            return None
        train_seconds = self.elapsed()
        evaluation_start = time.perf_counter()
        last = self.task.evaluate(self.model, self.val_data)
        average = self.task.evaluate(self.ema.module, self.val_data)
        evaluation = time.perf_counter() - evaluation_start
        recommended = "ema" if self.task.score(average) > self.task.score(last) else "last"
        chosen, other = (
            (self.ema.module, self.model) if recommended == "ema" else (self.model, self.ema.module)
        )
        weights = self.task.save(chosen, self.out / WEIGHTS_FILE)
        self.task.save(other, self.out / (LAST_WEIGHTS_FILE if recommended == "ema" else EMA_WEIGHTS_FILE))
        summary = {
            "task": self.task.name,
            "run": asdict(self.run),
            "machine": {
                "cpu": cpu_model(),
                "threads": torch.get_num_threads(),
                "processes": self.env.world_size,
                "bf16": self.bf16,
            },
            "train_images": len(self.train_data),
            "val_images": len(self.val_data),
            "steps": self.step,
            "epochs": round(self.step * self.run.batch_size / len(self.train_data), 2),
            "plan": self.pace or {"epochs": self.run.epochs},
            "seconds": {
                "training": round(train_seconds, 1),
                "evaluation": round(evaluation, 1),
                "total": round(self.elapsed(), 1),
            },
            "recommended": recommended,
            "val": average if recommended == "ema" else last,
            "val_last": last,
            "val_ema": average,
            "weights": str(weights),
        }
        write_json(self.out / "summary.json", summary)
        (self.out / LATEST).unlink(missing_ok=True)  # the run is over: nothing to resume
        return summary

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()


def train_task(
    run: TaskRun,
    task: Task,
    resume: bool = False,
    started: float | None = None,
    progress: bool | None = None,
) -> dict[str, Any] | None:
    """Train ``task`` as ``run`` says; returns the run's summary (also in ``summary.json``).

    ``started`` is when the budget began (``time.perf_counter()``; default now), so a
    command counts its own start-up; ``progress`` shows a progress bar (None: on a
    terminal). Under torchrun the processes share the run (``run.batch_size`` is the
    global batch) and rank 0 returns the summary, the others None."""
    env = distributed.setup("cpu")
    try:
        trainer = TaskTrainer(run, task, resume, started, progress, env)
        try:
            trainer.fit()
            summary = trainer.finish()
        finally:
            trainer.close()
        distributed.barrier(env)
        return summary
    finally:
        distributed.cleanup(env)
