"""Calibration images for post-training quantisation: real pictures from a folder.

The folder is any the user gives (a folder of images, of class folders, or a labelled
set such as ``imagenet-sample/``); images are taken evenly spread over its sorted file
list, so every class folder contributes, and prepared with the model's own evaluation
transform. Unreadable files are skipped.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from ..classify import expand_inputs
from ..data.images import UnreadableImage, load_image
from ..data.transforms import EvalTransform

__all__ = ["DEFAULT_CALIBRATION_IMAGES", "calibration_batches", "calibration_files", "prepare_images"]

DEFAULT_CALIBRATION_IMAGES = 256
# Below this many images the activation ranges follow the few images seen: calibrated on
# one image, int8 MobileNetV2 agreed with its float model's top-1 on 30 % of the sample
# instead of 50 %.
MIN_CALIBRATION_IMAGES = 32


def calibration_files(source: str | Path | Iterable[str | Path], num_images: int | None) -> list[Path]:
    """``num_images`` image files from a folder (or files and folders), evenly spread over
    the sorted list; all of them when ``num_images`` is None or larger than the list."""
    inputs = [source] if isinstance(source, str | Path) else list(source)
    files = expand_inputs(inputs)
    if not files:
        raise ValueError(f"no image files in {source}: calibration needs real images")
    if num_images is None or num_images >= len(files):
        return files
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    step = len(files) / num_images
    return [files[int(i * step)] for i in range(num_images)]


def prepare_images(files: Sequence[str | Path], transform: EvalTransform) -> Tensor:
    """The images as one (N, C, H, W) float batch, prepared exactly as for evaluation
    (decoded with the same JPEG draft size as ``lightnets.predict``). Unreadable files
    are skipped with a warning."""
    tensors = []
    for path in files:
        try:
            tensors.append(transform(load_image(path, transform.resize)))
        except UnreadableImage as error:
            warnings.warn(f"skipping calibration image {error}", stacklevel=2)
    if not tensors:
        raise ValueError("none of the calibration images could be read")
    return torch.stack(tensors)


def calibration_batches(
    source: str | Path | Iterable[str | Path] | Tensor,
    transform: EvalTransform,
    num_images: int | None = DEFAULT_CALIBRATION_IMAGES,
    batch_size: int = 32,
) -> list[Tensor]:
    """Calibration inputs in batches of ``batch_size``: from a folder / files, or an
    already prepared (N, C, H, W) tensor (used as given)."""
    if isinstance(source, Tensor):
        data = source if num_images is None else source[:num_images]
    else:
        data = prepare_images(calibration_files(source, num_images), transform)
    if len(data) < MIN_CALIBRATION_IMAGES:
        warnings.warn(
            f"int8 calibration on {len(data)} image(s): activation ranges taken from so few images "
            f"are unreliable; give at least {MIN_CALIBRATION_IMAGES} (default {DEFAULT_CALIBRATION_IMAGES})",
            stacklevel=3,
        )
    return list(data.split(batch_size))
