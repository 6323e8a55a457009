"""Labelled image sets: a folder with ``labels.csv`` and ``images/``, or class folders.

* ``labels.csv`` (columns ``filename`` and ``class_index``, e.g. the ImageNet sample):
  images in ``images/`` (or beside the CSV), labels as given.
* class folders (``<root>/<class>/*.jpg``, e.g. Imagenette's ``train/n01440764/``): if
  every folder is an ImageNet wnid, labels are ImageNet class indices, so ImageNet
  models can be evaluated on the subset directly; otherwise folders are numbered in
  sorted order. ``imagenet_labels=False`` numbers wnid folders in sorted order too
  (0..9 for Imagenette), as training a classifier for just those classes needs.

An image that cannot be read is skipped with one warning naming it; the rest go on.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from .categories import IMAGENET, imagenet_classes
from .images import UnreadableImage, is_image_file, load_image


@dataclass
class ImageDataset(torch.utils.data.Dataset):
    """(path, label) pairs with the names of the labels; items are transformed tensors."""

    samples: list[tuple[Path, int]]
    classes: list[str]
    categories: str = ""  # IMAGENET when labels are ImageNet class indices
    transform: Callable | None = None
    min_side: int | None = None  # lets JPEG decoding shrink huge images
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor | Image.Image, int, int] | None:
        """The transformed image (the image itself without a transform), its label and index."""
        path, label = self.samples[index]
        try:
            image = load_image(path, self.min_side)
        except UnreadableImage as error:
            warnings.warn(f"skipping {error}", stacklevel=2)
            return None
        data = self.transform(image) if self.transform else image
        return data, label, index


def collate_skipping(batch: list) -> tuple[Tensor, Tensor, Tensor] | None:
    """Stack a batch, leaving out the images that could not be read."""
    kept = [item for item in batch if item is not None]
    if not kept:
        return None
    images, labels, indices = zip(*kept, strict=True)
    return torch.stack(images), torch.tensor(labels), torch.tensor(indices)


def open_dataset(path: str | Path, imagenet_labels: bool = True) -> ImageDataset:
    """The labelled images under ``path`` (see the module docstring for the layouts).

    ``imagenet_labels=False`` labels class folders 0, 1, ... in sorted order even when
    they are ImageNet wnids.
    """
    root = Path(path)
    if not root.exists():
        raise ValueError(f"{root}: no such folder")
    csv_file = root / "labels.csv" if root.is_dir() else root
    if csv_file.suffix == ".csv" and csv_file.is_file():
        return _from_csv(csv_file)
    if not root.is_dir():
        raise ValueError(f"{root} is neither a folder of images nor a labels .csv")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise ValueError(f"{root} holds no labels.csv and no class folders")
    wnids = {wnid: index for index, (wnid, _) in enumerate(imagenet_classes())}
    imagenet = imagenet_labels and all(f.name in wnids for f in folders)
    samples = []
    for position, folder in enumerate(folders):
        label = wnids[folder.name] if imagenet else position
        samples += [(p, label) for p in sorted(folder.rglob("*")) if p.is_file() and is_image_file(p)]
    if not samples:
        raise ValueError(f"{root}: the class folders hold no images")
    if imagenet:
        return ImageDataset(samples, [name for _, name in imagenet_classes()], IMAGENET)
    return ImageDataset(samples, [f.name for f in folders])


def _from_csv(csv_file: Path) -> ImageDataset:
    folder = csv_file.parent / "images" if (csv_file.parent / "images").is_dir() else csv_file.parent
    with open(csv_file, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"filename", "class_index"} <= set(rows[0]):
        raise ValueError(f"{csv_file} needs the columns 'filename' and 'class_index'")
    samples = [(folder / row["filename"], int(row["class_index"])) for row in rows]
    labels = {int(row["class_index"]) for row in rows}
    if max(labels) < 1000 and "wnid" in rows[0]:
        return ImageDataset(samples, [name for _, name in imagenet_classes()], IMAGENET)
    return ImageDataset(samples, [str(i) for i in range(max(labels) + 1)])
