"""ONNX export: BatchNorm folded, dynamic batch, checked, with the metadata to use it.

The graph is made by PyTorch's ``torch.export``-based exporter (``torch.onnx.export(...,
dynamo=True)``), whose optimiser leaves plain ONNX operators: ``Conv`` (TF "SAME"
padding merged into its ``pads``), ``Clip``/``Relu``, ``Add``, ``Concat``, pools, ``Gemm``
and, for ShuffleNet's channel shuffle, ``Reshape``-``Transpose``-``Reshape`` whose batch
entry stays symbolic. The file then passes ``onnx.checker`` (full check, with shape
inference) and carries, in ``metadata_props``, everything a runtime needs to feed it: the
model name and arguments, input size, evaluation transform (resize, crop, mean/std in
0..255 pixel units, channel order) and class names. :func:`read_metadata` reads them back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..data.transforms import EvalTransform
from ..files import atomic_path
from ..zoo import labels_of, transform_of
from .fold import fold_batchnorm

if TYPE_CHECKING:
    import onnx

__all__ = [
    "DEFAULT_OPSET",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "OnnxMetadata",
    "export_metadata",
    "export_onnx",
    "onnx_metadata",
    "read_metadata",
    "save_onnx",
    "write_metadata",
]

DEFAULT_OPSET = 18
MIN_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
PREFIX = "lightnets."


@dataclass
class OnnxMetadata:
    """What a lightnets ONNX file says about itself (all optional for foreign files)."""

    model_name: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    input_size: tuple[int, int, int] | None = None  # (C, H, W)
    transform: EvalTransform | None = None
    class_names: list[str] = field(default_factory=list)
    categories: str = ""
    weights: str | None = None
    precision: str = "fp32"  # or "int8" (QDQ)
    extra: dict[str, str] = field(default_factory=dict)  # every other key, as stored

    def to_props(self) -> dict[str, str]:
        """The ``metadata_props`` entries (string to string) for this metadata."""
        props = {
            f"{PREFIX}model": self.model_name or "",
            f"{PREFIX}model_kwargs": json.dumps(self.model_kwargs, sort_keys=True),
            f"{PREFIX}precision": self.precision,
            f"{PREFIX}class_names": json.dumps(self.class_names),
            f"{PREFIX}categories": self.categories,
        }
        if self.input_size is not None:
            props[f"{PREFIX}input_size"] = json.dumps(list(self.input_size))
        if self.transform is not None:
            props[f"{PREFIX}transform"] = json.dumps(self.transform.to_dict(), sort_keys=True)
            # The same numbers under plain keys, for readers that know nothing of lightnets.
            props[f"{PREFIX}mean"] = json.dumps(list(self.transform.mean))
            props[f"{PREFIX}std"] = json.dumps(list(self.transform.std))
            props[f"{PREFIX}channel_order"] = self.transform.channel_order
        if self.weights:
            props[f"{PREFIX}weights"] = self.weights
        props.update(self.extra)
        return props

    @classmethod
    def from_props(cls, props: dict[str, str]) -> OnnxMetadata:
        """Parse ``metadata_props`` (as a dict); keys it does not know go to ``extra``."""
        props = dict(props)

        def take(key: str) -> str | None:
            return props.pop(PREFIX + key, None)

        meta = cls()
        meta.model_name = take("model") or None
        # The file is untrusted: a value that is not what lightnets writes is a ValueError
        # naming the key, never a TypeError from deep inside.
        key = ""
        try:
            if (text := take(key := "model_kwargs")) is not None:
                meta.model_kwargs = json.loads(text)
                if not isinstance(meta.model_kwargs, dict):
                    raise ValueError("not a JSON object")
            if (text := take(key := "input_size")) is not None:
                size = json.loads(text)
                if (
                    not isinstance(size, list)
                    or len(size) != 3
                    or not all(
                        isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 1 << 16 for v in size
                    )
                ):
                    raise ValueError(f"expected [C, H, W], got {text[:80]!r}")
                channels, height, width = size
                meta.input_size = (channels, height, width)
            if (text := take(key := "transform")) is not None:
                meta.transform = EvalTransform.from_dict(json.loads(text))
            if (text := take(key := "class_names")) is not None:
                names = json.loads(text)
                if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                    raise ValueError("not a list of names")
                meta.class_names = names
        except (ValueError, TypeError, RecursionError) as error:
            raise ValueError(f"bad lightnets metadata {PREFIX}{key}: {error}") from None
        meta.categories = take("categories") or ""
        meta.weights = take("weights")
        meta.precision = take("precision") or "fp32"
        for key in ("mean", "std", "channel_order"):  # derived from the transform
            take(key)
        meta.extra = props
        return meta


def onnx_metadata(
    model: nn.Module,
    input_size: tuple[int, int, int],
    transform: EvalTransform | None = None,
    class_names: Sequence[str] | None = None,
) -> OnnxMetadata:
    """The metadata of ``model``'s export: name, arguments, input size, transform, classes."""
    config = getattr(model, "pretrained_cfg", None)
    kwargs = getattr(model, "model_kwargs", {}) or {}
    return OnnxMetadata(
        model_name=getattr(model, "model_name", None) or type(model).__name__,
        model_kwargs=json.loads(json.dumps(kwargs, default=str)),
        input_size=input_size,
        transform=transform or transform_of(model),
        class_names=list(class_names) if class_names is not None else _class_names(model),
        categories=config.categories if config is not None and isinstance(config.categories, str) else "",
        weights=str(config.source) if config is not None else None,
    )


def _class_names(model: nn.Module) -> list[str]:
    try:
        return labels_of(model)
    except AttributeError:  # not a lightnets classifier: no num_classes
        return []


def write_metadata(proto: Any, metadata: OnnxMetadata | dict[str, str]) -> None:
    """Store ``metadata`` in the ``metadata_props`` of an ``onnx.ModelProto`` (replacing keys)."""
    props = metadata.to_props() if isinstance(metadata, OnnxMetadata) else dict(metadata)
    kept = [p for p in proto.metadata_props if p.key not in props]
    del proto.metadata_props[:]
    for p in kept:
        proto.metadata_props.add(key=p.key, value=p.value)
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)


def read_metadata(source: str | Path | onnx.ModelProto) -> OnnxMetadata:
    """The lightnets metadata of an ONNX file (a path or an ``onnx.ModelProto``)."""
    import onnx

    proto = onnx.load(str(source), load_external_data=False) if isinstance(source, str | Path) else source
    return OnnxMetadata.from_props({p.key: p.value for p in proto.metadata_props})


def _input_shape(model: nn.Module, input_size: int | Sequence[int] | None, transform: EvalTransform):
    """(C, H, W) from an int side, an (H, W) or (C, H, W) size, or the transform."""
    channels = int((getattr(model, "model_kwargs", None) or {}).get("in_channels", 3))
    if input_size is None:
        return channels, transform.size, transform.size
    if isinstance(input_size, int):
        return channels, input_size, input_size
    size = tuple(int(v) for v in input_size)
    if len(size) == 2:
        return (channels, *size)
    if len(size) == 3:
        return size
    raise ValueError(f"input_size must be a side, (H, W) or (C, H, W); got {input_size!r}")


def export_metadata(
    model: nn.Module,
    input_size: int | Sequence[int] | None = None,
    transform: EvalTransform | None = None,
    class_names: Sequence[str] | None = None,
) -> OnnxMetadata:
    """The metadata of an export of ``model`` at ``input_size`` (see :func:`export_onnx`):
    at another size than the weights' crop, the transform crops that size and resizes in
    proportion."""
    transform = transform or transform_of(model)
    shape = _input_shape(model, input_size, transform)
    if transform.size != shape[1]:
        resize = max(shape[1], round(transform.resize * shape[1] / transform.size))
        transform = dataclasses.replace(transform, size=shape[1], resize=resize)
    return onnx_metadata(model, shape, transform, class_names)


def export_onnx(
    model: nn.Module,
    path: str | Path,
    input_size: int | Sequence[int] | None = None,
    opset: int = DEFAULT_OPSET,
    fold: bool = True,
    dynamic_batch: bool = True,
    transform: EvalTransform | None = None,
    class_names: Sequence[str] | None = None,
    check: bool = True,
) -> Path:
    """Export ``model`` to an ONNX file at ``path`` and return the path.

    ``input_size`` is the side (or (H, W), or (C, H, W)) of the input; by default the
    crop size of the model's weights (``pretrained_cfg.transform.size``) or 224. The
    batch dimension is symbolic (``batch``) unless ``dynamic_batch=False``. BatchNorm is
    folded first (``fold=False`` keeps it as the exporter's choice). The input is named
    ``input`` and the output ``logits``. The metadata (see :class:`OnnxMetadata`) comes
    from the model's weights (``transform``, ``class_names`` override it). ``check``
    runs ``onnx.checker`` with full shape inference, raising on any error.
    """
    import onnx

    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is too old: lightnets exports opset {MIN_OPSET} or newer")
    metadata = export_metadata(model, input_size, transform, class_names)
    assert metadata.input_size is not None
    shape = metadata.input_size
    export_model = fold_batchnorm(model) if fold else model
    export_model.eval()
    # Batch 2 in the example: torch.export specialises a dimension whose example is 1.
    example = torch.randn(2 if dynamic_batch else 1, *shape)
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # the exporter's deprecation notices are not the user's concern
        program = torch.onnx.export(
            export_model,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            # A model with several outputs names them (a detector: boxes and scores).
            output_names=list(getattr(model, "output_names", (OUTPUT_NAME,))),
            dynamic_shapes=dynamic_shapes,
            opset_version=opset,
            optimize=True,
            verbose=False,
        )
    if program is None:  # dynamo=True always gives a program; the hint covers the old exporter
        raise RuntimeError("torch.onnx.export gave no ONNX program")
    proto = program.model_proto
    proto.producer_name = "lightnets"
    proto.doc_string = f"{metadata.model_name} exported by lightnets (fp32, BatchNorm folded: {fold})"
    write_metadata(proto, metadata)
    if check:
        onnx.checker.check_model(proto, full_check=True)
    return save_onnx(proto, path)


def save_onnx(proto: Any, path: str | Path) -> Path:
    """Write an ``onnx.ModelProto`` to ``path`` atomically: on a full or read-only disk
    :class:`~lightnets.files.OutputError` is raised and an existing file stays intact."""
    import onnx

    path = Path(path)
    with atomic_path(path) as partial:
        onnx.save(proto, str(partial))
    return path
