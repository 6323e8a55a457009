"""The training input pipeline: image sources, deterministic augmentation, sharded batches.

An image source is anything with ``len``, ``classes``, ``labels``, ``image(i)``,
``label_of(i)`` and ``name_of(i)``: a folder of class folders, a CIFAR-10 JPEG archive
or the CIFAR-10 python batches (:func:`open_source` picks by what the path holds).

Reproducibility rests on two rules. The order of an epoch is a permutation seeded by
(run seed, epoch), and each global batch is cut into equal contiguous slices, one per
process; so N processes see exactly the images one process would, and a resumed run
simply starts at batch k of the epoch. The augmentation of an image is seeded by (run
seed, view, image index), where the view is the epoch (or the epoch modulo ``views``);
so the pixels do not depend on which worker process or machine loads them.

A file that cannot be read is left out of its batch; the batch says which, and the
trainer warns once per file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..data.cifar10 import Cifar10Jpeg, Cifar10Python, find_batches_folder
from ..data.datasets import ImageDataset, open_dataset
from ..data.images import UnreadableImage, load_image
from ..data.train_transforms import TrainTransform
from ..data.transforms import EvalTransform


class ImageSource(Protocol):
    classes: list[str]
    labels: list[int]

    def __len__(self) -> int: ...
    def image(self, index: int) -> Image.Image: ...
    def label_of(self, index: int) -> int: ...
    def name_of(self, index: int) -> str: ...


class FolderSource:
    """Class folders (or a labels.csv set) as an :class:`ImageSource`, labels 0..K-1."""

    def __init__(self, dataset: ImageDataset, min_side: int | None = None) -> None:
        self.samples = dataset.samples
        self.classes = list(dataset.classes)
        self.labels = [label for _, label in self.samples]
        self.min_side = min_side

    def __len__(self) -> int:
        return len(self.samples)

    def image(self, index: int) -> Image.Image:
        return load_image(self.samples[index][0], self.min_side)

    def label_of(self, index: int) -> int:
        return self.labels[index]

    def name_of(self, index: int) -> str:
        return str(self.samples[index][0])


def open_source(path: str | Path, split: str = "train", min_side: int | None = None) -> ImageSource:
    """The images of ``split`` at ``path``: a CIFAR-10 ``.tar.gz`` of JPEGs, a folder of
    CIFAR-10 python batches, a folder with ``train/`` and ``val/`` (or ``test/``) class
    folders (Imagenette), or a folder of class folders (used as it is)."""
    root = Path(path)
    if not root.exists():
        raise ValueError(f"{root}: no such file or folder")
    if root.is_file() and root.name.endswith((".tar.gz", ".tgz", ".tar")):
        return Cifar10Jpeg(root, "test" if split in ("val", "test") else "train")
    if find_batches_folder(root) is not None:
        return Cifar10Python(root, "test" if split in ("val", "test") else "train")
    names = ("val", "test") if split in ("val", "test") else ("train",)
    for name in names:
        if (root / name).is_dir():
            return FolderSource(open_dataset(root / name, imagenet_labels=False), min_side)
    if split != "train":
        raise ValueError(f"{root} has no val/ or test/ folder; give the validation data explicitly")
    return FolderSource(open_dataset(root, imagenet_labels=False), min_side)


def has_split(path: str | Path, split: str) -> bool:
    """Whether ``open_source(path, split)`` finds a separate split at ``path``."""
    root = Path(path)
    if root.is_file() or find_batches_folder(root) is not None:
        return True
    return any((root / name).is_dir() for name in ((split,) if split == "train" else ("val", "test")))


def first_per_class(source: ImageSource, limit: int | None) -> list[int]:
    """Indices of the first ``limit`` images of each class (all when ``limit`` is None)."""
    taken: dict[int, int] = {}
    chosen = []
    for index, label in enumerate(source.labels):
        if limit is None or taken.get(label, 0) < limit:
            taken[label] = taken.get(label, 0) + 1
            chosen.append(index)
    return chosen


def view_seed(seed: int, view: int, index: int) -> list[int]:
    """The seed of image ``index``'s augmentation in ``view`` (a NumPy seed sequence)."""
    return [seed, 0xA06, view, index]


class AugmentedImages(torch.utils.data.Dataset):
    """Items keyed by ``(index, view)``: the augmented image, its label and index.

    An unreadable image gives ``(None, None, index, message)`` instead of failing.
    """

    def __init__(self, source: ImageSource, transform: TrainTransform, seed: int) -> None:
        self.source = source
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int]):
        index, view = key
        try:
            image = self.source.image(index)
        except UnreadableImage as error:
            return None, None, index, str(error)
        rng = np.random.default_rng(view_seed(self.seed, view, index))
        return self.transform(image, rng), self.source.label_of(index), index, None


class EvalImages(torch.utils.data.Dataset):
    """Items keyed by index: the evaluation crop, label and index (or the reason it failed)."""

    def __init__(self, source: ImageSource, transform: EvalTransform) -> None:
        self.source = source
        self.transform = transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        try:
            image = self.source.image(index)
        except UnreadableImage as error:
            return None, None, index, str(error)
        return self.transform(image), self.source.label_of(index), index, None


@dataclass
class Batch:
    images: Tensor
    labels: Tensor
    indices: list[int]
    skipped: list[str]  # why each left-out image could not be read

    def __len__(self) -> int:
        return len(self.indices)


def collate(items: list) -> Batch:
    kept = [item for item in items if item[0] is not None]
    skipped = [item[3] for item in items if item[0] is None]
    if not kept:
        return Batch(torch.empty(0), torch.empty(0, dtype=torch.int64), [], skipped)
    return Batch(
        torch.stack([item[0] for item in kept]),
        torch.tensor([item[1] for item in kept], dtype=torch.int64),
        [item[2] for item in kept],
        skipped,
    )


class ShardedBatches(torch.utils.data.Sampler):
    """This process's slice of every global batch of an epoch, as ``(index, view)`` keys.

    Epoch ``e`` visits ``indices`` in the order of a permutation seeded by (seed, e) and
    drops the last incomplete global batch. ``set_epoch(e, start)`` starts at batch
    ``start`` (resuming mid-epoch).
    """

    def __init__(
        self,
        indices: list[int],
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        views: int = 0,
    ) -> None:
        if batch_size % world_size:
            raise ValueError(
                f"the global batch ({batch_size}) must be divisible by the number of processes ({world_size})"
            )
        if len(indices) < batch_size:
            raise ValueError(f"{len(indices)} training images do not fill one batch of {batch_size}")
        self.indices = np.asarray(indices, dtype=np.int64)
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.views = views
        self.epoch = 0
        self.start = 0

    @property
    def batches_per_epoch(self) -> int:
        return len(self.indices) // self.batch_size

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = epoch
        self.start = start

    def view_of(self, epoch: int) -> int:
        return epoch % self.views if self.views else epoch

    def global_batches(self, epoch: int) -> np.ndarray:
        """(batches, batch_size) image indices of ``epoch``, all processes together."""
        order = self.indices[np.random.default_rng([self.seed, 0x5EED, epoch]).permutation(len(self.indices))]
        return order[: self.batches_per_epoch * self.batch_size].reshape(
            self.batches_per_epoch, self.batch_size
        )

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        view = self.view_of(self.epoch)
        local = self.batch_size // self.world_size
        for batch in self.global_batches(self.epoch)[self.start :]:
            part = batch[self.rank * local : (self.rank + 1) * local]
            yield [(int(i), view) for i in part]

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start


def loader(
    dataset: torch.utils.data.Dataset,
    batch_sampler,
    workers: int,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    """A loader over ``batch_sampler`` that keeps its worker processes between epochs (the
    sampler runs in this process and the items depend only on their keys, so workers hold
    no state that an epoch or a resume could invalidate)."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        num_workers=workers,
        collate_fn=collate,
        persistent_workers=workers > 0,
        pin_memory=pin_memory,
    )
