"""Decoded images kept as uint8 pixels in a memory-mapped file: decode once, train often.

On a CPU with few cores, decoding a JPEG and resizing it every epoch competes with the
model for the same cores. :func:`build_cache` decodes each image once, resizes its
shorter side to ``side`` (a little above the training resolution: ``resolution / 0.875``,
the evaluation transform's resize), cuts out the centre ``side`` x ``side`` square and
stores it in one ``.npy`` file; :class:`CachedSource` serves those pixels as the images
of the source, memory-mapped (the operating system shares and pages them), so the
augmentation (random-resized crop, flip, jitter) runs on the cached pixels. The centre
square loses what lies beyond it on the long side of a non-square image; the random
crops of the training transform then range over that square.

The files live in lightnets' cache folder (``$LIGHTNETS_CACHE/images``, by default
``~/.cache/lightnets/images``), named by the images they hold (names, labels, file sizes
and modification times), the side and the version of this format, and are written
atomically: a run killed while caching leaves no half file, and a resumed run, or any
later run on the same images at the same side, reuses them.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..data.images import UnreadableImage
from ..data.transforms import INTERPOLATIONS
from ..files import atomic_write, write_text

FORMAT = 1


def cache_side(resolution: int) -> int:
    """The side images are cached at for training at ``resolution``."""
    return max(resolution, round(resolution / 0.875))


def square(image: Image.Image, side: int, interpolation: str = "bilinear") -> np.ndarray:
    """The shorter side resized to ``side``, the centre square, as (side, side, 3) uint8."""
    image = image.convert("RGB")
    width, height = image.size
    scale = side / min(width, height)
    new = (max(side, round(width * scale)), max(side, round(height * scale)))
    image = image.resize(new, INTERPOLATIONS[interpolation])
    left, top = (new[0] - side) // 2, (new[1] - side) // 2
    return np.asarray(image.crop((left, top, left + side, top + side)), dtype=np.uint8)


def cache_key(source, indices: list[int], side: int) -> str:
    digest = hashlib.sha256(f"lightnets image cache {FORMAT} {side}".encode())
    for index in indices:
        name = source.name_of(index)
        try:
            stat = os.stat(name)
            changed = f"{stat.st_size}\t{stat.st_mtime_ns}"
        except (OSError, ValueError):  # not a file of its own (a member of an archive)
            changed = ""
        digest.update(f"\n{source.label_of(index)}\t{name}\t{changed}".encode())
    return digest.hexdigest()[:20]


class CachedSource:
    """The images ``indices`` of ``source`` from a cache file (an :class:`ImageSource`:
    indices are the source's; an image that could not be read raises
    :class:`UnreadableImage` with its original message)."""

    def __init__(self, source, indices: list[int], path: Path, failures: dict[int, str]) -> None:
        self.source = source
        self.classes = source.classes
        self.labels = source.labels
        self.path = Path(path)
        self.rows = {index: row for row, index in enumerate(indices)}
        self.failures = failures
        self.pixels = np.load(self.path, mmap_mode="r")

    def __len__(self) -> int:
        return len(self.source)

    def image(self, index: int) -> Image.Image:
        if index in self.failures:
            raise UnreadableImage(self.failures[index])
        row = self.rows.get(index)
        if row is None:  # not cached (not one of the run's images)
            return self.source.image(index)
        return Image.fromarray(np.ascontiguousarray(self.pixels[row]))

    def label_of(self, index: int) -> int:
        return self.source.label_of(index)

    def name_of(self, index: int) -> str:
        return self.source.name_of(index)

    def __getstate__(self) -> dict:  # worker processes reopen the memory map
        state = dict(self.__dict__)
        state["pixels"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.pixels = np.load(self.path, mmap_mode="r")


def build_cache(source, indices: list[int], side: int, folder: Path, name: str) -> tuple[CachedSource, float]:
    """The cache of ``indices`` at ``side`` in ``folder`` (made if missing); returns it
    and the seconds spent making it (0 when it existed)."""
    key = cache_key(source, indices, side)
    path = Path(folder) / f"{name}-{side}px-{key}.npy"
    failures_path = path.with_suffix(".failures.json")
    started = time.perf_counter()
    if not (path.is_file() and failures_path.is_file()):
        failures: dict[int, str] = {}
        header: dict[str, Any] = {
            "descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
            "fortran_order": False,
        }
        header["shape"] = (len(indices), side, side, 3)
        with atomic_write(path, "wb") as handle:
            np.lib.format.write_array_header_1_0(handle, header)
            blank = np.zeros((side, side, 3), np.uint8)
            for index in indices:
                try:
                    pixels = square(source.image(index), side)
                except UnreadableImage as error:
                    failures[index] = str(error)
                    pixels = blank
                handle.write(pixels.tobytes())
        write_text(failures_path, json.dumps({str(k): v for k, v in failures.items()}) + "\n")
        spent = time.perf_counter() - started
    else:
        spent = 0.0
    failures = {int(k): v for k, v in json.loads(failures_path.read_text()).items()}
    return CachedSource(source, indices, path, failures), spent
