"""Deployment: BatchNorm folding and fusion, ONNX and TFLite export and runtimes, int8.

Example::

    model = lightnets.create_model("mobilenet_v2", weights="mobilenet_v2_100_224.tflite_uint8")
    fast = deploy(model)                        # BN folded, Conv-BN-act fused, inference only
    export_onnx(model, "mnv2.onnx")             # opset 18, dynamic batch, checked, metadata
    runtime = Runtime("mnv2.onnx", threads=1)   # ONNX Runtime, the PyTorch path's preprocessing
    export_tflite(model, "mnv2.tflite")         # for LiteRT (pip install "lightnets[tflite]")
    phone = LiteRTRuntime("mnv2.tflite")        # LiteRT (XNNPACK), the same preprocessing
    quantize_onnx("mnv2.onnx", "mnv2_int8.onnx", "imagenette/train")  # int8 QDQ, real images
    int8 = quantize_pytorch(model, "imagenette/train")  # int8 on PyTorch's x86 kernels

The memory-efficient executor for inverted residuals is in :mod:`.memory_efficient`.
"""

from .calibration import calibration_batches, calibration_files, prepare_images
from .export import OnnxMetadata, export_onnx, read_metadata
from .fold import FusedConvAct, deploy, fold_batchnorm, fuse_conv_bn_act, is_deployed
from .litert import LiteRTRuntime
from .quantize import grid_scales, quantization_info, quantize_onnx, quantize_pytorch, top1_agreement
from .runtime import ModelFile, Runtime, open_runtime, session_options
from .tflite import export_tflite, read_tflite_metadata

__all__ = [
    "FusedConvAct",
    "LiteRTRuntime",
    "ModelFile",
    "OnnxMetadata",
    "Runtime",
    "calibration_batches",
    "calibration_files",
    "deploy",
    "export_onnx",
    "export_tflite",
    "fold_batchnorm",
    "fuse_conv_bn_act",
    "grid_scales",
    "is_deployed",
    "open_runtime",
    "prepare_images",
    "quantization_info",
    "quantize_onnx",
    "quantize_pytorch",
    "read_metadata",
    "read_tflite_metadata",
    "session_options",
    "top1_agreement",
]
