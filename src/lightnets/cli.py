"""The ``lightnets`` command. Each subcommand parses its options and calls a stage."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from torch import nn

from . import papers
from .arguments import non_negative_int, positive_int
from .classify import evaluate, predict
from .cost import profile
from .data.images import DEFAULT_MAX_PIXELS, ENV_MAX_PIXELS, set_max_pixels
from .deploy.cli import add_backend_options, add_bench_parser, add_export_parser, model_for_backend
from .files import write_text
from .models import get_entry, list_models
from .render import FORMATS, render
from .tasks.cli import (
    add_photo_parsers,
    add_segmentation_eval_options,
    add_task_train_options,
    cmd_eval_detection,
    cmd_eval_segmentation,
    cmd_train_task,
    refuse_task_options,
    saved_task,
)
from .tasks.costs import cost_by_part
from .weights import convert, get_weights, list_weights
from .zoo import (
    add_model_or_weights_options,
    add_weights_options,
    labels_of,
    model_for_weights,
    model_from_args,
    model_kwargs,
    transform_of,
)

DESCRIPTION = """\
lightnets: MobileNet v1, MobileNetV2, SqueezeNet and ShuffleNet v1 exactly as their
papers define them. Pick a network that fits a budget (multiply-adds, parameters,
activation memory, latency: lightnets search), and check every figure the papers report.
"""

EPILOG = """\
examples:
  lightnets list 'mobilenet*'
  lightnets profile mobilenet_v2 --width 0.5 --resolution 160 --by-kind
  lightnets profile shufflenet_v1 --groups 8 --memory --format json
  lightnets compare mobilenet_v1 shufflenet_v1 --plot accuracy.png
  lightnets report --out report/
  lightnets weights
  lightnets predict photo.jpg --weights mobilenet_v2_100_224.tflite_uint8
  lightnets eval --data imagenet-sample/ --weights squeezenet1_1.gluon_npy --format json
  lightnets convert --weights mobilenet_v1_050_160.tflite_uint8 -o mnv1_050.safetensors
  lightnets export --weights mobilenet_v2_100_224.tflite_uint8 -o mnv2.onnx
  lightnets predict photo.jpg --weights mnv2.onnx            # ONNX Runtime
  lightnets train --model mobilenet_v2 --data imagenette/ --resolution 128 --out runs/mnv2
  lightnets bench mobilenet_v2_100 --threads 1 --out bench/
  lightnets search --max-madds 50M --max-latency 5           # the best networks under a budget
  lightnets compress --weights squeezenet1_1.gluon_npy --prune 0.6 --share-bits 6 --huffman -o sq.lnz

Original weight files are found under --weights-root or $LIGHTNETS_WEIGHTS, in the cache
($LIGHTNETS_CACHE, default ~/.cache/lightnets), or downloaded and checked against their sha256.
"""


def cmd_list(args: argparse.Namespace) -> int:
    rows = []
    for name in list_models(args.pattern):
        entry = get_entry(name)
        preset = ", ".join(f"{k}={v}" for k, v in entry.defaults.items())
        rows.append((name, entry.family, preset, entry.description))
    if not rows:
        raise ValueError(f"no model matches {args.pattern!r}; try 'lightnets list' for all")
    print(render(("name", "family", "preset", "description"), rows, args.format))
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    model = model_from_args(args)
    # A detector is reported at the side its paper gives (300 or 320), a classifier at 224.
    size = args.resolution or (
        transform_of(model).size if args.weights else getattr(model, "default_input_size", 224)
    )
    name = args.model or getattr(model, "model_name", None) or str(args.weights)
    report = profile(model, (3, size, size), memory=args.memory)
    report.model = name
    parts = cost_by_part(report, model)  # a task model's backbone and head, apart
    if args.format == "json":
        out = report.to_dict(by_layer=args.by_layer)
        if parts:
            out["by_part"] = [asdict(part) for part in parts]
        print(json.dumps(out, indent=2))
        return 0
    rows: list[tuple]  # each section's table has columns of its own
    headers: tuple[str, ...]
    sections = []
    if parts:
        part_rows = [(p.part, p.params, p.bn_params, p.madds, 100.0 * p.madds / report.madds) for p in parts]
        sections.append(
            render(("part", "params", "BatchNorm params", "madds", "madds %"), part_rows, args.format)
        )
    if args.by_layer:
        rows = [
            (
                layer.name,
                layer.kind,
                layer.kernel,
                layer.stride,
                "x".join(map(str, layer.input_shape)),
                "x".join(map(str, layer.output_shape)),
                layer.params,
                layer.madds,
                layer.activations,
            )
            for layer in report.layers
            if layer.kind in ("conv", "pointwise", "depthwise", "group conv", "fully connected", "pool")
        ]
        headers = ("layer", "kind", "kernel", "stride", "input", "output", "params", "madds", "activations")
        sections.append(render(headers, rows, args.format))
    if args.by_kind or not args.by_layer:
        rows = [
            (k.kind, k.layers, k.params, k.params_share, k.madds, k.madds_share)
            for k in report.by_kind()
            if k.params or k.madds
        ]
        headers = ("kind", "layers", "params", "params %", "madds", "madds %")
        sections.append(render(headers, rows, args.format))
    if args.memory and report.memory is not None:
        for execution in ("layer", "block"):
            mem = getattr(report.memory, execution)
            rows = [(f"{r.height}x{r.width}", r.channels, r.bytes / 1000) for r in mem.rows]
            title = (
                f"activation memory, {execution} execution (16-bit): peak {mem.peak_bytes / 1000:.1f} KB "
                f"at {mem.peak_at}"
            )
            sections.append(title + "\n" + render(("size", "max channels", "KB"), rows, args.format))
    summary = (
        f"{name} at {size}x{size}: {report.params:,} params "
        f"({report.params / 1e6:.2f} M, BatchNorm apart: {report.bn_params:,}), "
        f"{report.madds:,} multiply-adds ({report.madds / 1e6:.1f} M)"
    )
    if args.format in ("table", "markdown"):
        sections.insert(0, summary)
    print("\n\n".join(sections))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    figures = papers.figures_for(args.models)
    if not figures:
        raise ValueError(f"the papers report no figures for {', '.join(args.models)}")
    comparisons = [papers.measure(f) for f in figures]
    print(render(papers.COMPARISON_HEADERS, papers.comparison_rows(comparisons), args.format))
    notes = [f"- {c.figure.label}: {c.figure.note}" for c in comparisons if c.figure.note]
    if notes and args.format in ("table", "markdown"):
        print("\nWhere the papers and a faithful model differ:\n" + "\n".join(notes))
    if args.plot:
        from .plots import accuracy_vs_madds

        path = accuracy_vs_madds(comparisons, args.plot)
        print(f"\nplot written to {path}", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    sections = papers.report_sections(args.format if args.format != "json" else "markdown")
    text = "\n\n".join(f"## {title}\n\n{body}" for title, body in sections)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "paper_tables.md", text + "\n")
        from .plots import accuracy_vs_madds

        plot = accuracy_vs_madds([papers.measure(f) for f in papers.FIGURES], out / "accuracy_vs_madds.png")
        print(f"\nwritten: {out / 'paper_tables.md'}, {plot}", file=sys.stderr)
    return 0


def model_with_weights(args: argparse.Namespace) -> nn.Module:
    """The model ``--weights`` (and ``--model``, when the weights do not say) describe."""
    return model_for_weights(args.weights, args.model, args.weights_root, **model_kwargs(args, args.model))


def cmd_weights(args: argparse.Namespace) -> int:
    rows = []
    for tag in list_weights(args.pattern):
        spec = get_weights(tag)
        metric = spec.metrics.get("top1")
        rows.append(
            (
                tag,
                spec.model,
                spec.format,
                spec.transform.size,
                "" if metric is None else str(metric),
                spec.license,
            )
        )
    if not rows:
        raise ValueError(f"no weights match {args.pattern!r}")
    print(render(("tag", "model", "format", "input", "reported top-1 %", "license"), rows, args.format))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    model = model_for_backend(args, model_with_weights)
    predictions, skipped = predict(model, args.inputs, args.topk)
    for message in skipped:
        print(message, file=sys.stderr)
    if args.format == "json":
        print(json.dumps([p.__dict__ for p in predictions], indent=2))
    else:
        for p in predictions:
            print(p.path)
            for index, name, probability in zip(p.classes, p.names, p.probabilities, strict=True):
                print(f"  {probability:7.2%}  {name} ({index})")
    return 0 if predictions else 1


def cmd_eval(args: argparse.Namespace) -> int:
    if args.task == "segmentation":
        return cmd_eval_segmentation(args)
    if args.task == "detection":
        return cmd_eval_detection(args)
    model = model_for_backend(args, model_with_weights)
    result = evaluate(model, args.data, batch_size=args.batch_size, limit=args.limit, workers=args.workers)
    for path in result.skipped:
        print(f"skipped unreadable image {path}", file=sys.stderr)
    names = labels_of(model)
    if args.format == "json":
        print(
            json.dumps(
                result.to_dict(names if args.per_class else None) | {"weights": args.weights}, indent=2
            )
        )
        return 0
    print(
        f"{args.weights} on {args.data}: top-1 {result.top1:.2f}%, top-5 {result.top5:.2f}% (n = {result.n})"
    )
    if args.per_class:
        rows = [
            (r["class"], r["name"], r["correct"], r["total"], r["top1"])
            for r in result.to_dict(names)["per_class"]
        ]
        print(render(("class", "name", "correct", "images", "top-1 %"), rows, "table", floatfmt=".1f"))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    model = model_with_weights(args)
    path = convert(model, args.output)
    print(f"written {path} and {path.with_suffix('.json')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightnets",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="list the registered models")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'shufflenet*'")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "profile",
        help="parameters, multiply-adds and activation memory of a model",
        description="Count a model's parameters (BatchNorm apart, as it folds away), multiply-adds "
        "(one per multiply-accumulate, convolutions and FC layers, as the papers count) and, with "
        "--memory, its peak activation memory.",
    )
    add_model_or_weights_options(p)
    p.add_argument(
        "--resolution",
        type=positive_int,
        help="input side in pixels (default: the weights' crop; a detector's paper side, 300 or 320; else 224)",
    )
    p.add_argument("--by-layer", action="store_true", help="one row per layer")
    p.add_argument("--by-kind", action="store_true", help="totals per layer kind (default view)")
    p.add_argument("--memory", action="store_true", help="peak activation memory, layer and block execution")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser(
        "compare",
        help="the papers' comparison tables next to what lightnets measures",
        description="Print every figure the papers report for the given models (all models when "
        "none are given) beside the count of lightnets' model, and optionally plot the reported "
        "accuracy against the measured multiply-adds.",
    )
    p.add_argument("models", nargs="*", help="registered names; a name selects its whole family")
    p.add_argument("--plot", metavar="PNG", help="write accuracy against multiply-adds to this PNG")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "report",
        help="reproduce every paper table (costs, layer shares, memory)",
        description="Reproduce every cost table of the four papers and say where they differ.",
    )
    p.add_argument("--out", metavar="DIR", help="also write paper_tables.md and accuracy_vs_madds.png here")
    p.add_argument("--format", choices=("markdown", "table"), default="markdown")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("weights", help="list the pretrained weight sets")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'squeezenet*'")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.set_defaults(func=cmd_weights)

    p = sub.add_parser(
        "predict",
        help="classify images with pretrained weights",
        description="Print the top-k classes of each image (files or folders). Greyscale, CMYK, "
        "transparent and 16-bit images are converted; unreadable files are skipped with a message.",
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    add_weights_options(p)
    p.add_argument("--topk", type=positive_int, default=5, help="classes to print per image (5)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    add_backend_options(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "eval",
        help="top-1 / top-5 accuracy on a labelled image folder",
        description="Evaluate on a folder holding labels.csv (columns filename, class_index) and "
        "images/, or on class folders (ImageNet wnids map to ImageNet classes).",
    )
    p.add_argument("--data", required=True, metavar="DIR")
    add_weights_options(p)
    p.add_argument("--per-class", action="store_true", help="accuracy of each class")
    p.add_argument(
        "--limit", type=positive_int, metavar="N", help="evaluate N images, taken evenly from every class"
    )
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--workers", type=non_negative_int, default=0, help="image-loading processes")
    p.add_argument("--format", choices=("table", "json"), default="table")
    add_backend_options(p)
    add_segmentation_eval_options(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "convert",
        help="write weights as a lightnets .safetensors file (+ metadata JSON)",
        description="Import a weight set (tag or file in any supported format) and write it as a "
        "lightnets safetensors file, loadable with create_model(name, weights=PATH).",
    )
    add_weights_options(p)
    p.add_argument("-o", "--output", required=True, metavar="FILE.safetensors")
    p.set_defaults(func=cmd_convert)

    from .train.cli import add_train_parser, cmd_train

    def cmd_train_any(args: argparse.Namespace) -> int:
        # ``--out DIR --resume`` continues the run in DIR, whichever its task.
        task = (saved_task(args.out) if args.resume else None) or args.task
        if task != "classification":
            return cmd_train_task(args, task)
        refuse_task_options(args)
        return cmd_train(args)

    train_parser = add_train_parser(sub)
    add_task_train_options(train_parser)
    train_parser.set_defaults(func=cmd_train_any)
    add_export_parser(sub)
    add_bench_parser(sub)
    from .compress.cli import add_compress_parser

    add_compress_parser(sub)
    from .search.cli import add_search_parser

    add_search_parser(sub)
    add_photo_parsers(sub)
    for command in sub.choices.values():
        add_common_options(command)
    return parser


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """Options every subcommand takes: how images are read and how errors are shown."""
    parser.add_argument(
        "--max-pixels",
        type=positive_int,
        metavar="N",
        help=f"refuse (skip) images above N pixels before decoding them (default {DEFAULT_MAX_PIXELS:,}, "
        f"about 16k x 11k; ${ENV_MAX_PIXELS} sets it too)",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_pixels is not None:
        set_max_pixels(args.max_pixels)
    try:
        return args.func(args)
    except (ValueError, OSError) as error:
        # Bad input and unwritable outputs end in one line naming the problem.
        if args.debug:
            raise
        text = str(error) if isinstance(error, ValueError) else _describe_os_error(error)
        print(f"lightnets {args.command}: error: {text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lightnets {args.command}: interrupted", file=sys.stderr)
        return 130


def _describe_os_error(error: OSError) -> str:
    where = f" ({error.filename})" if error.filename else ""
    return f"{error.strerror or error}{where}"


if __name__ == "__main__":
    sys.exit(main())
