"""Evaluate the three SqueezeNet weight sets on the 500-image ImageNet sample.

    LIGHTNETS_WEIGHTS=../shared/weights python benchmarks/squeezenet_weights.py

Writes ``results/squeezenet_weights.md``: top-1/top-5 of each set against the sample's
labels (each with its own evaluation transform, ``spec.transform(load_image(path))``),
the Gluon reference pairs' max |diff|, and the Deep Compression file's per-layer facts.
The sample is easier than ImageNet-val (see its PROVENANCE.md): a sanity check, not a
benchmark of accuracy.
"""

from __future__ import annotations

import argparse
import copy
import csv
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _output import write_markdown
from _paths import IMAGENET_SAMPLE, RESULTS, WEIGHTS

import lightnets
from lightnets.data.images import load_image
from lightnets.deploy.bench_report import cpu_name
from lightnets.weights.importers.deep_compression import net_facts, read_header
from lightnets.weights.spec import get_weights

GLUON_DIR = "squeezenet/squeezenet1_1-gluon-onnxzoo-npy"
NET = "squeezenet/squeezenet1_0-caffe-deepcompression/compressed_SqueezeNet.net"
SETS = (
    ("squeezenet1_1.gluon_npy", "squeezenet1_1"),
    ("squeezenet1_1.ncnn_fp16", "squeezenet1_1"),
    ("squeezenet1_0.deep_compression", "squeezenet1_0"),
)
PAPER_NONZEROS = 421_098  # SqueezeNet paper, Table 1: parameters after pruning


def evaluate(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    model.eval()
    with torch.inference_mode():
        logits = torch.cat([model(images[i : i + 50]) for i in range(0, len(images), 50)])
    top5 = logits.topk(5, dim=1).indices
    return (
        100.0 * (top5[:, 0] == labels).float().mean().item(),
        100.0 * (top5 == labels[:, None]).any(dim=1).float().mean().item(),
    )


def with_classifier_padding(model: torch.nn.Module) -> torch.nn.Module:
    """The model with ``pad 1`` on its 1x1 classifier, as the Caffe/ncnn graphs of these sets have."""
    padded = copy.deepcopy(model)
    padded.head.conv.conv.padding = (1, 1)
    return padded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights-root", type=Path, default=None, help="default $LIGHTNETS_WEIGHTS")
    parser.add_argument("--sample", type=Path, default=IMAGENET_SAMPLE)
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    args = parser.parse_args()
    root = args.weights_root or WEIGHTS
    os.environ["LIGHTNETS_WEIGHTS"] = str(root)

    with open(args.sample / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))[: args.limit]
    labels = torch.tensor([int(r["class_index"]) for r in rows])
    pictures = [load_image(args.sample / "images" / r["filename"]) for r in rows]

    lines = [
        "# SqueezeNet weight sets on the ImageNet sample",
        "",
        f"Command: `{' '.join(shlex.quote(a) for a in [Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}` "
        f"(LIGHTNETS_WEIGHTS={root}).",
        f"Machine: {platform.platform()}, CPU {cpu_name()} ({os.cpu_count()} logical CPUs, "
        f"{torch.get_num_threads()} torch threads), Python {platform.python_version()}, "
        f"PyTorch {torch.__version__}, lightnets {lightnets.__version__}.",
        "",
        f"## Accuracy on {len(rows)} images of `{args.sample.name}` (one per class, easier than ImageNet-val)",
        "",
        "Each set with its own transform (`spec.transform(load_image(path))`); labels = `class_index`.",
        "",
        "| weights | model | transform | top-1 % | top-5 % | claimed top-1/top-5 | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    padded_rows = []
    top1s = {}
    for tag, name in SETS:
        spec = get_weights(tag)
        start = time.perf_counter()
        images = torch.stack([spec.transform(p) for p in pictures])
        model = lightnets.create_model(name, weights=tag)
        top1, top5 = evaluate(model, images, labels)
        seconds = time.perf_counter() - start
        top1s[tag] = top1
        t = spec.transform
        transform = f"{t.size} of {t.resize}, {t.channel_order}, mean {t.mean}, std {t.std}"
        claimed = f"{spec.metrics.get('top1', '-')} / {spec.metrics.get('top5', '-')}"
        lines.append(
            f"| `{tag}` | {name} | {transform} | {top1:.1f} | {top5:.1f} | {claimed} | {seconds:.0f} |"
        )
        if spec.transform.channel_order == "BGR":  # the Caffe sets: their graphs pad the classifier
            p1, p5 = evaluate(with_classifier_padding(model), images, labels)
            padded_rows.append(f"| `{tag}` | {top1:.1f} / {top5:.1f} | {p1:.1f} / {p5:.1f} |")
        print(f"{tag}: top-1 {top1:.1f}, top-5 {top5:.1f} ({seconds:.0f} s)", flush=True)
    deep, gluon = top1s["squeezenet1_0.deep_compression"], top1s["squeezenet1_1.gluon_npy"]
    lines += [
        "",
        f"Deep Compression v1.0 minus Gluon v1.1 float, top-1: {deep - gluon:+.1f} points "
        f"(acceptance: within 2).",
        "",
        "The Caffe graphs of the ncnn and Deep Compression sets (`.param` `4=1`, prototxt `pad: 1`) pad the",
        "1x1 classifier by one pixel, so its pooled map includes a ring of `ReLU(bias)`; lightnets' head has",
        "no padding (as the Gluon set and forresti's v1.1 prototxt). With that padding, top-1 / top-5:",
        "",
        "| weights | lightnets head (pad 0) | Caffe head (pad 1) |",
        "|---|---|---|",
        *padded_rows,
    ]

    lines += ["", "## Gluon reference pairs (`test_data_set/{0,1,2}`: input -> logits)", ""]
    model = lightnets.create_model("squeezenet1_1", weights="squeezenet1_1.gluon_npy").eval()
    lines += ["| pair | max abs(diff) | max abs(reference) |", "|---|---|---|"]
    for i in range(3):
        folder = root / GLUON_DIR / "test_data_set" / str(i)
        x = np.load(folder / "input_0.npy", allow_pickle=False)
        expected = np.load(folder / "output_0.npy", allow_pickle=False)
        with torch.inference_mode():
            diff = np.abs(model(torch.from_numpy(x)).numpy() - expected).max()
        lines.append(f"| {i} | {diff:.2e} | {np.abs(expected).max():.1f} |")
    lines += ["", "(The reference inputs are uniform noise in 0..255, not preprocessed images.)"]

    path = root / NET
    model = lightnets.create_model("squeezenet1_0")
    facts = net_facts(path, model)
    header = read_header(path, len(facts))
    names = [k.removesuffix(".weight") for k in model.state_dict() if k.endswith(".weight")]
    lines += [
        "",
        "## Deep Compression file (`compressed_SqueezeNet.net`)",
        "",
        "Stored entries = the header's count (non-zeros plus zero fillers where a gap exceeds 15);",
        "codes = distinct non-zero codebook indices used.",
        "",
        "| layer | shape | weights | header | decoded | non-zeros | density % | codebook | codes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, f, h in zip(names, facts, header, strict=True):
        lines.append(
            f"| {name} | {'x'.join(map(str, f.shape))} | {f.weights:,} | {h:,} | {f.stored:,} | {f.nonzeros:,} "
            f"| {100 * f.density:.1f} | {f.codebook_size} | {f.nonzero_codes_used} |"
        )
    weights = sum(f.weights for f in facts)
    nonzeros = sum(f.nonzeros for f in facts)
    biases = sum(f.shape[0] for f in facts)
    lines += [
        f"| total | | {weights:,} | {sum(header):,} | {sum(f.stored for f in facts):,} | {nonzeros:,} "
        f"| {100 * nonzeros / weights:.1f} | | |",
        "",
        f"Non-zero weights: {nonzeros:,} ({nonzeros + biases:,} with the {biases:,} biases); the SqueezeNet "
        f"paper gives {PAPER_NONZEROS:,} parameters after pruning ({100 * (nonzeros / PAPER_NONZEROS - 1):+.1f}%"
        f" for the weights alone). File size {path.stat().st_size:,} bytes.",
        "",
    ]
    write_markdown(lines, RESULTS / "squeezenet_weights.md")


if __name__ == "__main__":
    main()
