"""``lightnets compress``: prune, share and Huffman-code a trained model into a container."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..arguments import add_command, at_least, number_in, positive_int
from ..deploy.calibration import DEFAULT_CALIBRATION_IMAGES
from ..files import write_bytes
from ..render import FORMATS, render
from ..weights.container import SUFFIX
from ..weights.load import metadata_json
from ..zoo import add_model_or_weights_options, model_from_args, transform_of

SUMMARY = "prune, weight-share and Huffman-code a model (Deep Compression)"
DESCRIPTION = f"""\
Compress a trained model as Deep Compression does: fold BatchNorm, prune by magnitude
(--prune for every layer, --sparsities per layer), recover by distillation from the
uncompressed model on images at hand (--recovery-data, no labels needed), share each
layer's weights through a k-means codebook of --share-bits bits and train the centroids,
then Huffman-code the codebook indices and the gaps of the sparse encoding (--huffman).
The output ({SUFFIX}) is read by every command as --weights, and by
create_model(name, weights=FILE).

Structured pruning (--channels) removes whole channels instead: the inner channels of
every block (MobileNetV2's expansions, SqueezeNet's squeeze layers) that matter least,
leaving a smaller dense model that is faster everywhere; written as .safetensors on its
own, or compressed further. With --recovery-data, each removed channel's mean on 256
images goes into the next layer's bias and the channels removed are those whose
variation reaches the next layer least; without, those with the smallest pointwise
filters (L1 norm, BatchNorm scale folded in).

Low-rank factorisation (--rank or --energy, on the layers --rank-layers names) replaces
fully connected and ungrouped convolutions by two thin layers from their SVD (a 1x1 or
fully connected layer by a rank-r pair, a k x k convolution by a k x 1 and a 1 x k one),
where that is smaller; also a dense model, recovered by the same distillation.

Quantisation-aware training (--qat-bits, instead of pruning and sharing) trains through
quantised weights (per output channel, 2-8 bits; 2 is ternary) and 8-bit activations
(ranges set on 256 recovery images) by the same distillation, and stores every weight as
an integer of that many bits times its channel's scale. `lightnets export --int8` keeps
QAT weights exactly (ONNX or TFLite).
"""

EPILOG = """\
examples:
  lightnets compress squeezenet1_1 --weights squeezenet1_1.gluon_npy --prune 0.6 --share-bits 6 \\
      --huffman --recovery-data imagenette/train --recovery-steps 300 -o squeezenet1_1.lnz
  lightnets compress --weights squeezenet1_1.gluon_npy --sparsities sparsities.csv --share-bits 5 \\
      --huffman -o small.lnz --deep-compression small.net
  lightnets compress mobilenet_v2 --weights mobilenet_v2_100_224.tflite_uint8 --channels 0.25 \\
      --recovery-data imagenette/train --recovery-steps 300 -o mobilenet_v2_slim.safetensors
  lightnets compress --weights mobilenet_v1_075_192.tflite_uint8 --rank 128 --rank-layers head.fc \
      --recovery-data imagenette/train --recovery-steps 300 -o mobilenet_v1_lowrank.safetensors
  lightnets compress --weights mobilenet_v1_025_128.tflite_uint8 --qat-bits 8 \
      --recovery-data imagenette/train --recovery-steps 300 -o mobilenet_v1_025_qat.lnz
  lightnets eval --data imagenet-sample/ --weights squeezenet1_1.lnz
"""


def bits_type(text: str) -> int:
    """``--share-bits``: a whole number in 1..16."""
    value = at_least(1)(text)
    if value > 16:
        raise argparse.ArgumentTypeError(f"{value} is out of range: give a whole number of bits in 1..16")
    return value


def qat_bits_type(text: str) -> int:
    """``--qat-bits``: a whole number in 2..8."""
    from .qat import check_qat_bits

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of bits") from None
    try:
        return check_qat_bits(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_compress_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = add_command(subparsers, "compress", SUMMARY, DESCRIPTION, EPILOG)
    add_model_or_weights_options(p, weights_required=True)
    g = p.add_argument_group("steps")
    g.add_argument(
        "--channels",
        type=number_in(0, 1, high_open=True),
        metavar="FRACTION",
        help="structured pruning first: remove this fraction of every block's inner channels, in [0, 1)",
    )
    g.add_argument(
        "--prune",
        type=number_in(0, 1, high_open=True),
        metavar="SPARSITY",
        help="fraction of every layer's weights set to zero, in [0, 1)",
    )
    g.add_argument(
        "--sparsities", metavar="FILE", help="per-layer sparsities: JSON {layer: s} or CSV layer,sparsity"
    )
    g.add_argument(
        "--prune-stages", type=positive_int, default=1, help="gradual pruning in N stages (default 1)"
    )
    g.add_argument(
        "--share-bits",
        type=bits_type,
        metavar="BITS",
        help="k-means codebook of 2**BITS entries per layer (1-16)",
    )
    g.add_argument("--huffman", action="store_true", help="Huffman-code codebook indices and index gaps")
    lr = p.add_argument_group("low-rank factorisation (a dense model, like --channels)")
    lr.add_argument(
        "--rank",
        type=positive_int,
        help="every layer --rank-layers names as two thin layers of this rank",
    )
    lr.add_argument(
        "--energy",
        type=number_in(0, 1),
        metavar="FRACTION",
        help="instead of --rank: per layer, the smallest rank keeping this fraction of the squared "
        "singular values, in (0, 1]",
    )
    lr.add_argument(
        "--rank-layers",
        nargs="+",
        default=["*"],
        metavar="PATTERN",
        help="layers to factorise, by name or shell pattern (default all: fully connected and "
        "ungrouped convolutions, where the pair is smaller), e.g. head.fc 'features.*.pointwise.conv'",
    )
    q = p.add_argument_group("quantisation-aware training (instead of --prune, --sparsities, --share-bits)")
    q.add_argument(
        "--qat-bits",
        type=qat_bits_type,
        metavar="BITS",
        help="weights of BITS bits (2-8) per output channel, activations 8 bits; trained for "
        "--recovery-steps steps (0: weights rounded, no training)",
    )
    r = p.add_argument_group("recovery (distillation from the uncompressed model)")
    r.add_argument("--recovery-data", action="append", metavar="DIR", help="a folder of images (repeatable)")
    r.add_argument(
        "--recovery-steps", type=at_least(0), default=0, help="steps after pruning and after sharing"
    )
    r.add_argument(
        "--reconstruct-images",
        type=positive_int,
        metavar="N",
        help="first refit every layer to the float model by least squares on N recovery images "
        "(fast on a CPU; sharing then follows layer by layer)",
    )
    r.add_argument(
        "--recovery-images", type=positive_int, metavar="N", help="use N images spread over the folders"
    )
    r.add_argument("--recovery-batch", type=positive_int, default=32, help="batch size (32)")
    r.add_argument("--recovery-lr", type=number_in(1e-9, 1.0), default=1e-4, help="Adam learning rate (1e-4)")
    r.add_argument("--teacher-cache", metavar="DIR", help="keep the teacher's logits here between runs")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar=f"FILE{SUFFIX}",
        help=f"the compressed file ({SUFFIX}); .safetensors for a dense model (--channels, --rank or "
        "--energy alone)",
    )
    p.add_argument("--deep-compression", metavar="FILE.net", help="also write the authors' .net format")
    p.add_argument("--format", choices=FORMATS, default="table", help="of the summary table")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_compress)
    return p


def summary_rows(compressed: Any) -> tuple[list[tuple], dict[str, Any]]:
    """The per-layer table and the totals of a :class:`~.pipeline.Compressed`."""
    rows = [(r.name, r.params, r.nonzeros, r.bits, r.bytes, r.encoding) for r in compressed.rows()]
    params = sum(r[1] for r in rows)
    total = {
        "params": params,
        "nonzeros": sum(r[2] for r in rows),
        "payload_bytes": sum(r[4] for r in rows),
        "float32_bytes": 4 * params,
    }
    return rows, total


def cmd_compress(args: argparse.Namespace) -> int:
    from .pipeline import Recovery, compress_model
    from .pruning import read_sparsities
    from .recovery import recovery_images

    output = Path(args.output)
    dense = output.suffix == ".safetensors"
    if not dense and output.suffix != SUFFIX:
        raise ValueError(f"{output}: the output must end in {SUFFIX} (or .safetensors with --channels alone)")
    low_rank = args.rank is not None or args.energy is not None
    if args.rank is not None and args.energy is not None:
        raise ValueError("give --rank or --energy, not both")
    if args.energy == 0:
        raise ValueError("--energy must be above 0 (a fraction of the squared singular values kept)")
    if dense:
        others = [o for o, v in (("--prune", args.prune), ("--sparsities", args.sparsities),
                 ("--share-bits", args.share_bits), ("--huffman", args.huffman or None),
                 ("--deep-compression", args.deep_compression),
                 ("--reconstruct-images", args.reconstruct_images or None)) if v is not None]  # fmt: skip
        if (args.channels is None and not low_rank) or others:
            raise ValueError(
                f"{output}: a .safetensors output holds a dense model made by --channels, --rank or "
                "--energy alone" + (f"; {', '.join(others)} need a {SUFFIX} output" if others else "")
            )
    if args.deep_compression and Path(args.deep_compression).suffix != ".net":
        raise ValueError(f"{args.deep_compression}: the Deep Compression file must end in .net")
    if args.deep_compression and (args.channels is not None or low_rank):
        raise ValueError(
            "--deep-compression cannot hold a model narrowed by --channels or factorised by --rank / "
            f"--energy (the .net format has no shapes); write the {SUFFIX} file alone"
        )
    if args.qat_bits is not None and (args.deep_compression or dense):
        raise ValueError(
            f"--qat-bits writes integer weights and their scales: its output is a {SUFFIX} file "
            "(the .net format and .safetensors hold no scales)"
        )
    if args.qat_bits is not None and args.reconstruct_images:
        raise ValueError("--reconstruct-images refits pruned or shared layers; --qat-bits trains instead")
    if args.deep_compression and args.share_bits is None:
        raise ValueError("--deep-compression needs --share-bits (at most 8)")
    if (args.recovery_steps or args.reconstruct_images) and not args.recovery_data:
        raise ValueError(
            "--recovery-steps and --reconstruct-images need --recovery-data DIR (a folder of images)"
        )
    sparsities = read_sparsities(args.sparsities) if args.sparsities else None
    paths = recovery_images(args.recovery_data, args.recovery_images) if args.recovery_data else None
    model = model_from_args(args)
    name = getattr(model, "model_name", None) or args.model
    recovery = None
    if paths and args.recovery_steps:
        recovery = Recovery(
            paths,
            transform_of(model),
            args.recovery_steps,
            args.recovery_batch,
            args.recovery_lr,
            cache_dir=args.teacher_cache,
        )
    calibration = None
    # The layer-wise refit's images, or the activation ranges quantisation-aware training starts from.
    calibration_images = args.reconstruct_images or (
        DEFAULT_CALIBRATION_IMAGES if args.qat_bits is not None else None
    )
    if calibration_images and paths is not None:  # paths: --recovery-data, required above
        from .recovery import load_batches

        chosen = paths[:: max(1, len(paths) // calibration_images)][:calibration_images]
        calibration = load_batches(
            chosen, transform_of(model), args.recovery_batch, not args.quiet, "calibration"
        )
    original, narrowed, factorised = model, list[Any](), list[Any]()
    if args.channels is not None:
        model, narrowed = narrow(model, args.channels, recovery, not args.quiet)
    if low_rank:
        model, factorised = factorise(
            model, args.rank, args.energy, args.rank_layers, recovery, not args.quiet
        )
    if dense:
        return report_dense(original, model, narrowed, factorised, name, output, args.format)
    compressed = compress_model(
        model,
        sparsity=args.prune,
        sparsities=sparsities,
        bits=args.share_bits,
        use_huffman=args.huffman,
        recovery=recovery,
        prune_stages=args.prune_stages,
        calibration=calibration,
        progress=not args.quiet,
        qat_bits=args.qat_bits,
    )
    metadata = json.loads(metadata_json(model, name, getattr(model, "model_kwargs", {})))
    metadata["converted_from"] = str(args.weights)
    authors = None
    if args.deep_compression:  # made before anything is written: a model it cannot hold writes nothing
        from .authors_format import deep_compression_bytes

        authors = deep_compression_bytes(compressed.model, compressed.shared)
    size = compressed.save(output, metadata)
    if authors is not None:
        write_bytes(args.deep_compression, authors)
    rows, total = summary_rows(compressed)
    ratio = total["float32_bytes"] / size
    if args.format == "json":
        print(
            json.dumps(
                {
                    "layers": [dict(zip(HEADERS, r, strict=True)) for r in rows],
                    "totals": total,
                    "file_bytes": size,
                    "ratio": ratio,
                    "timings_s": compressed.timings,
                    "peak_memory_bytes": compressed.peak_memory,
                },
                indent=2,
            )
        )
    else:
        if narrowed or factorised:  # the shapes the compressed model was given, then its encoding
            print_shapes(narrowed, factorised, args.format)
            print()
        rows.append(("total", total["params"], total["nonzeros"], "", total["payload_bytes"], ""))
        print(render(HEADERS, rows, args.format))
        print(
            f"\nwritten {output}: {size:,} bytes ({size / 1e6:.3f} MB) for {total['params']:,} parameters "
            f"({total['float32_bytes'] / 1e6:.2f} MB as float32): {ratio:.1f}x smaller; "
            f"{total['nonzeros']:,} non-zero ({100 * total['nonzeros'] / total['params']:.1f}%)"
        )
        steps = ", ".join(f"{k} {v:.1f} s" for k, v in compressed.timings.items())
        print(f"time: {steps}", file=sys.stderr)
        if compressed.peak_memory:
            peaks = ", ".join(f"{k} {v / 2**20:,.0f} MB" for k, v in compressed.peak_memory.items())
            print(f"peak resident memory: {peaks}", file=sys.stderr)
    return 0


HEADERS = ("tensor", "params", "non-zeros", "bits", "bytes", "encoding")


def narrow(model: Any, fraction: float, recovery: Any, progress: bool) -> tuple[Any, list]:
    """A copy of ``model`` narrowed by structured pruning, recovered from the original;
    and the blocks' rows (:class:`.channels.ChannelRow`)."""
    import copy

    from .channels import CALIBRATION_IMAGES, prune_channels
    from .pipeline import run_recovery
    from .recovery import load_batches

    narrowed = copy.deepcopy(model)
    calibration = None
    if recovery is not None:  # the removed channels' means, compensated
        paths = list(recovery.paths)[:CALIBRATION_IMAGES]
        calibration = load_batches(paths, recovery.transform, recovery.batch_size, progress, "calibration")
    rows = prune_channels(narrowed, fraction, calibration=calibration)
    if recovery is not None:
        run_recovery(narrowed, model, recovery, recovery.steps, 0, "channel recovery", progress)
    return narrowed, rows


def factorise(
    model: Any, rank: int | None, energy: float | None, layers: list[str], recovery: Any, progress: bool
) -> tuple[Any, list]:
    """A copy of ``model`` with low-rank layers, recovered from ``model``; and the layers'
    rows (:class:`.low_rank.RankRow`)."""
    import copy

    from .low_rank import factorize
    from .pipeline import run_recovery

    factorised = copy.deepcopy(model)
    rows = factorize(factorised, rank=rank, energy=energy, layers=layers)
    if not any(row.rank for row in rows):
        raise ValueError(
            "no layer was factorised: at that rank or energy every matching layer's pair would be "
            "as large as the layer (ask for a lower rank or energy)"
        )
    if recovery is not None:
        run_recovery(factorised, model, recovery, recovery.steps, 0, "low-rank recovery", progress)
    return factorised, rows


BLOCK_HEADERS = ("block", "inner channels before", "after")
LAYER_HEADERS = ("layer", "shape", "full rank", "rank", "params before", "after", "energy kept")


def shape_rows(narrowed: list, factorised: list) -> tuple[list[tuple], list[tuple]]:
    """The rows of the narrowed blocks and of the factorised layers."""
    blocks = [(r.name, r.before, r.after) for r in narrowed]
    layers = [
        (r.name, "x".join(map(str, r.shape)), r.full_rank, r.rank or "whole", r.params_before, r.params_after,
         f"{r.energy:.3f}")
        for r in factorised
    ]  # fmt: skip
    return blocks, layers


def print_shapes(narrowed: list, factorised: list, fmt: str) -> None:
    """Print what --channels made of each block and --rank / --energy of each layer."""
    blocks, layers = shape_rows(narrowed, factorised)
    if blocks:
        print(render(BLOCK_HEADERS, blocks, fmt))
    if layers:
        print(render(LAYER_HEADERS, layers, fmt))


def report_dense(
    original: Any, model: Any, narrowed: list, factorised: list, name: str, output: Path, fmt: str
) -> int:
    """Write a narrowed or factorised dense model; print what each block or layer became,
    and the costs."""
    from ..cost import profile
    from ..weights import convert

    size = transform_of(model).size
    before, after = profile(original, (3, size, size)), profile(model, (3, size, size))
    convert(model, output)
    blocks, layers = shape_rows(narrowed, factorised)
    if fmt == "json":
        print(
            json.dumps(
                {
                    "blocks": [dict(zip(("block", "before", "after"), r, strict=True)) for r in blocks],
                    "layers": [dict(zip(LAYER_HEADERS, r, strict=True)) for r in layers],
                    "params": [before.params, after.params],
                    "madds": [before.madds, after.madds],
                },
                indent=2,
            )
        )
        return 0
    print_shapes(narrowed, factorised, fmt)
    print(
        f"\nwritten {output} ({name}, {size} px): parameters {before.params:,} -> {after.params:,} "
        f"({after.params / before.params:.0%}), multiply-adds {before.madds / 1e6:,.1f} M -> "
        f"{after.madds / 1e6:,.1f} M ({after.madds / before.madds:.0%})"
    )
    return 0
