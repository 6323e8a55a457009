"""How closely the imported TFLite MobileNets follow the LiteRT interpreter.

    python benchmarks/tflite_agreement.py [--images N] [--weights-root DIR] [--data DIR]

For each of the five TFLite weight sets, our float model (``create_model(..., weights=tag)``:
the file's weights dequantised, BatchNorm an identity plus the folded bias) and the
original integer model run by LiteRT see the same pixels: the spec transform's uint8
crop, fed raw to LiteRT and normalised for us. LiteRT's logits are the SOFTMAX input,
dequantised (its output is a uint8 softmax); the background class is dropped.

Per model: top-1 agreement (strict, and counting any class tied at LiteRT's uint8
maximum), how often LiteRT's top-1 is in our top-5, both models' accuracy against the
sample's labels, the logit differences, and the same with the integer model's
activation rounding reproduced (``attach_activation_quantisation``). Written to
``benchmarks/results/tflite_agreement.md``.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from _paths import IMAGENET_SAMPLE, RESULTS, WEIGHTS

import lightnets
from lightnets.data.images import load_image
from lightnets.deploy.bench_report import cpu_name
from lightnets.weights.importers.tflite import attach_activation_quantisation, read_tflite
from lightnets.weights.spec import get_weights, list_weights
from lightnets.weights.store import resolve

TAGS = tuple(list_weights("*.tflite_*"))  # every TFLite weight set


def litert_run(path: Path, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """LiteRT's dequantised logits and softmax output (background dropped), logit scale."""
    from ai_edge_litert.interpreter import Interpreter

    logits_index = read_tflite(path).logits_index
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # preserve_all_tensors is "for debugging"
        interpreter = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    (source,) = interpreter.get_input_details()
    (output,) = interpreter.get_output_details()
    (logits,) = [d for d in interpreter.get_tensor_details() if d["index"] == logits_index]
    logit_scale, logit_zero = logits["quantization"]
    out_scale, out_zero = output["quantization"]
    raw_logits, raw_probs = [], []
    for crop in crops:
        interpreter.set_tensor(source["index"], crop[None])
        interpreter.invoke()
        raw_logits.append(interpreter.get_tensor(logits_index)[0].astype(np.float32))
        raw_probs.append(interpreter.get_tensor(output["index"])[0].astype(np.float32))
    z = (np.stack(raw_logits) - logit_zero)[:, 1:] * logit_scale
    p = (np.stack(raw_probs) - out_zero)[:, 1:] * out_scale
    return z, p, float(logit_scale)


def forward(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return torch.cat([model(batch) for batch in x.split(25)]).numpy()


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return float(np.mean((top == labels[:, None]).any(1)))


def agreement(ours: np.ndarray, theirs: np.ndarray) -> dict[str, float]:
    rows = np.arange(len(ours))
    ours_top1, theirs_top1 = ours.argmax(1), theirs.argmax(1)
    top5 = np.argsort(-ours, axis=1)[:, :5]
    per_image = np.abs(ours - theirs).max(1)
    return {
        "strict": float(np.mean(ours_top1 == theirs_top1)),
        "tied": float(np.mean(theirs[rows, ours_top1] == theirs.max(1))),
        "in_top5": float(np.mean((top5 == theirs_top1[:, None]).any(1))),
        "max": float(per_image.max()),
        "median_max": float(np.median(per_image)),
        "mean_abs": float(np.abs(ours - theirs).mean()),
    }


def evaluate(tag: str, rows: list[dict], data: Path) -> dict:
    spec = get_weights(tag)
    path = resolve(spec)[0]
    start = time.perf_counter()
    crops = np.stack([spec.transform.to_uint8(load_image(data / "images" / row["filename"])) for row in rows])
    labels = np.array([int(row["class_index"]) for row in rows])
    model = lightnets.create_model(spec.model, weights=tag)
    x = torch.stack([spec.transform.normalise(crop) for crop in crops])
    ours = forward(model, x)
    theirs, probs, scale = litert_run(path, crops)
    handles = attach_activation_quantisation(model, path)
    quantised = forward(model, x)
    for handle in handles:
        handle.remove()
    ours_probs = torch.softmax(torch.from_numpy(ours), 1).numpy()
    return {
        "tag": tag,
        "n": len(rows),
        "float": agreement(ours, theirs),
        "fake_quant": agreement(quantised, theirs),
        "ours_acc": (topk_accuracy(ours, labels, 1), topk_accuracy(ours, labels, 5)),
        "fq_acc": (topk_accuracy(quantised, labels, 1), topk_accuracy(quantised, labels, 5)),
        "litert_acc": (topk_accuracy(theirs, labels, 1), topk_accuracy(theirs, labels, 5)),
        "litert_ties": int(np.sum((theirs == theirs.max(1, keepdims=True)).sum(1) > 1)),
        "logit_step": scale,
        "prob_max": float(np.abs(ours_probs - probs).max()),
        "seconds": time.perf_counter() - start,
    }


def pct(value: float) -> str:
    return f"{100 * value:.1f}"


def report(results: list[dict], command: str) -> str:
    lines = [
        "# Imported TFLite MobileNets vs the LiteRT interpreter",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.platform()}, {cpu_name()} ({os.cpu_count()} CPUs); Python "
        f"{platform.python_version()}, PyTorch {torch.__version__}, NumPy {np.__version__}, "
        f"ai-edge-litert {_version('ai-edge-litert')}, tflite {_version('tflite')}.",
        "",
        "Our model: float32, weights dequantised from the file. LiteRT: the integer model; its "
        "top-1/top-5 are taken from its dequantised logits (the SOFTMAX input), background dropped. "
        "Same uint8 crop for both (the spec transform). Images: the ImageNet sample (labels.csv, "
        "`class_index`); n per row below.",
        "",
        "## Agreement (%)",
        "",
        "| weights | n | top-1 agree | top-1 agree (LiteRT ties) | LiteRT top-1 in our top-5 "
        "| LiteRT top-1 ties | top-1 agree, fake-quant | in top-5, fake-quant |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        f, q = r["float"], r["fake_quant"]
        lines.append(
            f"| {r['tag']} | {r['n']} | {pct(f['strict'])} | {pct(f['tied'])} | {pct(f['in_top5'])} "
            f"| {r['litert_ties']} | {pct(q['strict'])} | {pct(q['in_top5'])} |"
        )
    lines += [
        "",
        "## Accuracy on the sample (%)",
        "",
        "| weights | ours top-1 | ours top-5 | LiteRT top-1 | LiteRT top-5 | fake-quant top-1 | fake-quant top-5 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        (o1, o5), (l1, l5), (q1, q5) = r["ours_acc"], r["litert_acc"], r["fq_acc"]
        lines.append(
            f"| {r['tag']} | {pct(o1)} | {pct(o5)} | {pct(l1)} | {pct(l5)} | {pct(q1)} | {pct(q5)} |"
        )
    lines += [
        "",
        "## Logit differences |ours - LiteRT| (LiteRT dequantised)",
        "",
        "Per image the largest difference over the 1000 classes; `step` is one quantisation step "
        "of LiteRT's logits. `max prob diff`: our softmax against LiteRT's uint8 softmax output.",
        "",
        "| weights | step | max | median of per-image max | mean | fake-quant max "
        "| fake-quant median | max prob diff | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        f, q = r["float"], r["fake_quant"]
        lines.append(
            f"| {r['tag']} | {r['logit_step']:.4f} | {f['max']:.3f} | {f['median_max']:.3f} "
            f"| {f['mean_abs']:.4f} | {q['max']:.3f} | {q['median_max']:.3f} | {r['prob_max']:.3f} "
            f"| {r['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=0, help="use the first N images (default: all)")
    parser.add_argument("--weights-root", type=Path, default=WEIGHTS)
    parser.add_argument("--data", type=Path, default=IMAGENET_SAMPLE)
    parser.add_argument("--output", type=Path, default=RESULTS / "tflite_agreement.md")
    args = parser.parse_args(argv)
    os.environ.setdefault("LIGHTNETS_WEIGHTS", str(args.weights_root))
    with open(args.data / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows = rows[: args.images] if args.images else rows
    results = []
    for tag in TAGS:
        results.append(evaluate(tag, rows, args.data))
        r = results[-1]
        print(
            f"{tag}: agree {pct(r['float']['strict'])}% (ties {pct(r['float']['tied'])}%), "
            f"in top-5 {pct(r['float']['in_top5'])}%, fake-quant agree {pct(r['fake_quant']['strict'])}%, "
            f"max |logit diff| {r['float']['max']:.2f}",
            flush=True,
        )
    command = " ".join(["python benchmarks/tflite_agreement.py", *(sys.argv[1:] if argv is None else argv)])
    text = report(results, command)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print()
    print(text)
    print(f"written {args.output}")


if __name__ == "__main__":
    main()
