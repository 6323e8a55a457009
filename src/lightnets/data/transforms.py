"""The evaluation transform of a weight set: resize, centre crop, normalise."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from PIL import Image

INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}

# Bounds of a transform read from a file (weights metadata, an ONNX file): a file is
# untrusted, and ``resize`` decides how large an image is made before cropping, so
# {"size": 100000, "resize": 100000} would ask for tens of gigabytes per image.
MIN_SIZE = 16
MAX_SIZE = 4096
MAX_RESIZE = 2 * MAX_SIZE  # TF-slim's 87.5% crop of 4096 needs 4681
MAX_NORMALISATION = 1e4  # |mean| and std, in 0..255 pixel units
# Sides longer than this many times the shorter one are trimmed (centred) before the
# resize: the crop never uses them, and resizing a 1 x 60000 strip to a 256-pixel short
# side would make a 256 x 15,360,000 image (12 GB).
MAX_ASPECT = 4


@dataclass(frozen=True)
class EvalTransform:
    """How the pixels a weight set was trained on were prepared.

    The shorter side is resized to ``resize``, the centre ``size`` x ``size`` cropped,
    the channels put in ``channel_order`` and normalised as ``(pixel - mean) / std``
    with pixels in 0..255 (so a Caffe model has ``std = 1`` and a TensorFlow one
    ``mean = std = 127.5`` or 128).
    """

    size: int = 224
    resize: int = 256
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    channel_order: str = "RGB"

    def __post_init__(self) -> None:
        if self.size <= 0 or self.resize < self.size:
            raise ValueError(f"need 0 < size <= resize, got size={self.size}, resize={self.resize}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"unknown interpolation {self.interpolation!r}; expected one of {list(INTERPOLATIONS)}"
            )
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")

    def crop(self, image: Image.Image) -> Image.Image:
        """Resize the shorter side to ``resize`` and cut out the centre square."""
        image = _trim_long_side(image)
        width, height = image.size
        scale = self.resize / min(width, height)
        new = (max(self.size, round(width * scale)), max(self.size, round(height * scale)))
        image = image.resize(new, INTERPOLATIONS[self.interpolation])
        left, top = (new[0] - self.size) // 2, (new[1] - self.size) // 2
        return image.crop((left, top, left + self.size, top + self.size))

    def to_uint8(self, image: Image.Image) -> np.ndarray:
        """The cropped image as an (H, W, 3) uint8 array in ``channel_order``."""
        array = np.asarray(self.crop(image.convert("RGB")), dtype=np.uint8)
        return array[..., ::-1].copy() if self.channel_order == "BGR" else array

    def normalise(self, array: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 -> normalised (3, H, W) float32 tensor."""
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return torch.from_numpy(((array.astype(np.float32) - mean) / std).transpose(2, 0, 1).copy())

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.normalise(self.to_uint8(image))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> EvalTransform:
        """A transform from its :meth:`to_dict` form, as read from a file: ``ValueError``
        for anything but known keys with values of the right type within bounds
        (sizes ``MIN_SIZE..MAX_SIZE``, resize up to ``MAX_RESIZE``)."""
        if not isinstance(data, dict):
            raise ValueError(f"the transform must be a JSON object, not {type(data).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise ValueError(f"unknown transform keys {unknown}; known: {known}")
        data = dict(data)
        for key, low, high in (("size", MIN_SIZE, MAX_SIZE), ("resize", MIN_SIZE, MAX_RESIZE)):
            if key in data:
                value = data[key]
                if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                    raise ValueError(
                        f"transform {key} must be a whole number in {low}..{high}, got {value!r}"
                    )
        for key in ("mean", "std"):
            if key in data:
                data[key] = _three_numbers(data[key], key)
        for key in ("interpolation", "channel_order"):
            if key in data and not isinstance(data[key], str):
                raise ValueError(f"transform {key} must be a string, got {data[key]!r}")
        return cls(**data)


def _three_numbers(value: object, key: str) -> tuple[float, float, float]:
    if (
        not isinstance(value, list | tuple)
        or len(value) != 3
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        or not all(math.isfinite(v) and abs(v) <= MAX_NORMALISATION for v in value)
    ):
        raise ValueError(f"transform {key} must be three finite numbers (0..255 pixel units), got {value!r}")
    return tuple(float(v) for v in value)  # type: ignore[return-value]


def _trim_long_side(image: Image.Image) -> Image.Image:
    """The centre of a very elongated image, at most ``MAX_ASPECT`` times its short side."""
    width, height = image.size
    short = min(width, height)
    if max(width, height) <= MAX_ASPECT * short:
        return image
    keep = MAX_ASPECT * short
    if width > height:
        left = (width - keep) // 2
        return image.crop((left, 0, left + keep, height))
    top = (height - keep) // 2
    return image.crop((0, top, width, top + keep))


def tf_crop(size: int) -> int:
    """TF-slim's evaluation resize: the shorter side to ``size / 0.875`` (central 87.5%)."""
    return round(size / 0.875)
