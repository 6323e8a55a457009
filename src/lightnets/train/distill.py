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
resumed run) reuses everything. Every entry carries a checksum and is read back only if
it matches and holds finite numbers; a damaged entry (a file cut short, a crash between
writing an entry and its checksum) is recomputed, with a warning.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..files import OutputError, write_text
from ..weights.load import model_name_of_weights
from ..zoo import create_model
from .checkpoint import load_checkpoint


class TeacherCacheWarning(UserWarning):
    """Entries of the teacher-logit cache were damaged and are computed again."""


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


def load_teacher(
    spec: str,
    weights: str | None = None,
    num_classes: int | None = None,
    classes: list[str] | None = None,
) -> nn.Module:
    """A teacher from any of: a training run folder (its ``model.safetensors``), a lightnets
    weights file, a training checkpoint (``.pt``), or a registered model name with
    ``weights`` (tag or file). Returned in evaluation mode with gradients off.

    ``num_classes`` and ``classes`` (the student's class names, in label order) are
    checked against the teacher's: its logit ``i`` must mean the student's class ``i``.
    A teacher that names no classes (a bare model name) is checked by count only."""
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
        teacher_classes = state.get("classes")
    elif path.is_file():
        model = create_model(model_name_of_weights(str(path)), weights=str(path))
        teacher_classes = _categories(model)
    else:
        kwargs = {"num_classes": num_classes} if num_classes and not weights else {}
        model = create_model(spec, weights=weights, **kwargs)
        teacher_classes = _categories(model) if weights else None
    if num_classes is not None and model.num_classes != num_classes:
        raise ValueError(
            f"the teacher {spec} has {model.num_classes} classes; the student {num_classes}: "
            "a teacher must be trained on the student's classes"
        )
    if classes is not None and teacher_classes is not None and list(teacher_classes) != list(classes):
        pairs = [(t, s) for t, s in zip(teacher_classes, classes, strict=False) if t != s]
        example = f" (teacher {pairs[0][0]!r} where the data has {pairs[0][1]!r})" if pairs else ""
        raise ValueError(
            f"the teacher {spec} was trained on other classes than the student's data{example}; "
            "a teacher must be trained on the student's classes, in the same order"
        )
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _categories(model: nn.Module) -> list[str] | None:
    loaded = getattr(model, "pretrained_cfg", None)
    categories = getattr(loaded, "categories", None)
    return list(categories) if categories else None


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
    side by side instead of being mixed up. Each view is a memory-mapped array of logits
    (``view<v>.logits``) plus one checksum per image (``view<v>.sums``: 0 while the row is
    empty, else ``2**32 + crc32(row)``); processes of a distributed run fill disjoint rows
    of the same files. A row is used only if its checksum matches and its numbers are
    finite; anything else is a miss, and the row is computed and stored again.
    """

    def __init__(self, folder: str | Path, num_images: int, num_classes: int, key: str, create: bool = True):
        self.folder = Path(folder) / key[:16]
        self.num_images = num_images
        self.num_classes = num_classes
        self._views: dict[int, tuple[np.memmap, np.memmap]] = {}
        meta = {"fingerprint": key, "images": num_images, "classes": num_classes}
        meta_file = self.folder / "meta.json"
        stored = None
        if meta_file.is_file():
            try:
                stored = json.loads(meta_file.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                warnings.warn(f"{meta_file} is damaged; writing it again", TeacherCacheWarning, stacklevel=2)
        if stored is not None and stored != meta:
            raise ValueError(f"{self.folder} holds a teacher cache for other data or another teacher")
        if create and stored is None:
            write_text(meta_file, json.dumps(meta, indent=2) + "\n")
        self.hits = 0
        self.misses = 0
        self.repaired = 0  # damaged entries found (and computed again)

    def _sized(self, path: Path, nbytes: int, create: bool) -> bool:
        """Make ``path`` exactly ``nbytes`` long (new files are sized before they are
        filled, so a reader never maps a short file); False if it is missing and not created."""
        if path.is_file():
            size = path.stat().st_size
            if size == nbytes:
                return True
            warnings.warn(
                f"{path} has {size} bytes instead of {nbytes}; its damaged entries are computed again",
                TeacherCacheWarning,
                stacklevel=4,
            )
        elif not create:
            return False
        try:
            with open(path, "ab") as handle:
                handle.truncate(nbytes)
                if hasattr(os, "posix_fallocate") and nbytes:
                    # Claim the blocks now: a full disk is an error here, not a SIGBUS
                    # when a memory-mapped page is written back later.
                    try:
                        os.posix_fallocate(handle.fileno(), 0, nbytes)
                    except OSError as error:
                        if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                            raise
        except OSError as error:
            raise OutputError(f"{error.strerror or error} writing {path}", path, error.errno) from None
        return True

    def _view(self, view: int, create: bool = True) -> tuple[np.memmap, np.memmap] | None:
        if view not in self._views:
            logits_file = self.folder / f"view{view:05d}.logits"
            sums_file = self.folder / f"view{view:05d}.sums"
            if not self._sized(logits_file, 4 * self.num_images * self.num_classes, create):
                return None
            self._sized(sums_file, 8 * self.num_images, True)
            logits = np.memmap(logits_file, np.float32, "r+", shape=(self.num_images, self.num_classes))
            sums = np.memmap(sums_file, np.uint64, "r+", shape=(self.num_images,))
            self._views[view] = (logits, sums)
        return self._views[view]

    @staticmethod
    def _checksums(rows: np.ndarray) -> np.ndarray:
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        return np.array([(1 << 32) + zlib.crc32(row.tobytes()) for row in rows], dtype=np.uint64)

    def lookup(self, view: int, indices: list[int]) -> Tensor | None:
        """The cached logits of these images in this view, if every one is cached and intact."""
        arrays = self._view(view)
        assert arrays is not None
        logits, sums = arrays
        stored = np.asarray(sums[indices])
        if not stored.all():
            self.misses += len(indices)
            return None
        rows = np.array(logits[indices])
        bad = (self._checksums(rows) != stored) | ~np.isfinite(rows).all(axis=1)
        if bad.any():
            self.repaired += int(bad.sum())
            warnings.warn(
                f"{self.folder}: {int(bad.sum())} damaged teacher-logit entries in view {view} "
                "(checksum or non-finite values); computing them again",
                TeacherCacheWarning,
                stacklevel=2,
            )
            sums[np.asarray(indices)[bad]] = 0
            self.misses += len(indices)
            return None
        self.hits += len(indices)
        return torch.from_numpy(rows)

    def store(self, view: int, indices: list[int], values: Tensor) -> None:
        """Cache these rows (rows that are not finite are left uncached)."""
        arrays = self._view(view)
        assert arrays is not None
        logits, sums = arrays
        rows = values.detach().float().cpu().numpy()
        finite = np.isfinite(rows).all(axis=1)
        where = np.asarray(indices)[finite]
        rows = rows[finite]
        # Row first, checksum after: a row is never marked filled before it is written.
        logits[where] = rows
        sums[where] = self._checksums(rows)

    def flush(self) -> None:
        for logits, sums in self._views.values():
            logits.flush()
            sums.flush()
