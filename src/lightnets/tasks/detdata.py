"""Detection data: Penn-Fudan's pedestrian boxes, YOLO-format folders (coco128) and
COCO-JSON annotations, each read into a :class:`DetectionData` of photos with boxes.

Boxes are ``(x1, y1, x2, y2)`` in pixels of the photo (the top-left pixel's corner at
0, 0), classes 0-based indices into ``DetectionData.classes``.

* **Penn-Fudan** (:func:`pennfudan_boxes`): the boxes of its annotation files (pixel
  positions counted from 1, inclusive), one class ``person``; the train / val split of
  :func:`.segdata.pennfudan_split`, so segmentation and detection share it.
* **YOLO folders** (:func:`yolo_boxes`): ``images/[SUB/]*.jpg`` and
  ``labels/[SUB/]<stem>.txt`` paired by file stem, one ``class cx cy w h`` line per
  object in units of the photo's sides; a missing label file means no objects (coco128
  has two such photos, and two label files without a photo, which are ignored). Class
  names from ``classes.txt`` or a ``data.yaml`` ``names:`` list beside the folders, or
  given; else the class numbers.
* **COCO JSON** (:func:`coco_boxes`): ``images``, ``annotations`` (``bbox`` as
  ``x y w h``, ``category_id``, ``iscrowd``) and ``categories``; the categories in
  increasing id order become the classes; crowd regions are not objects to detect.

**Bad labels**, found when the data is read: a box reaching outside its photo is clipped
to it; a box with no area (after clipping), with coordinates that are not numbers, or
of a class outside the list is dropped; each file with any of these gets one warning
naming it and what was done. A photo without objects is kept: it teaches the
background.

**Transforms**: SSD's input is a square, so every photo is resized to ``size`` x
``size`` (its aspect not kept, as SSD trains and tests) and the boxes expressed in units
of the sides (0..1). :class:`DetectionAugment` first applies SSD's data augmentation
(Liu et al., 2016, Section 3.6), the same to the photo and its boxes: a zoom out (the
photo placed on a canvas of the normalisation's mean colour, up to ``zoom_out`` times larger;
SSD's :data:`MAX_ZOOM_OUT` by default),
a random crop whose overlap with some object is at least one of :data:`CROP_MIN_IOU`
(or the whole photo) and which keeps the objects whose centres it holds, a left-right
flip, and brightness, contrast and saturation jitter of the photo.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..data.images import UnreadableImage, is_image_file, load_image
from .boxes import box_iou
from .segdata import Normalise, pennfudan_root, pennfudan_split

MAX_ZOOM_OUT = 4.0
CROP_MIN_IOU = (None, 0.1, 0.3, 0.5, 0.7, 0.9)  # None: keep the whole photo
CROP_TRIALS = 50
DECODED_BYTES = 2 << 30  # decoded photos kept in memory, in all


@dataclass
class Annotated:
    """One photo, its boxes ``(G, 4)`` float32 in pixels and their classes ``(G,)`` int64."""

    image: Path
    boxes: np.ndarray
    classes: np.ndarray


class DetectionData(torch.utils.data.Dataset):
    """Photos with boxes. Items are ``transform(photo, boxes, classes)``, or the RGB
    ``PIL.Image`` and the two arrays without a transform.

    Decoded photos are kept in memory up to :data:`DECODED_BYTES` in all (a training
    run reads each photo once per epoch; decoding it again would take a core from the
    model)."""

    def __init__(
        self, items: Sequence[Annotated], classes: Sequence[str], transform: Callable | None = None
    ) -> None:
        self.items = list(items)
        self.classes = list(classes)
        self.transform = transform
        self._decoded: dict[Path, Image.Image] = {}  # by file: ``items`` may be filtered
        self._decoded_bytes = 0

    def __len__(self) -> int:
        return len(self.items)

    def photo(self, index: int) -> Image.Image:
        """The RGB photo of item ``index``, decoded once while the memory allows."""
        path = self.items[index].image
        if path in self._decoded:
            return self._decoded[path]
        photo = load_image(path)
        size = photo.width * photo.height * 3
        if self._decoded_bytes + size <= DECODED_BYTES:
            self._decoded[path], self._decoded_bytes = photo, self._decoded_bytes + size
        return photo

    def decode_all(self) -> None:
        """Decode every photo now (kept in memory as :meth:`photo` allows); a photo that
        cannot be read is dropped with one warning naming it, so a run never meets it
        mid-epoch."""
        readable = []
        for index, item in enumerate(self.items):
            try:
                self.photo(index)
            except UnreadableImage as error:
                warnings.warn(f"skipping {error}", stacklevel=2)  # the error names the file
                continue
            readable.append(item)
        self.items = readable

    def __getitem__(self, index: int) -> Any:
        item = self.items[index]
        photo = self.photo(index)
        if self.transform is None:
            return photo, item.boxes, item.classes
        return self.transform(photo, item.boxes, item.classes)

    @property
    def boxes(self) -> int:
        """The number of objects in all photos."""
        return sum(len(item.classes) for item in self.items)


def checked_boxes(
    source: Path, boxes: np.ndarray, classes: np.ndarray, size: tuple[int, int], num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """``boxes`` clipped to a photo of ``size`` (width, height), less those with no area,
    not finite or of a class outside ``0 .. num_classes - 1``; one warning names
    ``source`` when anything changed."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    finite = np.asarray(np.isfinite(boxes).all(axis=1), dtype=bool)
    width, height = size
    zeroed = np.where(finite[:, None], boxes, 0.0)
    clipped = zeroed.clip(0, [width, height, width, height])
    # Less than half a pixel out is rounding (YOLO's relative coordinates), not a problem.
    outside: np.ndarray = finite & (np.abs(clipped - zeroed) >= 0.5).any(axis=1)
    no_area: np.ndarray = (clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])
    bad_class: np.ndarray = (classes < 0) | (classes >= num_classes)
    keep = finite & ~no_area & ~bad_class
    problems = [
        f"{count} {what}"
        for count, what in (
            (int((~finite).sum()), "boxes with coordinates that are not numbers, dropped"),
            (int((keep & outside).sum()), "boxes reaching outside the photo, clipped"),
            (int((finite & no_area & ~bad_class).sum()), "boxes with no area, dropped"),
            (int((finite & bad_class).sum()), f"boxes of a class outside 0..{num_classes - 1}, dropped"),
        )
        if count
    ]
    if problems:
        warnings.warn(f"{source}: {'; '.join(problems)}", stacklevel=2)
    return clipped[keep].astype(np.float32), classes[keep]


def _photo_size(path: Path) -> tuple[int, int] | None:
    """The photo's (width, height); None, with one warning naming it, if it cannot be read."""
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        warnings.warn(f"skipping {path}: cannot be read ({error})", stacklevel=3)
        return None


PENNFUDAN_BOX = re.compile(r"\((\d+)\s*,\s*(\d+)\)\s*-\s*\((\d+)\s*,\s*(\d+)\)")


def pennfudan_boxes(root: str | Path, split: str = "all", transform: Callable | None = None) -> DetectionData:
    """Penn-Fudan's pedestrians as boxes of one class, ``person`` (see the module docstring)."""
    root = pennfudan_root(root)
    photos = {p.stem: p for p in (root / "PNGImages").iterdir() if is_image_file(p)}
    items = []
    for name in pennfudan_split(list(photos), split):
        annotation = root / "Annotation" / f"{name}.txt"
        text = annotation.read_text(encoding="utf-8", errors="replace") if annotation.is_file() else ""
        corners = [
            [float(x1) - 1, float(y1) - 1, float(x2), float(y2)]  # 1-based inclusive -> corners
            for line in text.splitlines()
            if line.startswith("Bounding box")
            for x1, y1, x2, y2 in PENNFUDAN_BOX.findall(line.split(":", 1)[-1])
        ]
        size = _photo_size(photos[name])
        if size is None:
            continue
        boxes, classes = checked_boxes(annotation, np.array(corners), np.zeros(len(corners)), size, 1)
        items.append(Annotated(photos[name], boxes, classes))
    return DetectionData(items, ["person"], transform)


def _yolo_class_names(root: Path) -> list[str] | None:
    listing = root / "classes.txt"
    if listing.is_file():
        return [line.strip() for line in listing.read_text(encoding="utf-8").splitlines() if line.strip()]
    for yaml in (root / "data.yaml", root / f"{root.name}.yaml"):
        if yaml.is_file():  # the "names: [a, b, ...]" form, without a YAML parser
            found = re.search(r"^names:\s*\[(.*?)\]", yaml.read_text(encoding="utf-8"), re.M | re.S)
            if found:
                return [n.strip().strip("'\"") for n in found.group(1).split(",") if n.strip()]
    return None


def yolo_boxes(
    root: str | Path,
    subset: str | None = None,
    class_names: Sequence[str] | None = None,
    transform: Callable | None = None,
) -> DetectionData:
    """A YOLO-format folder (``root/images/[subset]``, ``root/labels/[subset]``)."""
    root = Path(root)
    if not (root / "images").is_dir() and (root / root.name / "images").is_dir():
        root = root / root.name  # coco128/coco128
    images = root / "images" / (subset or "")
    if not images.is_dir():
        raise ValueError(f"{root} is not a YOLO folder: no {images.relative_to(root)}/ in it")
    if subset is None:
        subsets = sorted(p.name for p in images.iterdir() if p.is_dir())
        if len(subsets) == 1:
            return yolo_boxes(root, subsets[0], class_names, transform)
    labels = root / "labels" / (subset or "")
    photos = sorted(p for p in images.iterdir() if is_image_file(p))
    if not photos:
        raise ValueError(f"{images} holds no images")
    rows: list[tuple[Path, Path, np.ndarray]] = []
    for photo in photos:
        label = labels / f"{photo.stem}.txt"
        values = np.zeros((0, 5))
        if label.is_file():
            try:
                values = np.loadtxt(label, ndmin=2).reshape(-1, 5) if label.stat().st_size else values
            except ValueError as error:
                warnings.warn(
                    f"{label}: not 'class cx cy w h' lines ({error}); the photo has no objects", stacklevel=2
                )
        rows.append((photo, label, values))
    names = list(class_names or _yolo_class_names(root) or [])
    if not names:
        largest = max((int(v[:, 0].max()) for _, _, v in rows if len(v)), default=0)
        names = [str(k) for k in range(largest + 1)]
    items = []
    for photo, label, values in rows:
        size = _photo_size(photo)
        if size is None:
            continue
        width, height = size
        cx, cy, w, h = (values[:, k] for k in range(1, 5))
        corners = np.stack(
            [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height], 1
        )
        boxes, classes = checked_boxes(label, corners, values[:, 0], (width, height), len(names))
        items.append(Annotated(photo, boxes, classes))
    return DetectionData(items, names, transform)


def coco_boxes(
    images: str | Path, annotations: str | Path, transform: Callable | None = None
) -> DetectionData:
    """Photos in ``images`` with the boxes of a COCO-JSON ``annotations`` file."""
    images, annotations = Path(images), Path(annotations)
    try:
        data = json.loads(annotations.read_text(encoding="utf-8"))
        categories = sorted(data["categories"], key=lambda c: c["id"])
        photos = {p["id"]: p for p in data["images"]}
        objects = data.get("annotations", [])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"{annotations} is not a COCO annotation file ({type(error).__name__}: {error})"
        ) from None
    index = {c["id"]: k for k, c in enumerate(categories)}
    per_photo: dict[int, list[dict]] = {key: [] for key in photos}
    for obj in objects:
        if obj.get("image_id") in per_photo and not obj.get("iscrowd", 0):
            per_photo[obj["image_id"]].append(obj)
    items = []
    for key, photo in photos.items():
        path = images / photo["file_name"]
        if not path.is_file():
            warnings.warn(f"{path}: listed in {annotations.name} but missing; skipped", stacklevel=2)
            continue
        found = per_photo[key]
        xywh = np.array([o.get("bbox", [np.nan] * 4) for o in found], dtype=np.float64).reshape(-1, 4)
        corners = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        classes = np.array([index.get(o.get("category_id"), -1) for o in found])
        stated = (int(photo.get("width") or 0), int(photo.get("height") or 0))
        size = stated if all(stated) else _photo_size(path)
        if size is None:
            continue
        boxes, kept = checked_boxes(path, corners, classes, size, len(index))
        items.append(Annotated(path, boxes, kept))
    return DetectionData(items, [c["name"] for c in categories], transform)


Target = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _square(
    photo: np.ndarray, boxes: np.ndarray, size: int, normalise: Normalise
) -> tuple[torch.Tensor, torch.Tensor]:
    """The photo resized to ``size`` x ``size`` and normalised; boxes in units of its sides."""
    height, width = photo.shape[:2]
    resized = np.asarray(Image.fromarray(photo).resize((size, size), Image.Resampling.BILINEAR))
    scale = np.array([width, height, width, height], np.float32)
    units = torch.from_numpy((np.asarray(boxes, np.float32).reshape(-1, 4) / scale).clip(0, 1))
    return normalise(resized), units


class DetectionResize:
    """Evaluation transform: the photo to ``size`` x ``size``; ``(image, boxes, classes)``."""

    def __init__(self, size: int, normalise: Normalise) -> None:
        self.size, self.normalise = size, normalise

    def __call__(self, photo: Image.Image, boxes: np.ndarray, classes: np.ndarray) -> Target:
        image, units = _square(np.asarray(photo), boxes, self.size, self.normalise)
        return image, units, torch.from_numpy(np.asarray(classes, np.int64))


class DetectionAugment:
    """SSD's training augmentation of a photo and its boxes (see the module docstring)."""

    def __init__(
        self,
        size: int,
        normalise: Normalise,
        seed: int | None = None,
        jitter: float = 0.3,
        zoom_out: float = MAX_ZOOM_OUT,
    ) -> None:
        if zoom_out < 1:
            raise ValueError(f"zoom_out is the canvas's largest side over the photo's, >= 1; got {zoom_out}")
        self.size, self.normalise, self.jitter, self.zoom_out = size, normalise, jitter, zoom_out
        self.random = np.random.default_rng(seed)

    def reseed(self, *key: int) -> None:
        """Draw from a generator seeded by ``key`` (a training loop's seed and epoch)."""
        self.random = np.random.default_rng(list(key))

    def _zoom_out(self, photo: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        height, width = photo.shape[:2]
        ratio = self.random.uniform(1, self.zoom_out)
        canvas_h, canvas_w = int(height * ratio), int(width * ratio)
        top, left = (
            int(self.random.integers(0, canvas_h - height + 1)),
            int(self.random.integers(0, canvas_w - width + 1)),
        )
        canvas = np.empty((canvas_h, canvas_w, 3), np.uint8)
        canvas[:] = np.asarray(self.normalise.mean).round().astype(np.uint8)
        canvas[top : top + height, left : left + width] = photo
        return canvas, boxes + np.array([left, top, left, top], np.float32)

    def _crop(self, photo: np.ndarray, boxes: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, ...]:
        height, width = photo.shape[:2]
        while True:  # as SSD: draw an overlap bound, then up to CROP_TRIALS crops that meet it
            bound = CROP_MIN_IOU[int(self.random.integers(len(CROP_MIN_IOU)))]
            if bound is None or len(boxes) == 0:
                return photo, boxes, classes
            for _ in range(CROP_TRIALS):
                w, h = self.random.uniform(0.3, 1.0) * width, self.random.uniform(0.3, 1.0) * height
                if not 0.5 <= h / w <= 2:
                    continue
                x, y = self.random.uniform(0, width - w), self.random.uniform(0, height - h)
                crop = np.array([x, y, x + w, y + h], np.float32)
                if box_iou(torch.from_numpy(crop[None]), torch.from_numpy(boxes)).max() < bound:
                    continue
                centres = (boxes[:, :2] + boxes[:, 2:]) / 2
                inside = ((centres > crop[:2]) & (centres < crop[2:])).all(axis=1)
                if not inside.any():
                    continue
                kept = boxes[inside].copy()
                kept[:, :2] = np.maximum(kept[:, :2], crop[:2]) - crop[:2]
                kept[:, 2:] = np.minimum(kept[:, 2:], crop[2:]) - crop[:2]
                x1, y1, x2, y2 = (int(round(v)) for v in crop)
                return photo[y1:y2, x1:x2], kept, classes[inside]

    def _colours(self, photo: np.ndarray) -> np.ndarray:
        values = photo.astype(np.float32)
        j = self.jitter
        values = (
            values * self.random.uniform(1 - j, 1 + j) + self.random.uniform(-j, j) * 64
        )  # contrast, brightness
        grey = values.mean(axis=2, keepdims=True)
        values = grey + (values - grey) * self.random.uniform(1 - j, 1 + j)  # saturation
        return values.clip(0, 255).astype(np.uint8)

    def __call__(self, photo: Image.Image, boxes: np.ndarray, classes: np.ndarray) -> Target:
        array = np.asarray(photo)
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        classes = np.asarray(classes, np.int64)
        if self.jitter:
            array = self._colours(array)
        if self.zoom_out > 1 and self.random.random() < 0.5:
            array, boxes = self._zoom_out(array, boxes)
        array, boxes, classes = self._crop(array, boxes, classes)
        if self.random.random() < 0.5:
            array = array[:, ::-1]
            boxes = np.stack(
                [array.shape[1] - boxes[:, 2], boxes[:, 1], array.shape[1] - boxes[:, 0], boxes[:, 3]], 1
            )
        image, units = _square(np.ascontiguousarray(array), boxes, self.size, self.normalise)
        return image, units, torch.from_numpy(classes)


def collate_detection(batch: list[Target]) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Images stacked; boxes and classes as lists (each photo has its own number)."""
    images, boxes, classes = zip(*batch, strict=True)
    return torch.stack(images), list(boxes), list(classes)


def open_detection_data(
    path: str | Path, split: str = "val", transform: Callable | None = None
) -> DetectionData:
    """The photos and boxes at ``path``: a Penn-Fudan folder (its ``split``), a YOLO
    folder (``images/`` and ``labels/``) or a COCO-JSON file (photos beside it or in an
    ``images/`` folder beside it)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        images = path.parent / "images" if (path.parent / "images").is_dir() else path.parent
        return coco_boxes(images, path, transform)
    if not path.is_dir():
        raise ValueError(f"{path}: no such folder or COCO .json file")
    try:
        pennfudan_root(path)
    except ValueError:
        return yolo_boxes(path, transform=transform)
    return pennfudan_boxes(path, split, transform)
