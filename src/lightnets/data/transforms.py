"""The evaluation transform of a weight set: resize, centre crop, normalise."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


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
    def from_dict(cls, data: dict) -> EvalTransform:
        data = dict(data)
        for key in ("mean", "std"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


def tf_crop(size: int) -> int:
    """TF-slim's evaluation resize: the shorter side to ``size / 0.875`` (central 87.5%)."""
    return round(size / 0.875)
