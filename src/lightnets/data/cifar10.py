"""CIFAR-10 in its two common forms: the python batches, and a JPEG archive.

* **Python format** (``cifar-10-batches-py/``: ``data_batch_1`` .. ``data_batch_5``,
  ``test_batch``, ``batches.meta``). Each batch is a pickle of a dict holding a
  ``(10000, 3072)`` uint8 array (1024 red, 1024 green, 1024 blue values per image, row
  by row) and a list of labels. Pickles can run code, so they are read with an
  unpickler that builds only NumPy arrays, dtypes and plain Python values; a file that
  names any other class is refused.
* **JPEG archive** (a ``.tar.gz`` holding ``<prefix>/train/<class>/*.jpg`` and
  ``<prefix>/test/<class>/*.jpg``, e.g. ``CIFAR-10-images.tar.gz``), read with
  ``tarfile`` straight from the archive: the compressed bytes are kept in memory and
  each image decoded when asked for.

Both are :class:`ImageSource`-like: ``len``, ``classes``, ``labels``, ``image(i)``
(a PIL image), ``label_of(i)`` and ``name_of(i)``.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from .images import UnreadableImage

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)
SPLITS = ("train", "test")


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles NumPy arrays and plain Python values, nothing else.

    An array pickles as ``numpy.core.multiarray._reconstruct(ndarray, shape, dtype)``
    plus its state (protocol 5: ``numpy.core.numeric._frombuffer``), so those callables
    are all a CIFAR batch needs, with ``_codecs.encode(text, "latin1")``, which protocol 2
    uses for ``bytes`` written by Python 3 (allowed for that codec only). Any other
    global a pickle names (``os.system``, a class with a ``__reduce__``) raises
    ``pickle.UnpicklingError`` before it is looked up.
    """

    # numpy 2 moved numpy.core to numpy._core; files written by either name the one they had.
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to unpickle {module}.{name}: only NumPy arrays are allowed"
            )
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        if name == "ndarray":
            return np.ndarray
        if name == "dtype":
            return np.dtype
        core = np._core if hasattr(np, "_core") else np.core
        return getattr(core.numeric if name == "_frombuffer" else core.multiarray, name)


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    if encoding.replace("-", "").lower() != "latin1":
        raise pickle.UnpicklingError(f"refusing _codecs.encode with codec {encoding!r}")
    return text.encode("latin1")


def read_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One python-format batch: images (N, 32, 32, 3) uint8, labels (N,) int64, file names."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            # latin1: the batches were pickled by Python 2, whose str holds the array bytes.
            batch = NumpyOnlyUnpickler(handle, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
        raise ValueError(f"{path}: not a CIFAR-10 python batch ({error})") from None
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: not a CIFAR-10 python batch (holds a {type(batch).__name__})")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data = batch.get("data")
    labels = batch.get("labels", batch.get("fine_labels"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{path}: 'data' must be a uint8 array of shape (N, 3072)")
    labels = np.asarray(labels, dtype=np.int64) if labels is not None else None
    if labels is None or labels.shape != (data.shape[0],):
        raise ValueError(f"{path}: needs one label per image")
    if labels.size and (labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise ValueError(f"{path}: labels must be in 0..{len(CLASSES) - 1}")
    names = batch.get("filenames") or [f"{path.name}[{i}]" for i in range(len(labels))]
    names = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]
    # Rows are planar (R plane, G plane, B plane); images want (H, W, channel).
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels, names


def read_meta(path: str | Path) -> list[str]:
    """The class names in ``batches.meta``."""
    with open(path, "rb") as handle:
        meta = NumpyOnlyUnpickler(handle, encoding="latin1").load()
    meta = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in meta.items()}
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in meta["label_names"]]


def find_batches_folder(path: str | Path) -> Path | None:
    """The folder holding the python batches: ``path`` itself or its ``cifar-10-batches-py``."""
    root = Path(path)
    for folder in (root, root / "cifar-10-batches-py"):
        if folder.is_dir() and any((folder / name).is_file() for name in TRAIN_BATCHES + TEST_BATCHES):
            return folder
    return None


class Cifar10Python:
    """The python-format batches of one split, all decoded in memory (150 MB for 50k)."""

    def __init__(self, root: str | Path, split: str = "train") -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        folder = find_batches_folder(root)
        if folder is None:
            raise ValueError(f"{root}: no CIFAR-10 python batches (data_batch_1 ... test_batch)")
        files = [folder / n for n in (TRAIN_BATCHES if split == "train" else TEST_BATCHES)]
        files = [f for f in files if f.is_file()]
        if not files:
            raise ValueError(f"{folder}: no {split} batches")
        parts = [read_batch(f) for f in files]
        self.images = np.concatenate([p[0] for p in parts])
        self.labels = [int(x) for p in parts for x in p[1]]
        self.names = [f"{f.name}:{n}" for f, p in zip(files, parts, strict=True) for n in p[2]]
        meta = folder / "batches.meta"
        self.classes = read_meta(meta) if meta.is_file() else list(CLASSES)

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index], "RGB")

    def label_of(self, index: int) -> int:
        return self.labels[index]

    def name_of(self, index: int) -> str:
        return self.names[index]


class Cifar10Jpeg:
    """One split of a CIFAR-10 JPEG archive (``<prefix>/<split>/<class>/*.jpg`` in a tar.gz).

    ``limit_per_class`` keeps the first images of each class in file-name order.
    """

    def __init__(self, archive: str | Path, split: str = "train", limit_per_class: int | None = None) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.archive = Path(archive)
        members: dict[str, list[tuple[str, bytes]]] = {name: [] for name in CLASSES}
        try:
            with tarfile.open(self.archive, "r:*") as tar:
                for member in tar:
                    parts = member.name.split("/")
                    if not member.isfile() or len(parts) < 3 or parts[-3] != split:
                        continue
                    if parts[-2] not in members or not parts[-1].lower().endswith((".jpg", ".jpeg", ".png")):
                        continue
                    handle = tar.extractfile(member)
                    if handle is not None:
                        members[parts[-2]].append((member.name, handle.read()))
        except (tarfile.TarError, OSError, EOFError) as error:
            raise ValueError(f"{self.archive}: not a readable tar archive ({error})") from None
        self.classes = list(CLASSES)
        self.names: list[str] = []
        self.data: list[bytes] = []
        self.labels: list[int] = []
        for label, name in enumerate(CLASSES):
            files = sorted(members[name])[:limit_per_class]
            self.names += [f"{self.archive.name}:{n}" for n, _ in files]
            self.data += [d for _, d in files]
            self.labels += [label] * len(files)
        if not self.labels:
            raise ValueError(f"{self.archive}: no {split}/<class>/*.jpg members for the CIFAR-10 classes")

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> Image.Image:
        try:
            image = Image.open(io.BytesIO(self.data[index]))
            image.load()
        except (OSError, SyntaxError, ValueError) as error:
            raise UnreadableImage(f"{self.names[index]}: not a readable image ({error})") from None
        return image.convert("RGB")

    def label_of(self, index: int) -> int:
        return self.labels[index]

    def name_of(self, index: int) -> str:
        return self.names[index]
