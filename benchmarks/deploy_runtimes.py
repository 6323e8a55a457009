"""Every runtime on every family: ONNX Runtime, LiteRT and PyTorch, fp32 and int8, one run.

    python benchmarks/deploy_runtimes.py                 # every case, about 7 minutes
    python benchmarks/deploy_runtimes.py --cases "MobileNetV2 1.0-224" --rounds 100

For each case (every family at two widths, with the released ImageNet weights where
they exist) lightnets exports the model to ONNX and to TFLite, fp32 and int8 (calibrated
on 256 real Imagenette images, as ``lightnets export --int8`` does), and times, at batch 1:

* one thread: PyTorch with BatchNorm folded (``deploy()``), ONNX Runtime fp32 and int8,
  LiteRT fp32 and int8, and the official TFLite files where the release has one, all in
  one process, one call of each in turn (``lightnets.deploy.bench.interleaved``), the
  median of ``--rounds`` rounds: the fair comparison on a machine whose speed drifts;
* every core: each runtime in a fresh process, one after the other
  (``lightnets.deploy.bench.benchmark``); runtimes' worker pools would compete if
  interleaved.

``auto`` is what ``--backend auto`` picks: the fastest fp32 runtime of the row, and its
speed-up over ONNX Runtime alone is reported; likewise the best int8. For the cases
with ImageNet weights, each exported file's top-1 agreement with the PyTorch model on
the 500-image ImageNet sample (images never used in calibration) and the largest logit
difference are measured. Writes results/deploy_runtimes.md, .csv and .png.
"""

from __future__ import annotations

import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch
from _output import benchmark_parser, save_figure, subplots, write_csv, write_markdown
from _paths import IMAGENET_SAMPLE, IMAGENETTE, RESULTS, use_shared_weights
from deploy_latency import Case  # the same cases' description

from lightnets import create_model
from lightnets.cpu import all_threads
from lightnets.deploy import bench
from lightnets.deploy.bench_report import machine_description
from lightnets.deploy.calibration import calibration_files, prepare_images
from lightnets.deploy.litert import LiteRTRuntime
from lightnets.deploy.quantize import top1_agreement
from lightnets.deploy.runtime import Runtime
from lightnets.weights.spec import get_weights
from lightnets.weights.store import resolve

CALIBRATION = IMAGENETTE / "train"
BACKENDS = ["folded", "ort_fp32", "litert_fp32", "ort_int8", "litert_int8"]
FP32 = ("folded", "ort_fp32", "litert_fp32")
INT8 = ("ort_int8", "litert_int8")


CASES = [
    Case(
        "MobileNetV2 1.0-224",
        "mobilenet_v2",
        {},
        224,
        tflite_peers=["mobilenet_v2_100_224.tflite_int8_ptq", "mobilenet_v2_100_224.tflite_uint8"],
        weights="mobilenet_v2_100_224.tflite_uint8",
    ),
    Case("MobileNetV2 0.5-224", "mobilenet_v2", {"width": 0.5}, 224),
    Case("MobileNet v1 1.0-224", "mobilenet_v1", {"width": 1.0}, 224),
    Case(
        "MobileNet v1 0.75-192",
        "mobilenet_v1",
        {},
        192,
        tflite_peers=["mobilenet_v1_075_192.tflite_uint8"],
        weights="mobilenet_v1_075_192.tflite_uint8",
    ),
    Case("MobileNet v1 0.5-160", "mobilenet_v1", {}, 160, weights="mobilenet_v1_050_160.tflite_uint8"),
    Case("SqueezeNet 1.1", "squeezenet1_1", {}, 224, weights="squeezenet1_1.gluon_npy"),
    Case("SqueezeNet 1.0", "squeezenet1_0", {}, 227, weights="squeezenet1_0.deep_compression"),
    Case("ShuffleNet v1 1x g=3", "shufflenet_v1", {"groups": 3}, 224),
    Case("ShuffleNet v1 0.5x g=3", "shufflenet_v1", {"groups": 3, "scale": 0.5}, 224),
]


def targets_of(case: Case, workdir: Path) -> list[bench.Target]:
    targets = bench.model_targets(
        case.model,
        case.kwargs,
        weights=case.weights,
        backends=BACKENDS,
        input_size=case.size,
        calibration=str(CALIBRATION),
        workdir=workdir,
        label=case.label,
    )
    for tag in case.tflite_peers:
        (path,) = resolve(get_weights(tag))
        name = "official " + tag.rsplit(".", 1)[-1].removeprefix("tflite_")
        targets.append(bench.Target(case.label, "tflite_file", targets[0].madds, name, file=str(path)))
    return targets


def name_of(target: bench.Target) -> str:
    return target.model if target.backend == "tflite_file" and target.model else target.backend


def agreement(case: Case, targets: list[bench.Target]) -> dict[str, tuple[float, float]]:
    """Top-1 agreement and max |logit diff| of each exported file with the PyTorch model."""
    model = create_model(case.model, weights=case.weights, **case.kwargs).eval()
    files = {
        t.backend: t.file
        for t in targets
        if t.backend in ("ort_fp32", "ort_int8", "litert_fp32", "litert_int8")
    }
    runtimes = {
        name: (LiteRTRuntime(path, threads=2) if name.startswith("litert") else Runtime(path, threads=2))
        for name, path in files.items()
        if path
    }
    first = next(iter(runtimes.values()))
    images = prepare_images(calibration_files(IMAGENET_SAMPLE, None), first.transform)
    with torch.inference_mode():
        reference = torch.cat([model(batch) for batch in images.split(50)])
    found = {}
    for name, runtime in runtimes.items():
        logits = torch.cat([runtime(batch) for batch in images.split(50)])
        found[name] = (top1_agreement(reference, logits), float((reference - logits).abs().max()))
    return found


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=200, help="interleaved one-thread rounds (200)")
    parser.add_argument("--runs", type=int, default=100, help="calls of each all-core measurement (100)")
    parser.add_argument("--cases", nargs="*", help="case labels to run (default: all)")
    parser.add_argument("--no-agreement", action="store_true", help="latency only")
    args = parser.parse_args()
    use_shared_weights()
    cores = all_threads()
    started = time.time()
    rows: list[dict] = []
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="lightnets-runtimes-") as folder:
        for case in CASES:
            if args.cases and case.label not in args.cases:
                continue
            targets = targets_of(case, Path(folder))
            one, rate = bench.interleaved(targets, 1, runs=args.rounds, warmup=20)
            everyone = bench.benchmark(targets, [cores], runs=args.runs, warmup=10, batch=1, progress=False)
            agree = agreement(case, targets) if case.weights and not args.no_agreement else {}
            for target, a, b in zip(targets, one, everyone, strict=True):
                name = name_of(target)
                rows.append(
                    {
                        "case": case.label,
                        "runtime": name,
                        "madds": target.madds,
                        "ms_1_thread": round(a.latency_ms, 3),
                        f"ms_{cores}_threads": round(b.latency_ms, 3),
                        "top1_agreement": round(agree[name][0], 4) if name in agree else "",
                        "max_logit_diff": round(agree[name][1], 4) if name in agree else "",
                    }
                )
                print(
                    f"{case.label:24s} {name:16s} {a.latency_ms:7.2f} ms  {b.latency_ms:7.2f} ms", flush=True
                )
            lines += summary(case, rows[-len(targets) :], cores)
            # Written after every case: a failure later keeps what was measured.
            write_outputs(rows, lines, cores, time.time() - started, shlex.join(sys.argv[1:]))


def summary(case: Case, rows: list[dict], cores: int) -> list[str]:
    """``auto``'s choice and speed-up over ONNX Runtime, at each thread count, fp32 and int8."""
    out = []
    for column, threads in (("ms_1_thread", 1), (f"ms_{cores}_threads", cores)):
        ms = {r["runtime"]: r[column] for r in rows}
        best32 = min(FP32, key=ms.__getitem__)
        best8 = min(INT8, key=ms.__getitem__)
        official = {k: v for k, v in ms.items() if k.startswith("official int8")}
        text = (
            f"- {case.label}, {threads} thread(s): auto (fp32) picks **{best32}**, "
            f"{ms['ort_fp32'] / ms[best32]:.2f}x the speed of ONNX Runtime alone; best int8 "
            f"**{best8}** ({ms[best8]:.2f} ms, {ms['ort_int8'] / ms[best8]:.2f}x ORT int8)"
        )
        for name, value in official.items():
            text += f"; litert_int8 / {name} = **{ms['litert_int8'] / value:.2f}x**"
        out.append(text)
    return out


def write_outputs(rows: list[dict], lines: list[str], cores: int, seconds: float, arguments: str) -> None:
    write_csv(rows, RESULTS / "deploy_runtimes.csv")
    columns = list(rows[0])
    table = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    table += ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows]
    write_markdown(
        [
            "# Runtimes: ONNX Runtime, LiteRT and PyTorch on every family",
            "",
            f"Command: `{('python benchmarks/deploy_runtimes.py ' + arguments).strip()}`",
            f"Machine: {machine_description()}; {seconds / 60:.0f} minutes.",
            "",
            "Batch 1. `ms_1_thread`: one thread, every runtime of a row in one process, one call "
            "of each in turn (medians). "
            f"`ms_{cores}_threads`: every core, each runtime in a fresh process. `folded`: PyTorch "
            "with BatchNorm folded and Conv-BN-act fused. `official ...`: the release's own TFLite "
            "file. Agreement: top-1 agreement with the PyTorch model on the 500-image ImageNet "
            "sample (only where ImageNet weights exist; the int8 files are calibrated on 256 "
            "Imagenette images).",
            "",
            *table,
            "",
            "## auto and the best int8",
            "",
            *lines,
        ],
        RESULTS / "deploy_runtimes.md",
    )
    plot(rows, cores)


def plot(rows: list[dict], cores: int) -> None:
    cases = list(dict.fromkeys(r["case"] for r in rows))
    names = list(dict.fromkeys(r["runtime"] for r in rows))
    fig, axes = subplots(1, 2, figsize=(14, 5), sharey=True)
    width = 0.8 / len(names)
    for ax, column, title in (
        (axes[0], "ms_1_thread", "1 thread"),
        (axes[1], f"ms_{cores}_threads", f"{cores} threads"),
    ):
        for k, name in enumerate(names):
            xs, ys = [], []
            for i, case in enumerate(cases):
                value = next((r[column] for r in rows if r["case"] == case and r["runtime"] == name), None)
                if value is not None:
                    xs.append(i + k * width)
                    ys.append(value)
            ax.bar(xs, ys, width, label=name)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(cases))], cases, rotation=30, ha="right")
        ax.set_title(f"batch-1 latency, {title}")
        ax.set_ylabel("ms (lower is faster)")
    axes[0].legend(fontsize=8)
    save_figure(fig, RESULTS / "deploy_runtimes.png")


if __name__ == "__main__":
    main()
