"""Running a TFLite file in LiteRT (XNNPACK) with lightnets' own preprocessing.

:class:`LiteRTRuntime` is the LiteRT twin of :class:`~lightnets.deploy.Runtime`: it
reads the metadata :func:`~lightnets.deploy.export_tflite` stored, prepares images with
the model's :class:`~lightnets.data.EvalTransform`, and is called on (N, C, H, W) float
batches like a model. Inside, each image goes to the interpreter as the file expects it:
NHWC, and for an int8 file quantised with the input's scale and zero point; integer
outputs (the official files') come back dequantised. A file made elsewhere (the official
releases) works too, with ImageNet preprocessing unless it says otherwise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..cpu import all_threads
from .runtime import ModelFile
from .tflite import native_output_held, read_tflite_metadata

__all__ = ["LiteRTRuntime"]


class LiteRTRuntime(ModelFile):
    """A TFLite file in the LiteRT interpreter (XNNPACK delegate), ``threads`` threads
    (None: every core the process may use)."""

    kind = "tflite"

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as error:
            raise ValueError(
                'running TFLite files needs LiteRT: pip install "lightnets[tflite]" (or ai-edge-litert)'
            ) from error
        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"{self.path}: no such TFLite file")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1 (or None for all cores), got {threads}")
        self.threads = threads
        try:
            metadata = read_tflite_metadata(self.path)
        except ValueError as error:
            raise ValueError(f"{self.path}: {error}") from None
        try:
            with native_output_held():  # a notice on stderr for every file opened
                self.interpreter = Interpreter(
                    model_path=str(self.path), num_threads=threads or all_threads()
                )
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            raise ValueError(f"{self.path}: LiteRT cannot load it ({error})") from error
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(inputs) != 1:
            raise ValueError(f"{self.path}: expected one input (an image), found {len(inputs)}")
        self.input = inputs[0]
        self.output = outputs[-1]  # a detector's last output is its class scores, as in ONNX
        shape = [int(v) for v in self.input["shape"]]
        if len(shape) != 4 or shape[0] != 1:
            raise ValueError(f"{self.path}: expected a (1, H, W, C) input, found shape {shape}")
        _, height, width, channels = shape
        self.input_size = metadata.input_size or (channels, height, width)
        if self.input_size != (channels, height, width):
            raise ValueError(
                f"{self.path}: its metadata states input {self.input_size} but the file takes {shape}"
            )
        out_shape = [int(v) for v in self.output["shape"]]
        # Only the input is NHWC: the outputs keep the model's layout, as in ONNX.
        classes = out_shape[1] if len(out_shape) == 4 else out_shape[-1] if out_shape else None
        self._describe_model(metadata, classes)

    def _quantized(self, detail: dict) -> tuple[float, int] | None:
        if np.issubdtype(detail["dtype"], np.floating):
            return None
        scale, zero_point = detail["quantization"]
        if not scale:
            raise ValueError(f"{self.path}: integer tensor {detail['name']!r} has no quantisation scale")
        return float(scale), int(zero_point)

    def _run(self, array: np.ndarray) -> np.ndarray:
        quantized_in, quantized_out = self._quantized(self.input), self._quantized(self.output)
        results = []
        for image in array.transpose(0, 2, 3, 1):  # the file is NHWC, batch 1
            value = image[None]
            if quantized_in is not None:
                scale, zero_point = quantized_in
                limits = np.iinfo(self.input["dtype"])
                value = np.clip(np.round(value / scale) + zero_point, limits.min, limits.max)
            self.interpreter.set_tensor(self.input["index"], np.ascontiguousarray(value, self.input["dtype"]))
            self.interpreter.invoke()
            out = self.interpreter.get_tensor(self.output["index"])
            if quantized_out is not None:
                scale, zero_point = quantized_out
                out = (out.astype(np.float32) - zero_point) * scale
            results.append(out.astype(np.float32, copy=False))
        return np.concatenate(results)
