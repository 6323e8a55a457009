"""Running an exported model in ONNX Runtime with lightnets' own preprocessing.

:class:`ModelFile` is what every runtime of an exported file shares (the metadata, the
preprocessing, the face of a classifier); :class:`Runtime` is ONNX Runtime's, and
:class:`~lightnets.deploy.litert.LiteRTRuntime` LiteRT's.

:class:`Runtime` reads the metadata :func:`~lightnets.deploy.export_onnx` stored (input
size, evaluation transform, class names) and prepares images with the same
:class:`~lightnets.data.EvalTransform` as the PyTorch path, so a picture gives the same
tensor, and the same answer to float rounding, in both. It quacks like a lightnets
classifier (``num_classes``, ``pretrained_cfg``, ``eval()``, called on a tensor it
returns a tensor), so :func:`lightnets.predict` and :func:`lightnets.evaluate` take it
as they take a model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..data.images import load_image
from ..data.transforms import EvalTransform, tf_crop
from ..weights.load import PretrainedConfig
from .export import OnnxMetadata

__all__ = ["FILE_RUNTIMES", "ModelFile", "Runtime", "open_runtime", "session_options"]


def session_options(threads: int | None = None, optimization: str = "all") -> Any:
    """ONNX Runtime session options: ``threads`` intra-op threads (None: all cores),
    one inter-op thread (sequential execution) and the graph optimisation level
    (``"disable"``, ``"basic"``, ``"extended"``, ``"layout"`` or ``"all"``)."""
    import onnxruntime as ort

    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if hasattr(ort.GraphOptimizationLevel, "ORT_ENABLE_LAYOUT"):
        levels["layout"] = ort.GraphOptimizationLevel.ORT_ENABLE_LAYOUT
    if optimization not in levels:
        raise ValueError(f"unknown optimisation level {optimization!r}; expected one of {list(levels)}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1 (or None for all cores), got {threads}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0  # 0: ONNX Runtime's default, one per core
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = levels[optimization]
    options.log_severity_level = 3  # errors only
    return options


class ModelFile:
    """What every exported-file runtime shares: the metadata, the preprocessing, and the
    face of a lightnets classifier. Subclasses open the file and run a checked batch."""

    path: Path
    threads: int | None
    metadata: OnnxMetadata
    input_size: tuple[int, int, int]  # (C, H, W)
    kind = "exported"  # the file kind, for messages

    def _describe_model(self, metadata: OnnxMetadata, classes: int | None) -> None:
        """Set the transform, class names and lookups from ``metadata`` (after input_size)."""
        self.metadata = metadata
        self.transform = metadata.transform or self._default_transform()
        if self.transform.size != self.input_size[1]:
            raise ValueError(
                f"{self.path}: its transform crops {self.transform.size} pixels but the input is "
                f"{self.input_size[1]}x{self.input_size[2]}"
            )
        self.num_classes = classes if isinstance(classes, int) else len(metadata.class_names)
        self.class_names = metadata.class_names or [str(i) for i in range(self.num_classes)]
        # What lightnets.predict / evaluate look up on a model.
        self.pretrained_cfg = PretrainedConfig(
            str(self.path), self.transform, list(self.class_names), {self.kind: str(self.path)}
        )
        self.model_name = metadata.model_name

    def _default_transform(self) -> EvalTransform:
        # A foreign file: ImageNet normalisation and the usual 87.5% centre crop.
        size = self.input_size[1]
        return EvalTransform(size, tf_crop(size))

    @property
    def precision(self) -> str:
        return self.metadata.precision

    def eval(self) -> ModelFile:
        """Nothing to switch; here so code written for models takes a runtime."""
        return self

    def _checked(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        """A preprocessed (N, C, H, W) float batch as a float32 array; anything else refused."""
        dtype = batch.dtype if isinstance(batch, np.ndarray | torch.Tensor) else np.asarray(batch).dtype
        floating = (
            dtype.is_floating_point if isinstance(dtype, torch.dtype) else np.issubdtype(dtype, np.floating)
        )
        if not floating:
            # uint8 pixels or integer arrays would be fed as if normalised and give a wrong class.
            name = str(dtype).removeprefix("torch.")
            raise ValueError(
                f"expected a preprocessed floating-point batch (normalised as the model's transform "
                f"says), got {name}; for images use {type(self).__name__}.classify or .preprocess"
            )
        if isinstance(batch, torch.Tensor):
            batch = batch.detach().cpu().float().numpy()
        array = np.ascontiguousarray(batch, dtype=np.float32)
        if array.ndim == 3:
            array = array[None]
        if array.ndim != 4 or tuple(array.shape[1:]) != tuple(self.input_size):
            raise ValueError(
                f"expected a batch of shape (N, {', '.join(map(str, self.input_size))}), got {array.shape}"
            )
        return array

    def run(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        """Logits (N, classes) of a preprocessed (N, C, H, W) float batch, as a NumPy array.

        Integer input (uint8 pixels, int64) is refused with ``ValueError``: the network
        takes normalised floats; :meth:`classify` prepares images.
        """
        return self._run(self._checked(batch))

    def _run(self, array: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.run(batch))

    def preprocess(self, image: Image.Image | str | Path) -> np.ndarray:
        """One image (a PIL image or a file) as the model's (C, H, W) float32 input."""
        if not isinstance(image, Image.Image):
            image = load_image(image, self.transform.resize)
        return self.transform(image).numpy()

    def preprocess_batch(self, images: Iterable[Image.Image | str | Path]) -> np.ndarray:
        return np.stack([self.preprocess(image) for image in images])

    def classify(self, images: Iterable[Image.Image | str | Path]) -> np.ndarray:
        """Logits of images (files or PIL images), preprocessed as the metadata says."""
        return self.run(self.preprocess_batch(images))

    def predict(self, inputs: Iterable[str | Path], topk: int = 5) -> tuple[list, list[str]]:
        """Top-k classes of image files and folders: :func:`lightnets.predict` on this runtime."""
        from ..classify import predict

        return predict(self, inputs, topk)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.path)!r}, model={self.model_name}, input={self.input_size}, "
            f"precision={self.precision}, threads={self.threads})"
        )


class Runtime(ModelFile):
    """An ONNX model in an ONNX Runtime session, with its lightnets metadata.

    ``Runtime("model.onnx", threads=1)``; ``runtime(batch)`` runs a (N, C, H, W) float
    tensor or array and returns the logits in kind; ``runtime.predict(paths)`` gives
    top-k classes of image files like :func:`lightnets.predict`.
    ``options`` replaces the session options made from ``threads`` and ``optimization``.
    """

    kind = "onnx"

    def __init__(
        self,
        path: str | Path,
        threads: int | None = None,
        optimization: str = "all",
        providers: Sequence[str] = ("CPUExecutionProvider",),
        options: Any | None = None,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"{self.path}: no such ONNX file")
        self.threads = threads
        options = options or session_options(threads, optimization)
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=list(providers))
        except Exception as error:  # ORT raises its own exception types (Fail, InvalidGraph ...)
            raise ValueError(f"{self.path}: ONNX Runtime cannot load it ({error})") from error
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1:
            raise ValueError(f"{self.path}: expected one input (an image batch), found {len(inputs)}")
        self.input_name = inputs[0].name
        self.output_name = outputs[0].name
        metadata = OnnxMetadata.from_props(self.session.get_modelmeta().custom_metadata_map)
        self.input_size = self._input_size(inputs[0].shape, metadata.input_size)
        # Class scores are (N, classes) from a classifier, (N, classes, H, W) from a segmenter,
        # the last output (N, anchors, classes) from a detector.
        shape = outputs[-1].shape or []
        self._describe_model(metadata, shape[1] if len(shape) == 4 else shape[-1] if shape else None)

    def _input_size(self, shape: list, stated: tuple[int, int, int] | None) -> tuple[int, int, int]:
        if len(shape) != 4:
            raise ValueError(f"{self.path}: expected an (N, C, H, W) input, found shape {shape}")
        if stated is not None:
            return stated
        _, channels, height, width = shape
        if not all(isinstance(v, int) for v in (channels, height, width)):
            raise ValueError(f"{self.path}: the input size is neither fixed nor stated in its metadata")
        return channels, height, width

    def _run(self, array: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: array})[0]


def _export_cache() -> Path:
    from ..weights.store import cache_folder

    return cache_folder("onnx")


FILE_RUNTIMES = ("onnxruntime", "litert")  # the runtimes of exported files


def open_runtime(
    weights: str | Path,
    model: str | None = None,
    weights_root: str | Path | None = None,
    threads: int | None = None,
    cache: bool = True,
    backend: str = "onnxruntime",
) -> ModelFile:
    """A runtime for an exported file (``.onnx``: ONNX Runtime, ``.tflite``: LiteRT), or
    for weights (a tag or a weights file) exported on the fly for ``backend``
    (``"onnxruntime"`` or ``"litert"``).

    An export of a registered weights tag is kept in the cache
    (``$LIGHTNETS_CACHE/onnx``) and reused; a weights file is exported to a temporary
    folder each time.
    """
    from ..version import __version__
    from ..weights.spec import WEIGHTS
    from ..zoo import model_for_weights
    from .export import DEFAULT_OPSET, export_onnx
    from .litert import LiteRTRuntime
    from .tflite import export_tflite

    if backend not in FILE_RUNTIMES:
        raise ValueError(f"unknown runtime {backend!r}; expected one of {FILE_RUNTIMES}")
    opener: Callable[..., ModelFile] = Runtime if backend == "onnxruntime" else LiteRTRuntime
    export: Callable[[nn.Module, Path], Path] = export_onnx if backend == "onnxruntime" else export_tflite
    suffix = f".opset{DEFAULT_OPSET}.onnx" if backend == "onnxruntime" else ".tflite"
    path = Path(weights)
    if path.suffix in (".onnx", ".tflite"):
        if not suffix.endswith(path.suffix):
            raise ValueError(f"{path} is not a file for {backend}: run it with the other runtime")
        return opener(path, threads=threads)
    tagged = isinstance(weights, str) and weights in WEIGHTS
    if cache and tagged:
        target = _export_cache() / f"{weights}.lightnets-{__version__}{suffix}"
        if not target.is_file():
            export(model_for_weights(weights, model, weights_root), target)  # atomic
        return opener(target, threads=threads)
    import tempfile

    loaded = model_for_weights(weights, model, weights_root)
    with tempfile.TemporaryDirectory() as folder:
        # The session holds the model once loaded.
        return opener(export(loaded, Path(folder) / f"model{suffix}"), threads=threads)
