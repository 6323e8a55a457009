"""Knowledge distillation: a student learns from a teacher's softened outputs.

The loss mixes the usual cross-entropy on the labels with the Kullback-Leibler
divergence between the teacher's and the student's class distributions softened by a
temperature T (Hinton et al., 2015)::

    loss = (1 - alpha) * CE(student, label) + alpha * T^2 * KL(softmax(t / T) || softmax(s / T))

The T^2 keeps the soft term's gradients on the scale of the hard term's whatever T is.

Teacher logits can be cached on disk (:class:`TeacherCache`). The cache is exact: an
entry is the teacher's output for one image *in one augmentation view*, and the trainer
seeds augmentation by (seed, view, image), so a cached entry is what the teacher would
compute again. With ``views=K`` the views repeat every K epochs and the teacher runs only
in the first K; a second run with the same seed, data and teacher (another student, a
resumed run) reuses everything.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models import create_model
from ..weights.load import model_name_of_weights
from .checkpoint import load_checkpoint


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    alpha: float = 0.9,
    temperature: float = 4.0,
    label_smoothing: float = 0.0,
) -> Tensor:
    """Per-image distillation loss (shape ``(N,)``); ``alpha=0`` is plain cross-entropy."""
    hard = F.cross_entropy(student_logits, labels, reduction="none", label_smoothing=label_smoothing)
    if alpha == 0.0:
        return hard
    t = temperature
    # At least float32 (mixed precision gives half-precision logits), float64 kept.
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    teacher = F.log_softmax(teacher_logits.to(dtype) / t, dim=1)
    student = F.log_softmax(student_logits.to(dtype) / t, dim=1)
    soft = F.kl_div(student, teacher, reduction="none", log_target=True).sum(dim=1) * (t * t)
    return (1.0 - alpha) * hard + alpha * soft


def renormalise(
    images: Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    teacher_mean: tuple[float, ...],
    teacher_std: tuple[float, ...],
) -> Tensor:
    """Images normalised for the student, re-normalised as the teacher's weights expect."""
    if tuple(mean) == tuple(teacher_mean) and tuple(std) == tuple(teacher_std):
        return images

    def column(values):
        return torch.tensor(values, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)

    pixels = images * column(std) + column(mean)
    return (pixels - column(teacher_mean)) / column(teacher_std)


def load_teacher(spec: str, weights: str | None = None, num_classes: int | None = None) -> nn.Module:
    """A teacher from any of: a training run folder (its ``model.safetensors``), a lightnets
    weights file, a training checkpoint (``.pt``), or a registered model name with
    ``weights`` (tag or file). Returned in evaluation mode with gradients off."""
    path = Path(spec)
    if path.is_dir():
        path = path / "model.safetensors"
        if not path.is_file():
            raise ValueError(f"{spec} holds no model.safetensors (has the run finished?)")
    if path.is_file() and path.suffix == ".pt":
        state = load_checkpoint(path)
        kwargs = {**state["model_kwargs"], "num_classes": state["num_classes"]}
        model = create_model(state["model_name"], **kwargs)
        model.load_state_dict(state["model"])
    elif path.is_file():
        model = create_model(model_name_of_weights(str(path)), weights=str(path))
    else:
        model = create_model(spec, weights=weights, **({"num_classes": num_classes} if num_classes else {}))
    if num_classes is not None and model.num_classes != num_classes:
        raise ValueError(f"the teacher has {model.num_classes} classes; the student {num_classes}")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def fingerprint(teacher: nn.Module, sample_names: list[str], details: dict) -> str:
    """A digest of what determines the teacher's logits: its weights, the images and the
    augmentation (``details``: transform, seed, views ...)."""
    digest = hashlib.sha256()
    for name, value in teacher.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    digest.update("\n".join(sample_names).encode())
    digest.update(json.dumps(details, sort_keys=True, default=str).encode())
    return digest.hexdigest()


class TeacherCache:
    """Teacher logits on disk, one (images x classes) float32 array per augmentation view.

    Files live in ``folder/<fingerprint[:16]>/``, so caches of other teachers or data sit
    side by side instead of being mixed up. Each view is a memory-mapped array plus a
    byte per image saying whether its row is filled; processes of a distributed run fill
    disjoint rows of the same files.
    """

    def __init__(self, folder: str | Path, num_images: int, num_classes: int, key: str, create: bool = True):
        self.folder = Path(folder) / key[:16]
        self.num_images = num_images
        self.num_classes = num_classes
        self._views: dict[int, tuple[np.memmap, np.memmap]] = {}
        meta = {"fingerprint": key, "images": num_images, "classes": num_classes}
        meta_file = self.folder / "meta.json"
        if create:
            self.folder.mkdir(parents=True, exist_ok=True)
            if not meta_file.is_file():
                meta_file.write_text(json.dumps(meta, indent=2) + "\n")
        if meta_file.is_file() and json.loads(meta_file.read_text()) != meta:
            raise ValueError(f"{self.folder} holds a teacher cache for other data or another teacher")
        self.hits = 0
        self.misses = 0

    def _view(self, view: int, create: bool = True) -> tuple[np.memmap, np.memmap] | None:
        if view not in self._views:
            logits_file = self.folder / f"view{view:05d}.logits"
            done_file = self.folder / f"view{view:05d}.done"
            if not logits_file.is_file():
                if not create:
                    return None
                # Sized first, then filled: a reader never sees a short file.
                for path, nbytes in (
                    (logits_file, 4 * self.num_images * self.num_classes),
                    (done_file, self.num_images),
                ):
                    with open(path, "ab") as handle:
                        handle.truncate(nbytes)
            logits = np.memmap(logits_file, np.float32, "r+", shape=(self.num_images, self.num_classes))
            done = np.memmap(done_file, np.uint8, "r+", shape=(self.num_images,))
            self._views[view] = (logits, done)
        return self._views[view]

    def lookup(self, view: int, indices: list[int]) -> Tensor | None:
        """The cached logits of these images in this view, if every one is cached."""
        arrays = self._view(view)
        assert arrays is not None
        logits, done = arrays
        if not done[indices].all():
            self.misses += len(indices)
            return None
        self.hits += len(indices)
        return torch.from_numpy(np.array(logits[indices]))

    def store(self, view: int, indices: list[int], values: Tensor) -> None:
        arrays = self._view(view)
        assert arrays is not None
        logits, done = arrays
        # Row first, flag after: a row is never marked done before it is written.
        logits[indices] = values.detach().float().cpu().numpy()
        done[indices] = 1

    def flush(self) -> None:
        for logits, done in self._views.values():
            logits.flush()
            done.flush()
