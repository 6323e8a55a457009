"""Semantic-segmentation data: Penn-Fudan as person / background, and the augmentation.

Penn-Fudan (Wang et al., ACCV 2007) has one mask per photo, 0 for background and k for
pedestrian k; here every pedestrian is class 1 (``person``), the rest class 0.

**The split** (:func:`pennfudan_split`): the photos' names sorted, shuffled with
``random.Random(SPLIT_SEED)`` (seed 0), the first ``round(0.2 * n)`` are validation,
the rest training. On the 141 photos of the shared copy that is 28 validation and 113
training photos; :data:`PENNFUDAN_VAL_141` lists the validation names, and a test
keeps the split from drifting.

**Bad pairs** are skipped with one warning naming the file, at construction: a mask
whose size differs from its photo's, a mask that is not single-channel, or values
outside the classes (for Penn-Fudan: an instance number above the objects its
annotation file lists; for a class mask: a value that is neither a class nor the void
label 255). Photos without a mask are skipped the same way.

**Augmentation** (:class:`SegmentationAugment`) draws one set of random numbers per
pair and applies it to the photo and its mask alike: a random scale of the shorter side
around the training size, a random crop (padding the photo with its mean and the mask
with the void label where the scaled photo is smaller), a horizontal flip, and
brightness / contrast jitter on the photo only. Photos are resized bilinearly, masks
with nearest neighbour so no value is invented.
"""

from __future__ import annotations

import random
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

VOID = 255
PERSON_CLASSES = ("background", "person")
SPLIT_SEED = 0
VAL_FRACTION = 0.2

PENNFUDAN_VAL_141 = (
    "FudanPed00005", "FudanPed00009", "FudanPed00018", "FudanPed00024", "FudanPed00029",
    "FudanPed00032", "FudanPed00034", "FudanPed00036", "FudanPed00054", "FudanPed00057",
    "FudanPed00058", "FudanPed00059", "FudanPed00060", "FudanPed00065", "FudanPed00071",
    "PennPed00026", "PennPed00031", "PennPed00038", "PennPed00046", "PennPed00058",
    "PennPed00061", "PennPed00068", "PennPed00069", "PennPed00072", "PennPed00073",
    "PennPed00078", "PennPed00079", "PennPed00085",
)  # fmt: skip


def pennfudan_root(path: str | Path) -> Path:
    """The folder holding ``PNGImages`` and ``PedMasks`` (``path`` or its ``PennFudanPed``)."""
    path = Path(path)
    for candidate in (path, path / "PennFudanPed"):
        if (candidate / "PNGImages").is_dir() and (candidate / "PedMasks").is_dir():
            return candidate
    raise ValueError(
        f"{path} is not a Penn-Fudan folder: no PNGImages/ and PedMasks/ in it or in PennFudanPed/"
    )


def pennfudan_split(names: Sequence[str], split: str) -> list[str]:
    """The photos of ``split`` (``train``, ``val`` or ``all``) among ``names`` (see the module docstring)."""
    if split not in ("train", "val", "all"):
        raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
    ordered = sorted(names)
    if split == "all":
        return ordered
    shuffled = list(ordered)
    random.Random(SPLIT_SEED).shuffle(shuffled)
    val = set(shuffled[: round(VAL_FRACTION * len(shuffled))])
    return [n for n in ordered if (n in val) == (split == "val")]


def _objects_in_annotation(path: Path) -> int | None:
    """The number of pedestrians a Penn-Fudan annotation file lists (``None`` without one)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    numbers = re.findall(r"Bounding box for object (\d+)", text)
    return max((int(n) for n in numbers), default=0)


@dataclass(frozen=True)
class Pair:
    """One photo, its mask, and the most classes (instance numbers) its mask may hold."""

    image: Path
    mask: Path
    max_value: int  # mask values above it (other than VOID) are bad


def _check_pair(pair: Pair) -> str | None:
    """Why the pair cannot be used, or ``None``."""
    try:
        with Image.open(pair.image) as image:
            image_size = image.size
        with Image.open(pair.mask) as mask:
            if mask.mode not in ("L", "P", "I", "I;16"):
                return f"the mask has {len(mask.getbands())} channels (mode {mask.mode}), not one"
            if mask.size != image_size:
                return (
                    f"the mask is {mask.size[0]}x{mask.size[1]} but the photo {image_size[0]}x{image_size[1]}"
                )
            values = np.unique(np.asarray(mask))
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        return f"cannot be read ({error})"
    bad = [int(v) for v in values if v != VOID and not 0 <= v <= pair.max_value]
    if bad:
        return f"the mask holds values {bad[:5]} outside the classes (0..{pair.max_value})"
    return None


def checked_pairs(pairs: Sequence[Pair]) -> list[Pair]:
    """``pairs`` less the bad ones, each skipped with one warning naming its file."""
    good = []
    for pair in pairs:
        problem = _check_pair(pair)
        if problem is None:
            good.append(pair)
        else:
            warnings.warn(f"skipping {pair.mask}: {problem}", stacklevel=3)
    return good


class SegmentationData(torch.utils.data.Dataset):
    """Checked (photo, mask) pairs, held decoded in memory, with a joint transform.

    Items are ``transform(photo, classes)``: ``photo`` an (H, W, 3) uint8 array and
    ``classes`` an (H, W) uint8 array of class indices (VOID where unlabelled).
    ``to_classes`` turns a mask file's values into classes.
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        classes: Sequence[str],
        to_classes: Callable[[np.ndarray], np.ndarray],
        transform: Callable[[np.ndarray, np.ndarray], tuple[Tensor, Tensor]] | None = None,
    ) -> None:
        self.pairs = checked_pairs(pairs)
        self.classes = tuple(classes)
        self.to_classes = to_classes
        self.transform = transform
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.pairs)

    def arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The photo (H, W, 3) uint8 and its class mask (H, W) uint8, decoded once."""
        if index not in self._cache:
            pair = self.pairs[index]
            with Image.open(pair.image) as image:
                photo = np.asarray(image.convert("RGB"), dtype=np.uint8)
            with Image.open(pair.mask) as mask:
                classes = self.to_classes(np.asarray(mask))
            self._cache[index] = (photo, classes)
        return self._cache[index]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor] | tuple[np.ndarray, np.ndarray]:
        photo, classes = self.arrays(index)
        if self.transform is None:
            return photo, classes
        return self.transform(photo, classes)


def person_classes(mask: np.ndarray) -> np.ndarray:
    """Penn-Fudan instance mask -> 0 background, 1 person, VOID kept."""
    out = (mask > 0).astype(np.uint8)
    out[mask == VOID] = VOID
    return out


def pennfudan(
    root: str | Path,
    split: str = "train",
    transform: Callable[[np.ndarray, np.ndarray], tuple[Tensor, Tensor]] | None = None,
) -> SegmentationData:
    """Penn-Fudan as person / background, one split (see the module docstring)."""
    folder = pennfudan_root(root)
    stems = [p.stem for p in (folder / "PNGImages").glob("*.png")]
    pairs = []
    for stem in pennfudan_split(stems, split):
        mask = folder / "PedMasks" / f"{stem}_mask.png"
        if not mask.is_file():
            warnings.warn(
                f"skipping {folder / 'PNGImages' / (stem + '.png')}: no mask {mask.name}", stacklevel=2
            )
            continue
        objects = _objects_in_annotation(folder / "Annotation" / f"{stem}.txt")
        pairs.append(Pair(folder / "PNGImages" / f"{stem}.png", mask, objects if objects else VOID - 1))
    return SegmentationData(pairs, PERSON_CLASSES, person_classes, transform)


@dataclass(frozen=True)
class Normalise:
    """(H, W, 3) uint8 -> (3, H, W) float, ``(pixel - mean) / std`` in 0..255 units."""

    mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    std: tuple[float, float, float] = (58.395, 57.12, 57.375)

    def __call__(self, photo: np.ndarray) -> Tensor:
        array = (photo.astype(np.float32) - np.asarray(self.mean, np.float32)) / np.asarray(
            self.std, np.float32
        )
        return torch.from_numpy(array.transpose(2, 0, 1).copy())


def resize_pair(
    photo: np.ndarray, classes: np.ndarray | None, short_side: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Photo (bilinear) and mask (nearest) with the shorter side ``short_side``."""
    height, width = photo.shape[:2]
    scale = short_side / min(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    photo = np.asarray(Image.fromarray(photo).resize(size, Image.Resampling.BILINEAR))
    if classes is not None:
        classes = np.asarray(Image.fromarray(classes).resize(size, Image.Resampling.NEAREST))
    return photo, classes


class SegmentationAugment:
    """Training augmentation of a (photo, mask) pair, the same for both (see the module docstring).

    The shorter side is scaled to ``short_side`` (default ``size``) times a factor drawn
    from ``scale``, then a ``size`` x ``size`` crop is cut: with ``short_side`` the
    evaluation size, the network trains on crops of photos at the scale it is evaluated at.
    """

    def __init__(
        self,
        size: int,
        normalise: Normalise,
        scale: tuple[float, float] = (0.75, 1.5),
        flip: bool = True,
        jitter: float = 0.2,
        seed: int | None = None,
        short_side: int | None = None,
    ) -> None:
        self.size = size
        self.short_side = short_side or size
        self.normalise = normalise
        self.scale = scale
        self.flip = flip
        self.jitter = jitter
        self.random = random.Random(seed)

    def reseed(self, *key: int) -> None:
        """Draw from a generator seeded by ``key`` (a training loop's seed and epoch)."""
        self.random = random.Random(",".join(map(str, key)))

    def __call__(self, photo: np.ndarray, classes: np.ndarray) -> tuple[Tensor, Tensor]:
        rng = self.random
        short = max(8, round(self.short_side * rng.uniform(*self.scale)))
        photo, resized = resize_pair(photo, classes, short)
        assert resized is not None
        classes = resized
        height, width = classes.shape
        pad_h, pad_w = max(0, self.size - height), max(0, self.size - width)
        if pad_h or pad_w:
            mean = np.asarray(self.normalise.mean, np.float32).round().astype(np.uint8)
            canvas = np.empty((height + pad_h, width + pad_w, 3), np.uint8)
            canvas[:] = mean
            canvas[:height, :width] = photo
            photo = canvas
            padded = np.full((height + pad_h, width + pad_w), VOID, np.uint8)
            padded[:height, :width] = classes
            classes = padded
            height, width = classes.shape
        top, left = rng.randint(0, height - self.size), rng.randint(0, width - self.size)
        photo = photo[top : top + self.size, left : left + self.size]
        classes = classes[top : top + self.size, left : left + self.size]
        if self.flip and rng.random() < 0.5:
            photo, classes = photo[:, ::-1], classes[:, ::-1]
        image = self.normalise(np.ascontiguousarray(photo))
        if self.jitter:
            # Brightness and contrast on the normalised photo: the mask is not touched.
            contrast = 1 + rng.uniform(-self.jitter, self.jitter)
            brightness = rng.uniform(-self.jitter, self.jitter)
            image = image * contrast + brightness
        return image, torch.from_numpy(np.ascontiguousarray(classes).astype(np.int64))


class SegmentationEval:
    """Evaluation transform: shorter side to ``size``, normalised; the mask at full size."""

    def __init__(self, size: int, normalise: Normalise) -> None:
        self.size = size
        self.normalise = normalise

    def __call__(self, photo: np.ndarray, classes: np.ndarray) -> tuple[Tensor, Tensor]:
        resized, _ = resize_pair(photo, None, self.size)
        return self.normalise(resized), torch.from_numpy(classes.astype(np.int64))
