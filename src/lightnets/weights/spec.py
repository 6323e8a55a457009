"""Weight sets as typed metadata: where the files live, what they are, how to use them.

A tag names a weight set: ``<model>_<width x100>_<resolution>.<source>``, e.g.
``mobilenet_v2_100_224.tflite_uint8``. Each spec says which registry model and keyword
arguments the weights fit, the files (canonical public URL, sha256, size, and the path
under a local weights root such as ``$LIGHTNETS_WEIGHTS``), the file format (which
importer reads it), the evaluation transform, the categories, the metrics the authors
report (with the source), and the license.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from ..data.categories import IMAGENET
from ..data.transforms import EvalTransform, tf_crop


@dataclass(frozen=True)
class WeightFile:
    """One file of a weight set: its path under a weights root, and where it comes from."""

    path: str
    url: str
    sha256: str
    size: int | None = None


@dataclass(frozen=True)
class WeightSpec:
    """One weight set. ``params`` and ``madds`` describe the model built from ``model`` and
    ``model_kwargs``, as :func:`lightnets.profile` counts it for one ``3 x size x size``
    image (``size = transform.size``): ``params`` is a count of weights and biases with
    BatchNorm apart (a file with BatchNorm folded into biases stores more), ``madds`` a
    count of multiply-adds, each counted once. The tests recompute both for every tag.
    """

    tag: str
    model: str
    model_kwargs: dict[str, Any]
    files: tuple[WeightFile, ...]
    format: str  # the importer: "tflite", "gluon_npy", "ncnn", "deep_compression", "safetensors"
    transform: EvalTransform
    categories: str = IMAGENET
    metrics: dict[str, float] = field(default_factory=dict)  # as reported, percent
    metrics_source: str = ""
    license: str = ""
    source: str = ""  # repository @ commit the files are taken from
    params: int | None = None  # parameters (a count), BatchNorm apart
    madds: int | None = None  # multiply-adds (a count) for one image at transform.size
    notes: str = ""

    def to_dict(self) -> dict:
        return {
            "tag": self.tag,
            "model": self.model,
            "model_kwargs": dict(self.model_kwargs),
            "format": self.format,
            "transform": self.transform.to_dict(),
            "categories": self.categories,
            "metrics": dict(self.metrics),
            "metrics_source": self.metrics_source,
            "license": self.license,
            "source": self.source,
            "params": self.params,
            "madds": self.madds,
            "files": [f.__dict__ for f in self.files],
        }


# TF-slim / TFLite: pixels (x - 128) / 128 (the uint8 input's zero point and scale).
def _tflite_transform(size: int) -> EvalTransform:
    return EvalTransform(size, tf_crop(size), "bilinear", (128.0,) * 3, (128.0,) * 3, "RGB")


# Caffe (forresti, Han et al.): BGR, 0..255, mean subtracted, no scaling, 227 crop of 256.
CAFFE_227 = EvalTransform(227, 256, "bilinear", (104.0, 117.0, 123.0), (1.0, 1.0, 1.0), "BGR")

_CORAL = "https://raw.githubusercontent.com/google-coral/test_data/104342d2d3480b3e66203073dac24f4e2dbb4c41"
_CORAL_SOURCE = "google-coral/test_data @ 104342d2"
_NCNN = "https://raw.githubusercontent.com/nihui/ncnn-assets/9489f876aebdaa846af3786f70ea5da6be198243/models"
_HAN = (
    "https://raw.githubusercontent.com/songhan/SqueezeNet_compressed/fb13faa2cf121ced9999f8a9d538ec6c56084733"
)
_WEBNN = (
    "https://raw.githubusercontent.com/BruceDai/test-data/38659dfbc5f69daddb71b42d10eb4970176ddc54/"
    "models/squeezenet1.1_nchw"
)


def _coral(folder: str, name: str, sha256: str, size: int) -> WeightFile:
    return WeightFile(f"{folder}/{name}", f"{_CORAL}/{name}", sha256, size)


def _gluon_files() -> tuple[WeightFile, ...]:
    """The 52 .npy tensors and 3 test pairs, from the checksum manifest shipped here."""
    folder = "squeezenet/squeezenet1_1-gluon-onnxzoo-npy"
    manifest = resources.files(__package__).joinpath("manifests/squeezenet1_1_gluon_npy.sha256")
    files = []
    for line in manifest.read_text().splitlines():
        sha256, name = line.split()
        files.append(WeightFile(f"{folder}/{name}", f"{_WEBNN}/{name}", sha256))
    return tuple(files)


V1_FOLDER = "mobilenet_v1/coral-tflite-uint8"
V2_FOLDER = "mobilenet_v2/coral-tflite-int8"
TF_V1 = {"act": "relu6", "padding": "tf_same"}
TF_V2 = {"width": 1.0, "padding": "tf_same"}
TFLITE_NOTE = (
    "Quantisation-aware uint8 TFLite model: weights dequantised, BatchNorm already folded "
    "into them; 1001 outputs, the background class dropped."
)

WEIGHTS: dict[str, WeightSpec] = {}


def _register(spec: WeightSpec) -> None:
    if spec.tag in WEIGHTS:
        raise ValueError(f"weights tag {spec.tag!r} registered twice")
    WEIGHTS[spec.tag] = spec


for _width, _size, _sha, _bytes, _top1, _top5, _params, _madds in (
    (
        0.25,
        128,
        "cb273c23ee76374b05b9583177e28aa19744858a7679c56a250e83d0333da785",
        525_598,
        39.9,
        65.8,
        464_600,
        13_570_048,
    ),
    (
        0.5,
        160,
        "3cc6d2ca460abd2e0f699a6d0d2550c6b61c6e3b0e27a3616e384ea74cb86f43",
        1_392_846,
        57.7,
        81.3,
        1_320_648,
        76_524_800,
    ),
    (
        0.75,
        192,
        "41daeb22fdcf947e0e5ec32373aa9df7c31f3ef45dbd0ef7b5940fbce3c20f6a",
        2_652_542,
        66.2,
        87.1,
        2_569_144,
        239_273_472,
    ),
):
    _register(
        WeightSpec(
            tag=f"mobilenet_v1_{round(_width * 100):03d}_{_size}.tflite_uint8",
            model="mobilenet_v1",
            model_kwargs={"width": _width, **TF_V1},
            files=(_coral(V1_FOLDER, f"mobilenet_v1_{_width}_{_size}_quant.tflite", _sha, _bytes),),
            format="tflite",
            transform=_tflite_transform(_size),
            metrics={"top1": _top1, "top5": _top5},
            metrics_source="TF-slim mobilenet_v1.md (quantised models)",
            license="Apache-2.0",
            source=_CORAL_SOURCE,
            params=_params,
            madds=_madds,
            notes=TFLITE_NOTE,
        )
    )

_register(
    WeightSpec(
        tag="mobilenet_v2_100_224.tflite_uint8",
        model="mobilenet_v2",
        model_kwargs=dict(TF_V2),
        files=(
            _coral(
                V2_FOLDER,
                "mobilenet_v2_1.0_224_quant.tflite",
                "7aad0c74c5e3c06e5eb3c827e13304fdd68a83da6087d92ee169c24ff9fd4776",
                3_610_798,
            ),
        ),
        format="tflite",
        transform=EvalTransform(224, 256, "bilinear", (128.0,) * 3, (128.0,) * 3, "RGB"),
        metrics={"top1": 70.8, "top5": 89.9},
        metrics_source="TFLite hosted models (Mobilenet_V2_1.0_224_quant)",
        license="Apache-2.0",
        source=_CORAL_SOURCE,
        params=3_470_760,
        madds=300_774_272,
        notes=TFLITE_NOTE,
    )
)
_register(
    WeightSpec(
        tag="mobilenet_v2_100_224.tflite_int8_ptq",
        model="mobilenet_v2",
        model_kwargs=dict(TF_V2),
        files=(
            _coral(
                V2_FOLDER,
                "tf2_mobilenet_v2_1.0_224_ptq.tflite",
                "5d3137241276e79c86d14a74fe43581398ae0e815191d3dba45495b810840e8c",
                4_070_174,
            ),
        ),
        format="tflite",
        # The input's quantisation: scale 0.007843 (1/127.5), zero point 127.
        transform=EvalTransform(224, 256, "bilinear", (127.0,) * 3, (127.5,) * 3, "RGB"),
        license="Apache-2.0",
        source=_CORAL_SOURCE,
        params=3_470_760,
        madds=300_774_272,
        notes="Post-training int8 quantisation of a TF2 (Keras) MobileNetV2, per-channel weights; "
        "1001 outputs, the background class dropped. No accuracy is stated with it.",
    )
)
_register(
    WeightSpec(
        tag="squeezenet1_1.gluon_npy",
        model="squeezenet1_1",
        model_kwargs={},
        files=_gluon_files(),
        format="gluon_npy",
        transform=EvalTransform(224, 256, "bilinear"),
        metrics={"top1": 56.34, "top5": 79.12},
        metrics_source="ONNX model zoo, squeezenet1.1-7",
        license="Apache-2.0",
        source="BruceDai/test-data @ 38659dfb (weights from the ONNX model zoo's MXNet Gluon model)",
        params=1_235_496,
        madds=349_151_936,
    )
)
_register(
    WeightSpec(
        tag="squeezenet1_1.ncnn_fp16",
        model="squeezenet1_1",
        model_kwargs={},
        files=(
            WeightFile(
                "squeezenet/squeezenet1_1-caffe-ncnn-fp16/squeezenet_v1.1.param",
                f"{_NCNN}/squeezenet_v1.1.param",
                "6a38784ab51f056e5ecdf208120f8a9174b74831255e66b74c4dd6bf755a4324",
                7_145,
            ),
            WeightFile(
                "squeezenet/squeezenet1_1-caffe-ncnn-fp16/squeezenet_v1.1.bin",
                f"{_NCNN}/squeezenet_v1.1.bin",
                "928c82c485a16064df88794d83c333025055e60c08f73217222244ab0ed2dbc6",
                2_478_984,
            ),
        ),
        format="ncnn",
        transform=CAFFE_227,
        metrics={"top1": 57.5, "top5": 80.3},
        metrics_source="forresti/SqueezeNet (v1.1: the same accuracy as v1.0)",
        license="BSD-2-Clause (forresti/SqueezeNet weights, converted by ncnn)",
        source="nihui/ncnn-assets @ 9489f876",
        params=1_235_496,
        madds=387_747_520,
        notes="The authors' Caffe SqueezeNet v1.1, stored by ncnn with fp16 weights.",
    )
)
_register(
    WeightSpec(
        tag="squeezenet1_0.deep_compression",
        model="squeezenet1_0",
        model_kwargs={},
        files=(
            WeightFile(
                "squeezenet/squeezenet1_0-caffe-deepcompression/compressed_SqueezeNet.net",
                f"{_HAN}/compressed_SqueezeNet.net",
                "e4ab6960ae8cd81505e1c2136921201507e930966c53deaf15862a395b3a3261",
                675_763,
            ),
        ),
        format="deep_compression",
        transform=CAFFE_227,
        metrics={"top1": 57.5, "top5": 80.3},
        metrics_source="SqueezeNet paper (Deep Compression, 0.66 MB model)",
        license="BSD (songhan/SqueezeNet_compressed)",
        source="songhan/SqueezeNet_compressed @ fb13faa2",
        params=1_248_424,
        madds=832_667_936,
        notes="SqueezeNet v1.0 after Deep Compression: pruned, 8-bit codebooks, sparse indices.",
    )
)


def list_weights(pattern: str = "*") -> list[str]:
    """Weight tags matching a shell-style pattern, sorted."""
    return sorted(t for t in WEIGHTS if fnmatch.fnmatchcase(t, pattern))


def get_weights(tag: str) -> WeightSpec:
    try:
        return WEIGHTS[tag]
    except KeyError:
        raise ValueError(f"unknown weights {tag!r}; known weights: {', '.join(list_weights())}") from None
