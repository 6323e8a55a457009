"""Recovery after compression: distillation from the uncompressed model on available images.

ImageNet's training set is not at hand, so a pruned or weight-shared network recovers by
matching the outputs of the model it came from (the teacher) on whatever images there
are: unlabelled folders, another data set's training images. No labels are used: the
loss is :func:`lightnets.train.distill.distillation_loss` with ``alpha = 1`` (only the
temperature-softened KL to the teacher). The teacher's logits go through the training
stage's :class:`~lightnets.train.distill.TeacherCache` (one view per flip), so each image
and view costs the teacher one forward pass however many passes recovery makes.

Images are prepared as the model's evaluation transform prepares them (resize, centre
crop, normalise), flipped left-right in every second pass.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from ..data.images import UnreadableImage, is_image_file, load_image
from ..data.transforms import EvalTransform
from ..train.distill import TeacherCache, distillation_loss, fingerprint

__all__ = ["RecoveryImages", "agreement", "logits_of", "recover", "recovery_images"]

MAX_IMAGES = 1_000_000


def recovery_images(folders: str | Path | Iterable[str | Path], limit: int | None = None) -> list[Path]:
    """The image files under ``folders`` (sorted, recursive); ``ValueError`` naming a
    folder that is missing or holds no images."""
    if isinstance(folders, str | Path):
        folders = [folders]
    found: list[Path] = []
    for folder in folders:
        root = Path(folder)
        if not root.is_dir():
            raise ValueError(f"recovery data {root}: no such folder")
        images = sorted(p for p in root.rglob("*") if p.is_file() and is_image_file(p))
        if not images:
            raise ValueError(f"recovery data {root} holds no images")
        found += images
        if len(found) > MAX_IMAGES:
            raise ValueError(f"more than {MAX_IMAGES:,} recovery images; give fewer folders")
    if limit is not None:
        if limit < 1:
            raise ValueError(f"the number of recovery images must be at least 1, got {limit}")
        # Every k-th image, so all folders and classes are represented.
        step = max(1, len(found) // limit)
        found = found[::step][:limit]
    return found


@dataclass
class RecoveryImages(torch.utils.data.Dataset):
    """Images through an evaluation transform; item ``(tensor, index)`` or ``None`` if unreadable."""

    paths: Sequence[Path]
    transform: EvalTransform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor, int] | None:
        try:
            image = load_image(self.paths[index], self.transform.resize)
        except UnreadableImage:
            return None
        return self.transform(image), index


def _collate(batch: list) -> tuple[Tensor, Tensor] | None:
    kept = [b for b in batch if b is not None]
    if not kept:
        return None
    return torch.stack([b[0] for b in kept]), torch.tensor([b[1] for b in kept])


def load_batches(
    paths: Sequence[Path],
    transform: EvalTransform,
    batch_size: int = 32,
    progress: bool = False,
    desc: str = "images",
) -> list[Tensor]:
    """Every image of ``paths`` as normalised batches, held in memory (for scans)."""
    loader = torch.utils.data.DataLoader(
        RecoveryImages(list(paths), transform), batch_size=batch_size, collate_fn=_collate
    )
    return [b[0] for b in tqdm(loader, desc=desc, unit="batch", disable=not progress) if b is not None]


@torch.no_grad()
def logits_of(model: nn.Module, batches: Sequence[Tensor]) -> Tensor:
    """The model's logits for every image of ``batches``, concatenated."""
    model.eval()
    return torch.cat([model(b) for b in batches])


@torch.no_grad()
def agreement(model: nn.Module, batches: Sequence[Tensor], reference: Tensor) -> float:
    """The fraction of images whose top-1 class is ``reference``'s top-1 (logits or classes)."""
    predicted = logits_of(model, batches).argmax(dim=1)
    wanted = reference.argmax(dim=1) if reference.dim() == 2 else reference
    return float((predicted == wanted).float().mean())


def recover(
    student: nn.Module,
    teacher: nn.Module,
    paths: Sequence[Path],
    transform: EvalTransform,
    steps: int,
    batch_size: int = 32,
    lr: float = 1e-4,
    temperature: float = 2.0,
    cache_dir: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
    desc: str = "recovery",
) -> list[float]:
    """Fine-tune ``student`` for ``steps`` steps to match ``teacher``; returns the losses.

    Only the student's trainable parameters move (with pruning masks and shared-weight
    parametrisations in place, masked weights stay zero and codes stay fixed). Adam with
    a cosine-decaying learning rate. ``cache_dir`` keeps the teacher's logits on disk
    (a temporary folder when ``None``).
    """
    if steps < 0:
        raise ValueError(f"recovery steps must be at least 0, got {steps}")
    if not paths:
        raise ValueError("no recovery images")
    if steps == 0:
        return []
    params = [p for p in student.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(params, lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    teacher.eval()
    dataset = RecoveryImages(list(paths), transform)
    num_classes = int(getattr(teacher, "num_classes", 0)) or None
    with tempfile.TemporaryDirectory(prefix="lightnets-recovery-") as scratch:
        folder = Path(cache_dir) if cache_dir is not None else Path(scratch)
        cache = None
        if num_classes:
            key = fingerprint(
                teacher, [str(p) for p in paths], {"transform": transform.to_dict(), "flip": True}
            )
            cache = TeacherCache(folder, len(paths), num_classes, key)
        losses: list[float] = []
        step = 0
        epoch = 0
        bar = tqdm(total=steps, desc=desc, unit="step", disable=not progress)
        while step < steps:
            generator = torch.Generator().manual_seed(seed + epoch)
            loader = torch.utils.data.DataLoader(
                dataset,
                batch_size=batch_size,
                shuffle=True,
                generator=generator,
                collate_fn=_collate,
                drop_last=True,
            )
            view = epoch % 2
            for batch in loader:
                if batch is None:
                    continue
                images, indices = batch
                if view:
                    images = images.flip(-1)
                cached = cache.lookup(view, indices.tolist()) if cache is not None else None
                if cached is None:
                    with torch.no_grad():
                        cached = teacher(images)
                    if cache is not None:
                        cache.store(view, indices.tolist(), cached)
                # Evaluation mode: BatchNorm is folded and dropout would only add noise to
                # matching a deterministic teacher.
                student.eval()
                logits = student(images)
                loss = distillation_loss(
                    logits, cached, cached.argmax(dim=1), alpha=1.0, temperature=temperature
                ).mean()
                if not torch.isfinite(loss):
                    raise ValueError(
                        f"recovery diverged at step {step} (loss {float(loss)}); lower the learning rate"
                    )
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                schedule.step()
                losses.append(float(loss.detach()))
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.4f}")
                if step >= steps:
                    break
            epoch += 1
        bar.close()
        if cache is not None:
            cache.flush()
    student.eval()
    return losses
