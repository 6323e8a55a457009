"""Deployment latency on this CPU: lightnets' backends against the peers, one run.

    python benchmarks/deploy_latency.py [--runs 100] [--threads 1 2]

For each case (MobileNetV2 1.0-224, MobileNet v1 1.0-224 and 0.75-192, SqueezeNet 1.1,
ShuffleNet v1 g=3) every lightnets backend of ``lightnets bench`` (eager, channels-last,
folded, ONNX Runtime fp32 and int8, PyTorch int8) is timed next to the peers that exist:

* ONNX Runtime running the same architecture from torchvision (MobileNetV2, SqueezeNet
  1.1) or timm (MobileNet v1), exported the standard way: ``torch.onnx.export(model,
  (x,), path)`` on the model in eval mode, batch 1, nothing else;
* the LiteRT interpreter (XNNPACK, same thread count) running the original quantised
  TFLite files of the shared weights (MobileNetV2 uint8 and int8, MobileNet v1 0.75 uint8).

Next to an ONNX peer, lightnets' export is also timed with a fixed batch of 1 (the peers'
files have one), besides the dynamic-batch file ``lightnets export`` writes by default.

torchvision and timm are the benchmark environment's (``scripts/setup --test``: installed
with ``--no-deps`` so torch stays the CPU build, imported through tests/peers.py); the
library never imports them. Every figure is measured in a fresh process, in this run;
int8 models are calibrated on real Imagenette images. The lightnets models use PyTorch's
symmetric padding (the torchvision/timm definitions); the TFLite files keep TensorFlow's.

Writes results/deploy_latency.md, .csv and .png.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from _paths import IMAGENETTE, RESULTS, use_shared_weights  # noqa: E402

from lightnets import create_model  # noqa: E402
from lightnets.deploy import bench  # noqa: E402
from lightnets.deploy.bench_report import write_report  # noqa: E402
from lightnets.deploy.export import export_onnx  # noqa: E402
from lightnets.weights.spec import get_weights  # noqa: E402
from lightnets.weights.store import resolve  # noqa: E402
from peers import import_timm, import_torchvision  # noqa: E402

CALIBRATION = IMAGENETTE / "train"


@dataclass
class Case:
    label: str
    model: str
    kwargs: dict
    size: int
    onnx_peer: tuple[str, str] | None = None  # (library, constructor)
    tflite_peers: list[str] = field(default_factory=list)  # weights tags
    weights: str | None = None  # released ImageNet weights (deploy_runtimes.py measures agreement)


CASES = [
    Case(
        "MobileNetV2 1.0-224",
        "mobilenet_v2",
        {"width": 1.0},
        224,
        ("torchvision", "mobilenet_v2"),
        ["mobilenet_v2_100_224.tflite_uint8", "mobilenet_v2_100_224.tflite_int8_ptq"],
    ),
    Case("MobileNet v1 1.0-224", "mobilenet_v1", {"width": 1.0}, 224, ("timm", "mobilenetv1_100")),
    Case(
        "MobileNet v1 0.75-192",
        "mobilenet_v1",
        {"width": 0.75},
        192,
        None,
        ["mobilenet_v1_075_192.tflite_uint8"],
    ),
    Case("SqueezeNet 1.1", "squeezenet1_1", {}, 224, ("torchvision", "squeezenet1_1")),
    Case("ShuffleNet v1 1x g=3", "shufflenet_v1", {"groups": 3}, 224),
]


def export_peer(library: str, constructor: str, size: int, path: Path) -> Path:
    """The peer's model exported the standard way."""
    if library == "torchvision":
        model = getattr(import_torchvision(), constructor)()
    else:
        model = import_timm().create_model(constructor)
    model.eval()
    torch.onnx.export(model, (torch.randn(1, 3, size, size),), str(path))
    return path


def targets_of(case: Case, workdir: Path, backends: list[str]) -> list[bench.Target]:
    targets = bench.model_targets(
        case.model,
        case.kwargs,
        backends=backends,
        input_size=case.size,
        calibration=str(CALIBRATION),
        workdir=workdir,
        label=case.label,
    )
    madds = targets[0].madds
    if case.onnx_peer:
        # lightnets' export with a fixed batch of 1, as a phone deployment would use it.
        static = export_onnx(
            create_model(case.model, **case.kwargs).eval(),
            workdir / f"{case.model}.static.onnx",
            input_size=case.size,
            dynamic_batch=False,
        )
        targets.append(
            bench.Target(
                case.label, "onnx_file", madds, input_size=case.size, file=str(static), model="static"
            )
        )
        library, constructor = case.onnx_peer
        path = export_peer(library, constructor, case.size, workdir / f"{constructor}.peer.onnx")
        targets.append(
            bench.Target(
                case.label, "onnx_file", madds, input_size=case.size, file=str(path), model=f"{library}"
            )
        )
    for tag in case.tflite_peers:
        (path,) = resolve(get_weights(tag))
        targets.append(
            bench.Target(case.label, "tflite_file", madds, input_size=case.size, file=str(path), model=tag)
        )
    return targets


def peer_name(target: bench.Target) -> str:
    if target.backend == "onnx_file" and target.model == "static":
        return "ort_fp32, static batch 1"
    if target.backend == "onnx_file":
        return f"ORT fp32, {target.model} export"
    if target.backend == "tflite_file":
        return f"LiteRT {target.model.split('.')[-1]}"
    return target.backend


# The headline comparisons: lightnets' ONNX Runtime files (fp32 and int8) against the peers.
HEADLINE = ("ort_fp32", "ort_int8", "onnx_file", "tflite_file")


def ratio_lines(case: Case, rows: list[bench.Measurement], names: list[str], rate: float) -> list[str]:
    """The ratios for one case and thread count, from interleaved measurements."""
    by = {name: m.latency_ms for name, m in zip(names, rows, strict=True)}
    threads = rows[0].threads
    floor = rows[0].madds / rate * 1e3
    parts = [", ".join(f"{name} {ms:.2f} ms" for name, ms in by.items())]
    peer = next((k for k in by if k.startswith("ORT fp32,")), None)
    if peer:
        parts.append(f"ort_fp32 / {peer} = **{by['ort_fp32'] / by[peer]:.2f}x**")
        static = "ort_fp32, static batch 1"
        parts.append(f"{static} / {peer} = **{by[static] / by[peer]:.2f}x**")
        parts.append(f"speed-up of ort_int8 over {peer} = **{by[peer] / by['ort_int8']:.2f}x**")
    parts.append(
        f"ort_fp32 / floor = **{by['ort_fp32'] / floor:.2f}x** (floor {floor:.2f} ms at the "
        f"interleaved GEMM rate, {rate / 1e9:.1f} G/s)"
    )
    for name in by:
        if name.startswith("LiteRT"):
            parts.append(f"ort_int8 / {name} = **{by['ort_int8'] / by[name]:.2f}x**")
    return [f"- {case.label}, {threads} thread(s): " + "; ".join(parts)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cases", nargs="*", help="case labels to run (default: all)")
    parser.add_argument("--interleaved-runs", type=int, default=300, help="rounds of the headline ratios")
    args = parser.parse_args()
    use_shared_weights()
    backends = list(bench.BACKENDS)

    rates = {n: bench.gemm_rate(n) for n in args.threads}
    print({n: f"{r / 1e9:.1f} G MAdds/s" for n, r in rates.items()}, flush=True)
    measurements: list[bench.Measurement] = []
    notes = [
        "",
        "Headline ratios. The table above times each backend in its own process, one after the "
        "other; on this (virtual, shared) machine the speed drifts by tens of percent from one "
        f"minute to the next, so the ratios below come from a second measurement: lightnets' ONNX "
        f"Runtime fp32 and int8 files, the peers and a 1024^3 fp32 GEMM in one process, one call "
        f"of each in turn, {args.interleaved_runs} rounds, one thread "
        "(`lightnets.deploy.bench.interleaved`); medians at batch 1, < 1 means the first is faster:",
        "",
    ]
    with tempfile.TemporaryDirectory(prefix="lightnets-deploy-") as folder:
        for case in CASES:
            if args.cases and case.label not in args.cases:
                continue
            targets = targets_of(case, Path(folder), backends)
            rows = bench.benchmark(
                targets, args.threads, runs=args.runs, warmup=args.warmup, batch=args.batch
            )
            for target, m in zip([t for t in targets for _ in args.threads], rows, strict=True):
                m.backend = peer_name(target)
                print(f"{case.label:24s} {m.backend:34s} {m.threads}t {m.latency_ms:8.2f} ms", flush=True)
            measurements += rows
            headline = [t for t in targets if t.backend in HEADLINE]
            paired, rate = bench.interleaved(headline, 1, runs=args.interleaved_runs, warmup=args.warmup)
            notes += ratio_lines(case, paired, [peer_name(t) for t in headline], rate)
            print(notes[-1], flush=True)
    command = "python benchmarks/deploy_latency.py " + shlex.join(sys.argv[1:])
    for path in write_report(
        measurements,
        rates,
        RESULTS,
        title="Deployment latency: lightnets backends and peers",
        command=command.strip(),
        name="deploy_latency",
        notes=notes,
    ):
        print(f"written {path}")


if __name__ == "__main__":
    main()
