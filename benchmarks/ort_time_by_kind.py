"""Where ONNX Runtime spends a MobileNetV2's time, by layer kind, against where its MAdds are.

    python benchmarks/ort_time_by_kind.py [--model mobilenet_v2] [--runs 200]

Why a network sits above its GEMM floor (MAdds / the machine's fp32 multiply-add rate):
ONNX Runtime's own profiler times every kernel of the exported model (fp32, batch 1, one
thread); each convolution kernel is matched to its layer by output shape and weight shape,
and the times are summed per kind (the analyser's kinds: conv, pointwise, depthwise, FC),
next to each kind's share of the MAdds and the multiply-add rate it reaches. Writes
results/ort_time_by_kind.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from _output import write_markdown
from _paths import RESULTS

import lightnets
from lightnets.deploy import export_onnx
from lightnets.deploy.bench import gemm_rate
from lightnets.deploy.bench_report import machine_description
from lightnets.deploy.runtime import session_options


def kernel_times(path: Path, runs: int) -> list[dict]:
    """ONNX Runtime's per-kernel profile records of ``runs`` batch-1 calls (after warm-up)."""
    import onnxruntime as ort

    options = session_options(threads=1)
    options.enable_profiling = True
    options.profile_file_prefix = str(path.with_suffix(""))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    for _ in range(runs):
        session.run(None, {name: x})
    events = json.loads(Path(session.end_profiling()).read_text())
    return [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]


def layer_kind(args: dict, kinds: dict[tuple, str]) -> str:
    """The analyser's kind of the layer a kernel computes, from its weight and output shapes."""
    op = args.get("op_name", "")
    if not any(kind in op for kind in ("Conv", "Gemm", "MatMul")):
        return "other (pooling, adds, reorders)"
    shapes = [next(iter(d.values())) for d in args.get("input_type_shape", [])]
    weight = next((tuple(s) for s in shapes[1:] if len(s) in (2, 4)), None)
    return kinds.get(weight, "other (pooling, adds, reorders)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    model = lightnets.create_model(args.model).eval()
    report = lightnets.profile(model, (3, 224, 224))
    madds_by_kind: dict[str, int] = defaultdict(int)
    kinds: dict[tuple, str] = {}
    modules = dict(model.named_modules())
    for layer in report.layers:
        if layer.madds:
            madds_by_kind[layer.kind] += layer.madds
            kinds[tuple(modules[layer.name].weight.shape)] = layer.kind
    rate = gemm_rate(1)
    with tempfile.TemporaryDirectory() as folder:
        path = export_onnx(model, Path(folder) / "model.onnx", input_size=224)
        events = kernel_times(path, args.runs)
    time_by_kind: dict[str, float] = defaultdict(float)
    for event in events:
        time_by_kind[layer_kind(event.get("args", {}), kinds)] += (
            event["dur"] / 1e3 / args.runs
        )  # ms per call
    total_time = sum(time_by_kind.values())
    total_madds = sum(madds_by_kind.values())
    lines = [
        f"# Where ONNX Runtime spends {args.model}'s time (fp32, batch 1, one thread)",
        "",
        f"Machine: {machine_description()}.",
        f"Command: `python benchmarks/ort_time_by_kind.py {shlex.join(sys.argv[1:])}`".rstrip() + "`."
        if sys.argv[1:]
        else "Command: `python benchmarks/ort_time_by_kind.py`.",
        "",
        f"Single-thread fp32 GEMM rate: {rate / 1e9:.1f} G multiply-adds/s; kernel times from ONNX "
        f"Runtime's profiler, {args.runs} calls (the profiler adds a little time of its own).",
        "",
        "| layer kind | MAdds (M) | share of MAdds | time per call (ms) | share of time | rate (G MAdds/s) | x GEMM rate |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in sorted({*time_by_kind, *madds_by_kind}, key=lambda k: time_by_kind.get(k, 0), reverse=True):
        ms, madds = time_by_kind.get(kind, 0.0), madds_by_kind.get(kind, 0)
        achieved = madds / (ms / 1e3) if madds and ms else 0.0
        if not ms:  # a kernel whose weights ONNX Runtime pre-packed: its time is under "other"
            lines.append(
                f"| {kind} | {madds / 1e6:.1f} | {madds / total_madds:.1%} | (in other) | - | - | - |"
            )
            continue
        lines.append(
            f"| {kind} | {madds / 1e6:.1f} | {madds / total_madds:.1%} | {ms:.2f} | {ms / total_time:.1%} | "
            + (f"{achieved / 1e9:.1f} | {achieved / rate:.2f} |" if achieved else "- | - |")
        )
    lines += [
        f"| total | {total_madds / 1e6:.1f} | 100% | {total_time:.2f} | 100% | "
        f"{total_madds / (total_time / 1e3) / 1e9:.1f} | {total_madds / (total_time / 1e3) / rate:.2f} |",
        "",
    ]
    print("\n".join(lines))
    write_markdown(lines, RESULTS / "ort_time_by_kind.md")


if __name__ == "__main__":
    main()
