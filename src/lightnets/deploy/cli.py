"""Command-line pieces of the deploy stage, for ``lightnets.cli`` to wire in.

* :func:`add_export_parser` adds ``lightnets export [MODEL] --weights W -o model.onnx``
  (fp32, or int8 QDQ with ``--int8 --calibration DIR``).
* :func:`add_backend_options` adds ``--backend {pytorch,onnxruntime}`` and ``--threads``
  to a command such as ``predict``; :func:`model_for_backend` then gives the object to
  classify with: the PyTorch model, or a :class:`~lightnets.deploy.Runtime` (for an
  ``.onnx`` file, or for weights exported on the fly).
* :func:`add_bench_parser` adds ``lightnets bench`` (latency, throughput, memory and the
  GEMM floor; see :mod:`.bench`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from ..arguments import add_command, at_least, non_negative_int, positive_int
from ..zoo import (
    add_model_options,
    add_model_or_weights_options,
    model_from_args,
    model_kwargs,
)
from .calibration import DEFAULT_CALIBRATION_IMAGES
from .export import DEFAULT_OPSET, export_onnx
from .litert import LiteRTRuntime
from .quantize import CALIBRATION_METHODS, quantize_onnx
from .runtime import ModelFile, Runtime, open_runtime
from .tflite import export_tflite, require_tflite_extra

__all__ = [
    "RUNTIMES",
    "add_backend_options",
    "add_bench_parser",
    "add_export_parser",
    "cmd_bench",
    "cmd_export",
    "model_for_backend",
]

# The runtimes that predict and eval can classify with (``--backend``).
RUNTIMES = ("pytorch", "onnxruntime", "litert", "auto")


def cmd_export(args: argparse.Namespace) -> int:
    """``lightnets export``: write the ONNX or TFLite file, then verify it on images if asked."""
    output = Path(args.output)
    if output.suffix not in (".onnx", ".tflite"):
        raise ValueError(f"{output}: the output must end in .onnx (ONNX) or .tflite (TFLite)")
    if args.int8 and not args.calibration:
        raise ValueError("--int8 needs --calibration DIR, a folder of real images")
    if output.suffix == ".tflite":
        onnx_only = [
            o
            for o, given in (("--method", args.method != "minmax"), ("--reduce-range", args.reduce_range))
            if given
        ]
        if onnx_only:
            raise ValueError(
                f"{', '.join(onnx_only)} apply to ONNX files; a TFLite file is calibrated on min/max ranges"
            )
        require_tflite_extra()
    model = model_from_args(args).eval()
    runtime: ModelFile
    if output.suffix == ".tflite":
        export_tflite(
            model,
            output,
            input_size=args.input_size,
            int8=args.int8,
            calibration=args.calibration,
            num_images=args.calibration_images,
            fold=not args.no_fold,
        )
        runtime, checked = LiteRTRuntime(output), "LiteRT loads it"
    else:
        with tempfile.TemporaryDirectory() as folder:
            fp32 = Path(folder) / "fp32.onnx" if args.int8 else output
            export_onnx(model, fp32, input_size=args.input_size, opset=args.opset, fold=not args.no_fold)
            if args.int8:
                quantize_onnx(
                    fp32,
                    output,
                    args.calibration,
                    num_images=args.calibration_images,
                    method=args.method,
                    reduce_range=args.reduce_range,
                )
        runtime, checked = Runtime(output), "onnx.checker passed"
    layout = "NHWC" if output.suffix == ".tflite" else "NCHW"
    print(
        f"written {output} ({output.stat().st_size / 1e6:.2f} MB): {runtime.model_name}, "
        f"input {'x'.join(map(str, runtime.input_size))} ({layout}), {runtime.precision}, "
        f"{runtime.num_classes} classes; {checked}"
    )
    if args.verify:
        _verify(model, runtime, args.verify, args.verify_images)
    return 0


def _verify(model: nn.Module, runtime: ModelFile, folder: str, count: int) -> None:
    import torch

    from .calibration import calibration_files, prepare_images
    from .quantize import top1_agreement

    images = prepare_images(calibration_files(folder, count), runtime.transform)
    with torch.no_grad():
        reference = torch.cat([model(batch) for batch in images.split(32)])
    logits = torch.cat([runtime(batch) for batch in images.split(32)])
    diff = float((reference - logits).abs().max())
    agreement = top1_agreement(reference, logits)
    print(
        f"against PyTorch on {len(images)} images from {folder}: max |logit diff| {diff:.3g}, "
        f"top-1 agreement {agreement:.1%}"
    )


def add_export_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``export`` subcommand to a ``add_subparsers()`` object; returns its parser."""
    p = add_command(
        subparsers,
        "export",
        "export a model to ONNX or TFLite (fp32, or int8 calibrated on real images)",
        "Export a model (random weights, or --weights) to an ONNX file (-o NAME.onnx: "
        "dynamic batch, NCHW, checked with onnx.checker) or a TFLite file for LiteRT (-o NAME.tflite: "
        'batch 1, NHWC input; needs pip install "lightnets[tflite]"). BatchNorm is folded; the '
        "model name, input size, mean/std and class names go in the file's metadata. The input is "
        "the normalised image, (pixel/255 - mean)/std. With --int8, post-training static int8 "
        "quantisation (per-channel weights) calibrated on a folder of real images: QDQ for ONNX "
        "(float input), LiteRT's quantiser for TFLite (int8 input with its scale and zero point in "
        "the tensor's quantisation parameters, like the official quantised files; float logits).",
        "examples:\n"
        "  lightnets export --weights mobilenet_v2_100_224.tflite_uint8 -o mobilenet_v2.onnx\n"
        "  lightnets export shufflenet_v1 --groups 8 --input-size 160 -o shufflenet.onnx\n"
        "  lightnets export --weights mobilenet_v2_100_224.tflite_uint8 -o mnv2_int8.tflite --int8 "
        "--calibration imagenette/train --verify imagenet-sample/\n"
        "  lightnets export --weights squeezenet1_1.gluon_npy -o sq_int8.onnx --int8 "
        "--calibration imagenette/train --verify imagenet-sample/",
    )
    add_model_or_weights_options(p)
    p.add_argument("-o", "--output", required=True, metavar="FILE.onnx|FILE.tflite")
    p.add_argument(
        "--input-size", type=positive_int, help="input side in pixels (default: the weights' crop, or 224)"
    )
    p.add_argument(
        "--opset", type=at_least(17), default=DEFAULT_OPSET, help=f"ONNX opset, 17 or newer ({DEFAULT_OPSET})"
    )
    p.add_argument("--no-fold", action="store_true", help="do not fold BatchNorm before exporting")
    q = p.add_argument_group("int8")
    q.add_argument("--int8", action="store_true", help="quantise to int8 (per-channel weights)")
    q.add_argument("--calibration", metavar="DIR", help="folder of real images to calibrate on")
    q.add_argument(
        "--calibration-images",
        type=positive_int,
        default=DEFAULT_CALIBRATION_IMAGES,
        metavar="N",
        help=f"images taken evenly from the folder ({DEFAULT_CALIBRATION_IMAGES})",
    )
    q.add_argument(
        "--method", choices=CALIBRATION_METHODS, default="minmax", help="activation ranges (ONNX only)"
    )
    q.add_argument(
        "--reduce-range", action="store_true", help="7-bit weights, for CPUs without VNNI (ONNX only)"
    )
    v = p.add_argument_group("verification")
    v.add_argument("--verify", metavar="DIR", help="compare with PyTorch on images from this folder")
    v.add_argument(
        "--verify-images", type=positive_int, default=64, metavar="N", help="images to compare on (64)"
    )
    p.set_defaults(func=cmd_export)
    return p


def add_backend_options(parser: argparse.ArgumentParser) -> None:
    """``--backend`` and ``--threads`` for a command that runs a model (e.g. ``predict``)."""
    parser.add_argument(
        "--backend",
        choices=RUNTIMES,
        default=None,
        help="pytorch (default); onnxruntime or litert: run an .onnx / .tflite file given as "
        "--weights, or the weights exported on the fly (cached for weight tags); auto: the "
        "fastest of pytorch, onnxruntime and litert on this model, timed once and remembered "
        "per machine and thread count. An .onnx or .tflite file implies its runtime",
    )
    parser.add_argument("--threads", type=positive_int, help="runtime threads (default: all cores)")


FILE_BACKENDS = {".onnx": "onnxruntime", ".tflite": "litert"}


def model_for_backend(
    args: argparse.Namespace, load_pytorch: Callable[[argparse.Namespace], nn.Module]
) -> nn.Module | ModelFile:
    """What ``args`` ask to classify with: ``load_pytorch(args)`` or a runtime of an
    exported file (:class:`~lightnets.deploy.Runtime`, :class:`LiteRTRuntime`).

    Reads ``args.weights``, ``args.model``, ``args.weights_root``, ``args.backend`` and
    ``args.threads`` (the last two optional). A runtime works wherever
    :func:`lightnets.predict` and :func:`lightnets.evaluate` take a model.
    """
    backend = getattr(args, "backend", None)
    weights = getattr(args, "weights", None)
    file_backend = FILE_BACKENDS.get(Path(str(weights)).suffix) if weights is not None else None
    backend = backend or file_backend or "pytorch"
    if backend not in RUNTIMES:
        raise ValueError(f"unknown backend {backend!r}; expected one of {RUNTIMES}")
    if file_backend is not None and backend != file_backend:
        raise ValueError(f"{weights} is run by {file_backend}: use --backend {file_backend}")
    if backend == "pytorch":
        return load_pytorch(args)
    if weights is None:
        raise ValueError(f"--backend {backend} needs --weights (an exported file or weights to export)")
    where: dict[str, Any] = dict(
        model=getattr(args, "model", None),
        weights_root=getattr(args, "weights_root", None),
        threads=getattr(args, "threads", None),
    )
    if backend == "auto":
        from .auto import fastest_runtime

        chosen, runner = fastest_runtime(weights, **where)
        print(f"auto: running on {chosen}", file=sys.stderr)
        return runner
    if file_backend is None:
        print(f"exporting {weights} for {backend} (kept in the cache for weight tags) ...", file=sys.stderr)
    return open_runtime(weights, backend=backend, **where)


# The default sweep of `lightnets bench`: every family at two or three widths.
DEFAULT_BENCH_MODELS = (
    "mobilenet_v1_025",
    "mobilenet_v1_050",
    "mobilenet_v1_100",
    "mobilenet_v2_035",
    "mobilenet_v2_050",
    "mobilenet_v2_100",
    "squeezenet1_1",
    "squeezenet1_0",
    "shufflenet_v1_g3_050",
    "shufflenet_v1_g3",
)
DEFAULT_BENCH_BACKENDS = ("eager", "folded", "ort_fp32")


def _model_and_weights(item: str) -> tuple[str, str | None]:
    """A bench item is a registered model name or a weights tag / file."""
    from ..models import get_entry
    from ..weights import get_weights
    from ..weights.load import model_name_of_weights

    try:
        get_entry(item)
        return item, None
    except ValueError:
        pass
    try:
        get_weights(item)
    except ValueError:
        if not Path(item).is_file():
            raise ValueError(f"{item!r} is neither a registered model nor a weights tag or file") from None
    return model_name_of_weights(item), item


def cmd_bench(args: argparse.Namespace) -> int:
    """``lightnets bench``: time models under backends, write CSV, Markdown and a PNG."""
    from ..cpu import all_threads
    from .bench import benchmark, gemm_rate, model_targets
    from .bench_report import auto_lines, markdown_table, speedup_lines, write_report

    backends = args.backends.split(",")
    threads = sorted({all_threads() if t == "all" else int(t) for t in args.threads})
    if any(t < 1 for t in threads):
        raise ValueError("--threads takes positive counts or 'all'")
    items = args.models or list(DEFAULT_BENCH_MODELS)
    with tempfile.TemporaryDirectory(prefix="lightnets-bench-") as workdir:
        targets = []
        for item in items:
            model, weights = _model_and_weights(item)
            options = model_kwargs(args, model)
            targets += model_targets(
                model,
                model_kwargs=options,
                weights=weights,
                backends=backends,
                input_size=args.input_size,
                calibration=args.calibration,
                workdir=workdir,
                label=None if options else item,  # with options, the label spells them out
            )
        print(f"measuring the GEMM rate at {', '.join(map(str, threads))} thread(s) ...", file=sys.stderr)
        rates = {n: gemm_rate(n) for n in threads}
        measurements = benchmark(targets, threads, runs=args.runs, warmup=args.warmup, batch=args.batch)
    print(markdown_table(measurements, rates))
    for line in speedup_lines(measurements) + auto_lines(measurements):
        print(line)
    if args.out:
        command = "lightnets bench " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "lightnets bench"
        for path in write_report(measurements, rates, args.out, command=command):
            print(f"written {path}", file=sys.stderr)
    return 0


def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``bench`` subcommand to a ``add_subparsers()`` object; returns its parser."""
    from .bench import BACKENDS as BENCH_BACKENDS
    from .bench import MIN_RUNS

    p = add_command(
        subparsers,
        "bench",
        "latency, throughput and memory of models under several backends",
        "Time models on this CPU: latency at batch 1 (median and p90 over --runs "
        "calls after --warmup), throughput at batch --batch, and peak resident memory, for "
        "each backend and thread count, each measurement in a fresh process. Also measures "
        "the machine's fp32 GEMM rate and gives each model its floor, MAdds / that rate, the "
        "latency no backend can beat. Backends: "
        + "; ".join(f"{name}: {text}" for name, text in BENCH_BACKENDS.items())
        + ".",
        "examples:\n"
        "  lightnets bench                                   # the default sweep, all families\n"
        "  lightnets bench mobilenet_v2_100 --threads 1 --backends eager,folded,ort_fp32\n"
        "  lightnets bench mobilenet_v2_100_224.tflite_uint8 --backends ort_fp32,ort_int8 \\\n"
        "      --calibration imagenette/train --out bench/",
    )
    p.add_argument(
        "models",
        nargs="*",
        metavar="MODEL_OR_WEIGHTS",
        help="registered names (e.g. mobilenet_v2_050) or weights tags/files; default: "
        + ", ".join(DEFAULT_BENCH_MODELS),
    )
    p.add_argument(
        "--backends",
        default=",".join(DEFAULT_BENCH_BACKENDS),
        help=f"comma-separated, from {', '.join(BENCH_BACKENDS)} (default: {','.join(DEFAULT_BENCH_BACKENDS)})",
    )
    p.add_argument(
        "--threads", nargs="+", default=["1", "all"], help="thread counts, 'all' for every core (1 all)"
    )
    p.add_argument(
        "--runs", type=at_least(MIN_RUNS), default=MIN_RUNS, help=f"timed batch-1 calls, >= {MIN_RUNS}"
    )
    p.add_argument("--warmup", type=non_negative_int, default=10, help="untimed calls first (10)")
    p.add_argument("--batch", type=positive_int, default=16, help="batch size of the throughput figure (16)")
    p.add_argument("--input-size", type=positive_int, help="input side (default: the weights' crop, or 224)")
    p.add_argument("--calibration", metavar="DIR", help="real images for the int8 backends")
    p.add_argument("--out", metavar="DIR", help="write bench.csv, bench.md and bench.png here")
    add_model_options(p)
    p.set_defaults(func=cmd_bench)
    return p
