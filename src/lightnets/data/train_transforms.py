"""The training transform: random-resized crop, flip, optional colour jitter, normalise.

Written with Pillow and NumPy (torchvision cannot be a dependency). Every random choice
is drawn from a ``numpy.random.Generator`` the caller passes in, so the pixels a sample
gets are a function of that generator's seed alone: the trainer seeds it from (run
seed, epoch, sample index), which makes augmentation independent of worker processes,
of the number of machines, and of where a resumed run restarts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

from .transforms import INTERPOLATIONS, EvalTransform

IMAGENET_MEAN = EvalTransform.mean  # in 0..255 pixel units, as EvalTransform
IMAGENET_STD = EvalTransform.std


@dataclass(frozen=True)
class TrainTransform:
    """Inception-style augmentation at any resolution (the resolution multiplier).

    A crop covering ``scale`` of the image area with aspect ratio in ``ratio`` is resized
    to ``size`` x ``size``, flipped left-right with probability ``hflip``, optionally
    colour-jittered (brightness, contrast and saturation each scaled by a factor in
    ``[1 - color_jitter, 1 + color_jitter]``, in random order), put in ``channel_order``
    and normalised as ``(pixel - mean) / std`` with pixels in 0..255, as
    :class:`EvalTransform` describes a weight set's inputs.
    """

    size: int = 224
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    color_jitter: float = 0.0
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: str = "RGB"

    def __post_init__(self) -> None:
        if self.size <= 0:
            raise ValueError(f"size must be positive, got {self.size}")
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {self.scale}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {self.ratio}")
        if not 0 <= self.hflip <= 1:
            raise ValueError(f"hflip is a probability, got {self.hflip}")
        if not 0 <= self.color_jitter < 1:
            raise ValueError(f"color_jitter must be in [0, 1), got {self.color_jitter}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"unknown interpolation {self.interpolation!r}; expected one of {list(INTERPOLATIONS)}"
            )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")

    def crop_box(self, width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of a random crop, as torchvision's RandomResizedCrop picks it."""
        area = width * height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            w = round(math.sqrt(target * aspect))
            h = round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                left = int(rng.integers(0, width - w + 1))
                top = int(rng.integers(0, height - h + 1))
                return left, top, left + w, top + h
        # Ten misses (a very elongated image): the largest central crop within the ratios.
        aspect = width / height
        if aspect < self.ratio[0]:
            w, h = width, round(width / self.ratio[0])
        elif aspect > self.ratio[1]:
            w, h = round(height * self.ratio[1]), height
        else:
            w, h = width, height
        left, top = (width - w) // 2, (height - h) // 2
        return left, top, left + w, top + h

    def augment(self, image: Image.Image, rng: np.random.Generator) -> np.ndarray:
        """The augmented image as an (H, W, 3) uint8 array in ``channel_order``."""
        image = image.convert("RGB")
        box = self.crop_box(image.width, image.height, rng)
        # One resample straight from the crop box: no intermediate crop copy.
        image = image.resize((self.size, self.size), INTERPOLATIONS[self.interpolation], box=box)
        if rng.random() < self.hflip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        array = np.asarray(image, dtype=np.uint8)
        if self.color_jitter > 0:
            array = self._jitter(array.astype(np.float32), rng)
        return array[..., ::-1] if self.channel_order == "BGR" else array

    def _jitter(self, array: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        s = self.color_jitter
        factors = rng.uniform(1 - s, 1 + s, size=3)
        for op in rng.permutation(3):
            factor = float(factors[op])
            if op == 0:  # brightness: scale towards black
                array = array * factor
            elif op == 1:  # contrast: scale around the mean grey level
                grey = _grey(array).mean()
                array = (array - grey) * factor + grey
            else:  # saturation: scale away from the pixel's own grey
                grey = _grey(array)[..., None]
                array = (array - grey) * factor + grey
            array = np.clip(array, 0.0, 255.0)
        return np.round(array).astype(np.uint8)

    def normalise(self, array: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 -> normalised (3, H, W) float32 tensor."""
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return torch.from_numpy(((array.astype(np.float32) - mean) / std).transpose(2, 0, 1).copy())

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> torch.Tensor:
        return self.normalise(self.augment(image, rng))

    def eval_transform(self, crop_fraction: float = 0.875) -> EvalTransform:
        """The matching evaluation transform: resize to ``size / crop_fraction``, centre crop."""
        return EvalTransform(
            self.size,
            max(self.size, round(self.size / crop_fraction)),
            self.interpolation,
            (*self.mean,),
            (*self.std,),
            self.channel_order,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainTransform:
        data = dict(data)
        for key in ("scale", "ratio", "mean", "std"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


def _grey(array: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma, as Pillow's ``convert("L")`` computes it."""
    return array[..., 0] * 0.299 + array[..., 1] * 0.587 + array[..., 2] * 0.114
