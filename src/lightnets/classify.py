"""Classifying images with a model: top-k predictions, and accuracy on a labelled set."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from .data.datasets import ImageDataset, collate_skipping, open_dataset
from .data.images import UnreadableImage, is_image_file, load_image
from .data.transforms import EvalTransform
from .zoo import Model, labels_of, num_classes_of, pretrained_config, transform_of


@dataclass
class Prediction:
    path: str
    classes: list[int]
    names: list[str]
    probabilities: list[float]


def expand_inputs(inputs: str | Path | Iterable[str | Path]) -> list[Path]:
    """Files as given, and the image files inside any folder given (sorted). One path
    (a string or a ``Path``) is one input, not a sequence of characters."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths += sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
        else:
            paths.append(path)
    return paths


@torch.no_grad()
def predict(
    model: Model,
    inputs: str | Path | Iterable[str | Path],
    topk: int = 5,
    transform: EvalTransform | None = None,
) -> tuple[list[Prediction], list[str]]:
    """Top-k classes of each image; returns (predictions, messages about skipped files).

    ``inputs`` is an image file, a folder of images, or a list of them.
    """
    if topk < 1:
        raise ValueError(f"topk must be at least 1, got {topk}")
    transform = transform or transform_of(model)
    names = labels_of(model)
    topk = min(topk, num_classes_of(model))
    model.eval()
    predictions, skipped = [], []
    for path in expand_inputs(inputs):
        try:
            image = load_image(path, transform.resize)
        except UnreadableImage as error:
            skipped.append(f"skipped {error}")
            continue
        probabilities = model(transform(image).unsqueeze(0)).softmax(dim=1)[0]
        values, indices = probabilities.topk(topk)
        predictions.append(
            Prediction(str(path), indices.tolist(), [names[i] for i in indices.tolist()], values.tolist())
        )
    return predictions, skipped


def dataset_for(model: Model, data: str | Path) -> ImageDataset:
    """The labelled images of ``data`` with labels in the model's own class indices."""
    config = pretrained_config(model)
    categories = config.categories if config is not None else ""
    root = Path(data)
    class_folders = root.is_dir() and not (root / "labels.csv").is_file()
    if not class_folders or not isinstance(categories, list):
        return open_dataset(data)  # ImageNet wnids -> ImageNet indices, or the given labels
    # The model names its classes (it was trained on class folders): match by name.
    dataset = open_dataset(data, imagenet_labels=False)
    index = {name: position for position, name in enumerate(categories)}
    unmatched = [name for name in dataset.classes if name not in index]
    if unmatched:
        shown = ", ".join(unmatched[:5]) + (" ..." if len(unmatched) > 5 else "")
        raise ValueError(
            f"{root}: the class folders {shown} are not classes of the model "
            f"(its {len(categories)} classes: {', '.join(categories[:10])}{' ...' if len(categories) > 10 else ''})"
        )
    relabel = [index[name] for name in dataset.classes]
    dataset.samples = [(path, relabel[label]) for path, label in dataset.samples]
    dataset.classes = list(categories)
    return dataset


def spread_over_classes(samples: list[tuple[Path, int]], limit: int) -> list[tuple[Path, int]]:
    """``limit`` samples taken in turn from each class (in file order within a class)."""
    by_class: dict[int, list[tuple[Path, int]]] = {}
    for sample in samples:
        by_class.setdefault(sample[1], []).append(sample)
    queues = [iter(group) for _, group in sorted(by_class.items())]
    chosen: list[tuple[Path, int]] = []
    while queues and len(chosen) < limit:
        alive = []
        for queue in queues:
            taken = next(queue, None)
            if taken is not None and len(chosen) < limit:
                chosen.append(taken)
                alive.append(queue)
        queues = alive
    return chosen


@dataclass
class EvalResult:
    top1: float  # percent
    top5: float  # percent
    n: int
    skipped: list[str] = field(default_factory=list)
    per_class: dict[int, tuple[int, int]] = field(default_factory=dict)  # label -> (correct top-1, total)
    predictions: list[int] = field(default_factory=list)  # top-1 class per evaluated image

    def to_dict(self, class_names: list[str] | None = None) -> dict:
        out = {"top1": self.top1, "top5": self.top5, "n": self.n, "skipped": self.skipped}
        if self.per_class:
            out["per_class"] = [
                {
                    "class": label,
                    "name": class_names[label] if class_names and label < len(class_names) else str(label),
                    "correct": correct,
                    "total": total,
                    "top1": 100.0 * correct / total,
                }
                for label, (correct, total) in sorted(self.per_class.items())
            ]
        return out


@torch.no_grad()
def evaluate(
    model: Model,
    data: str | Path | ImageDataset,
    transform: EvalTransform | None = None,
    batch_size: int = 32,
    limit: int | None = None,
    workers: int = 0,
    progress: bool = True,
) -> EvalResult:
    """Top-1 and top-5 accuracy (percent) of ``model`` on a labelled image set.

    Class folders are matched to the model's own class names when it has them (a model
    trained on those folders), and to ImageNet classes when the model scores ImageNet
    and the folders are wnids; a folder that matches neither is refused. ``limit``
    takes that many images spread evenly over the classes. Unreadable images are
    skipped (listed in ``skipped``) and do not count in ``n``.
    """
    dataset = data if isinstance(data, ImageDataset) else dataset_for(model, data)
    transform = transform or transform_of(model)
    dataset.transform, dataset.min_side = transform, transform.resize
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1 image, got {limit}")
        dataset.samples = spread_over_classes(dataset.samples, limit)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_skipping
    )
    model.eval()
    correct1 = correct5 = total = 0
    per_class: dict[int, list[int]] = {}
    predictions: list[int] = []
    evaluated: set[int] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skipped files are reported once, below
        for batch in tqdm(loader, desc="eval", unit="batch", disable=not progress):
            if batch is None:
                continue
            images, labels, indices = batch
            top = model(images).topk(min(5, num_classes_of(model)), dim=1).indices
            hit1 = top[:, 0] == labels
            correct1 += int(hit1.sum())
            correct5 += int((top == labels[:, None]).any(dim=1).sum())
            total += len(labels)
            predictions += top[:, 0].tolist()
            evaluated.update(indices.tolist())
            for label, hit in zip(labels.tolist(), hit1.tolist(), strict=True):
                counts = per_class.setdefault(label, [0, 0])
                counts[0] += int(hit)
                counts[1] += 1
    skipped = [str(dataset.samples[i][0]) for i in range(len(dataset)) if i not in evaluated]
    if total == 0:
        raise ValueError(f"no readable images in {data}")
    return EvalResult(
        100.0 * correct1 / total,
        100.0 * correct5 / total,
        total,
        skipped,
        {k: (v[0], v[1]) for k, v in per_class.items()},
        predictions,
    )
