"""Where LiteRT spends the time of lightnets' int8 MobileNetV2 and of Google's own int8 file.

    python benchmarks/tflite_int8_profile.py [--rounds 300]

LiteRT's Python interpreter has no per-operator profiler (XNNPACK runs the whole graph
as one delegate node), so each file is cut after every operator: the prefix of the
first k operators, its output the k-th operator's, is a valid TFLite model, and the
k-th operator's cost is the time of prefix k minus that of prefix k - 1. All prefixes of
both files are timed in one process, one call of each in turn, batch 1, one thread
(medians). The operators are grouped by kind: the input's quantisation and the first
convolution, pointwise (1x1) convolutions, depthwise convolutions, the residual
additions, the pooling, and the classifier (its convolution or fully connected layer
with whatever reshapes, softmax and (de)quantisation ends the file). lightnets' file is
``lightnets export --int8`` of the same network (``mobilenet_v2_100_224.tflite_uint8``
weights, 256 Imagenette calibration images); Google's is the TF2 post-training int8
release. Writes results/tflite_int8_profile.md and .png.
"""

from __future__ import annotations

import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _output import benchmark_parser, save_figure, subplots, write_markdown
from _paths import IMAGENETTE, RESULTS, use_shared_weights

from lightnets.deploy.bench_report import machine_description
from lightnets.deploy.tflite import export_tflite, native_output_held, operator_names
from lightnets.weights.spec import get_weights
from lightnets.weights.store import resolve
from lightnets.zoo import model_for_weights

WEIGHTS = "mobilenet_v2_100_224.tflite_uint8"
OFFICIAL = "mobilenet_v2_100_224.tflite_int8_ptq"
KINDS = ["input + first conv", "pointwise conv", "depthwise conv", "add", "pool", "classifier"]


def operators(data: bytes) -> list[tuple[str, str]]:
    """(operator name, kind) of every operator of the file's graph, in order."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(data, 0)
    names = operator_names(model)
    (graph,) = model.subgraphs
    found, seen_conv, pooled = [], False, False
    for op in graph.operators:
        name = names[op.opcodeIndex]
        if pooled:
            kind = "classifier"  # everything after the global pooling
        elif name == "MEAN":
            kind, pooled = "pool", True
        elif not seen_conv:
            kind = "input + first conv"
            seen_conv = name == "CONV_2D"
        elif name == "DEPTHWISE_CONV_2D":
            kind = "depthwise conv"
        elif name == "CONV_2D":
            kind = "pointwise conv" if tuple(graph.tensors[op.inputs[1]].shape)[1:3] == (1, 1) else "conv"
        elif name == "ADD":
            kind = "add"
        else:
            kind = name.lower()
        found.append((name, kind))
    return found


def prefixes(data: bytes) -> list[bytes]:
    """The file cut after each of its operators (the k-th output as the model's output)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    cuts = []
    count = len(schema.ModelT.InitFromPackedBuf(data, 0).subgraphs[0].operators)
    for k in range(1, count + 1):
        model = schema.ModelT.InitFromPackedBuf(data, 0)
        for buffer in model.buffers:
            # ai-edge-quantizer stores constants after the flatbuffer, by offset into the
            # file; a re-packed model carries them inside.
            if buffer.offset > 1:
                buffer.data = np.frombuffer(data[buffer.offset : buffer.offset + buffer.size], np.uint8)
                buffer.offset = buffer.size = 0
        graph = model.subgraphs[0]
        graph.operators = graph.operators[:k]
        graph.outputs = [graph.operators[-1].outputs[0]]
        model.signatureDefs = []  # the signature names the full model's output
        builder = flatbuffers.Builder(len(data) + 4096)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        cuts.append(bytes(builder.Output()))
    return cuts


def time_all(models: list[bytes], rounds: int) -> np.ndarray:
    """Median seconds of one batch-1 call of each model, one thread, all interleaved."""
    from ai_edge_litert.interpreter import Interpreter

    runners = []
    with native_output_held():
        for data in models:
            interpreter = Interpreter(model_content=data, num_threads=1)
            interpreter.allocate_tensors()
            (detail,) = interpreter.get_input_details()
            interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
            runners.append(interpreter)
    times = np.zeros((rounds, len(runners)))
    for r in range(rounds + 20):  # 20 rounds of warm-up
        for i, interpreter in enumerate(runners):
            start = time.perf_counter()
            interpreter.invoke()
            if r >= 20:
                times[r - 20, i] = time.perf_counter() - start
    return np.median(times, axis=0)


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    use_shared_weights()
    started = time.time()
    (official_path,) = resolve(get_weights(OFFICIAL))
    with tempfile.TemporaryDirectory(prefix="lightnets-profile-") as folder:
        ours_path = Path(folder) / "lightnets_int8.tflite"
        export_tflite(
            model_for_weights(WEIGHTS).eval(), ours_path, int8=True, calibration=IMAGENETTE / "train"
        )
        files = {
            "lightnets int8": ours_path.read_bytes(),
            "official int8 (TF2 PTQ)": Path(official_path).read_bytes(),
        }
    cuts = {label: prefixes(data) for label, data in files.items()}
    every = [cut for label in files for cut in cuts[label]]
    medians = time_all(every, args.rounds)
    per_file, offset = {}, 0
    for label, data in files.items():
        cumulative = medians[offset : offset + len(cuts[label])]
        offset += len(cuts[label])
        per_op = np.diff(np.concatenate([[0.0], cumulative]))
        per_file[label] = (operators(data), per_op, cumulative)

    labels = list(files)
    kinds = list(dict.fromkeys(KINDS + [k for label in labels for _, k in per_file[label][0]]))
    table = [
        "| kind | " + " | ".join(f"{label}: ops, ms" for label in labels) + " | lightnets / official |",
        "|---|" + "---:|" * (len(labels) + 1),
    ]
    totals = {}
    for kind in kinds:
        cells = []
        for label in labels:
            ops, per_op, _ = per_file[label]
            chosen = [t for (_, k), t in zip(ops, per_op, strict=True) if k == kind]
            totals[(label, kind)] = sum(chosen)
            cells.append(f"{len(chosen)}, {sum(chosen) * 1e3:.3f}" if chosen else "-")
        ours, theirs = totals[(labels[0], kind)], totals[(labels[1], kind)]
        ratio = f"{ours / theirs:.2f}" if ours > 0 and theirs > 0 else "-"
        table.append(f"| {kind} | " + " | ".join(cells) + f" | {ratio} |")
    # The prefixes' artefact sits at the start, so the robust split is the stem and the first
    # bottleneck (up to the first pointwise convolution) against everything after.
    starts = []
    for label in labels:
        ops, _, cumulative = per_file[label]
        first_pointwise = next(i for i, (_, kind) in enumerate(ops) if kind == "pointwise conv")
        starts.append(cumulative[first_pointwise])
    whole = [per_file[label][2][-1] for label in labels]
    for name, values in (
        ("input, stem and first bottleneck", starts),
        ("everything after", [w - start for w, start in zip(whole, starts, strict=True)]),
    ):
        table.append(
            f"| _{name}_ | "
            + " | ".join(f"{v * 1e3:.3f}" for v in values)
            + f" | {values[0] / values[1]:.2f} |"
        )
    table.append(
        "| **whole file** | "
        + " | ".join(
            f"{len(per_file[label][0])}, **{w * 1e3:.3f}**" for label, w in zip(labels, whole, strict=True)
        )
        + f" | **{whole[0] / whole[1]:.2f}** |"
    )
    detail = [
        "| # | " + " | ".join(f"{label}: operator, kind, ms" for label in labels) + " |",
        "|---:|---|---|",
    ]
    for i in range(max(len(per_file[label][0]) for label in labels)):
        cells = []
        for label in labels:
            ops, per_op, _ = per_file[label]
            cells.append(f"{ops[i][0]}, {ops[i][1]}, {per_op[i] * 1e3:.3f}" if i < len(ops) else "")
        detail.append(f"| {i + 1} | " + " | ".join(cells) + " |")

    fig, ax = subplots(figsize=(8, 4.5))
    for label in labels:
        cumulative = per_file[label][2]
        ax.plot(np.arange(1, len(cumulative) + 1), cumulative * 1e3, marker=".", label=label)
    ax.set_xlabel("operators run (prefix of the file)")
    ax.set_ylabel("median time, batch 1, 1 thread (ms)")
    ax.set_title("MobileNetV2 1.0 int8 in LiteRT (XNNPACK), operator by operator")
    ax.legend()
    ax.grid(alpha=0.3)
    save_figure(fig, RESULTS / "tflite_int8_profile.png")
    write_markdown(
        [
            "# int8 MobileNetV2 in LiteRT: lightnets' file against Google's, operator by operator",
            "",
            f"Command: `{('python benchmarks/tflite_int8_profile.py ' + shlex.join(sys.argv[1:])).strip()}`",
            f"Machine: {machine_description()}; {(time.time() - started) / 60:.0f} minutes.",
            "",
            "Each operator's time is the median time of the file cut after it minus that of the file "
            f"cut before it (batch 1, one thread, {args.rounds} interleaved rounds; see the script's "
            "docstring). Small operators' differences are at the timer's noise (a few microseconds, "
            "sometimes below zero), and the first prefixes of Google's file, which end in large "
            "tensors of a partly delegated graph, are slower than the whole file's start: read the "
            "kinds' sums with care, and the last two rows (the file up to its first bottleneck's "
            "pointwise convolution, and the rest) first. lightnets' file takes int8 input "
            "(the caller quantises the normalised image, as apps feed the official uint8 files their "
            "pixels); Google's int8 file takes float input and quantises it inside, its first operator.",
            "",
            *table,
            "",
            "![cumulative time](tflite_int8_profile.png)",
            "",
            "## Every operator",
            "",
            *detail,
        ],
        RESULTS / "tflite_int8_profile.md",
    )


if __name__ == "__main__":
    main()
