"""Class names of the label sets weights are trained on."""

from __future__ import annotations

from functools import cache
from importlib import resources

IMAGENET = "imagenet-1k"  # the 1000 ILSVRC-2012 classes in sorted-wnid order


@cache
def imagenet_classes() -> tuple[tuple[str, str], ...]:
    """The 1000 ILSVRC-2012 classes as (wnid, name), in sorted-wnid order (index = class)."""
    text = resources.files(__package__).joinpath("imagenet_classes.tsv").read_text()
    return tuple(tuple(line.split("\t", 1)) for line in text.splitlines())  # type: ignore[misc]


def class_names(categories: str | list[str], num_classes: int) -> list[str]:
    """Names for a model's outputs: a known label set, an explicit list, or numbers."""
    if isinstance(categories, list):
        names = list(categories)
    elif categories == IMAGENET:
        names = [name for _, name in imagenet_classes()]
    else:
        names = []
    if len(names) != num_classes:
        return [str(i) for i in range(num_classes)]
    return names
