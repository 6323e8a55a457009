"""Memory-efficient inference of MobileNetV2 (its Section 5), measured for real.

    python benchmarks/memory_efficient.py            # writes results/memory_efficient.md
    python benchmarks/memory_efficient.py --runs 200 --chunks 1 4 8 16

For MobileNetV2 1.0-224 at batch 1, one intra-op thread, it measures the peak
activation memory of the plain PyTorch forward and of the chunked executor
(``lightnets.deploy.memory_efficient``) for several chunk counts k, and compares them
with the analyser's "block as one operation" bound. Memory is measured two independent
ways: PyTorch's profiler allocation records (every allocation through c10's CPU
allocator, with time stamps: the running sum's maximum) and, as a cross-check that
nothing large is allocated behind PyTorch's back, the process's resident-set high-water
mark in a fresh subprocess (glibc told to mmap every block >= 64 KiB so that a free is
returned to the system at once). It also times every variant (median and p90 over
interleaved runs after warm-up) and checks the logits against the plain forward.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from _paths import RESULTS
from random_statistics import randomise_batchnorm
from torch import Tensor, nn

import lightnets
from lightnets.cost.memory import activation_memory
from lightnets.deploy.memory_efficient import ChunkedInvertedResidual, measure_peak_memory, memory_efficient

MB = 1e6


class ChannelsLast(nn.Module):
    """The plain model run channels-last (weights and input), as `lightnets bench`'s
    "eager channels-last" backend does."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x.contiguous(memory_format=torch.channels_last))


def nbytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


def build(variant: str, width: float = 1.0) -> nn.Module:
    """``plain``, ``plain-cl``, ``chunked-K``, ``bytes-B`` (``chunk_bytes=B``),
    ``folded-K`` (BatchNorm folded first, then chunked) or ``noinplace-K``."""
    torch.manual_seed(0)
    model = randomise_batchnorm(lightnets.create_model("mobilenet_v2", width=width))
    kind, _, number = variant.partition("-")
    if variant == "plain":
        return model
    if variant == "plain-cl":
        return ChannelsLast(model).eval()
    if kind == "bytes":
        return memory_efficient(model, chunk_bytes=int(number))
    if variant == "auto":
        return memory_efficient(model, chunks="auto")
    if kind == "noinplace":
        return memory_efficient(model, chunks=int(number), inplace_convs=False)
    if kind == "folded":
        from lightnets.deploy.fold import fold_batchnorm  # another part of the deploy stage

        return memory_efficient(fold_batchnorm(model), chunks=int(number))
    return memory_efficient(model, chunks=int(number))


def label(variant: str) -> str:
    kind, _, number = variant.partition("-")
    if variant == "plain":
        return "plain PyTorch forward (NCHW)"
    if variant == "plain-cl":
        return "plain PyTorch forward, channels-last"
    if kind == "bytes":
        return f"chunked, `chunk_bytes={int(number) // 1024} KiB` (k per block)"
    if variant == "auto":
        return '`chunks="auto"`: k per block within the bound + 10%'
    if kind == "noinplace":
        return f"chunked, k = {number}, stem and last layer left plain (`inplace_convs=False`)"
    if kind == "folded":
        return f"`fold_batchnorm`, then chunked, k = {number}"
    return f"chunked, k = {number}"


def profiler_peak(model: nn.Module, x: Tensor) -> int:
    with torch.no_grad():
        for _ in range(2):
            model(x)  # oneDNN sets itself up on the first calls
        return measure_peak_memory(lambda: model(x)).peak_bytes


# ------------------------------------------------------------------ RSS cross-check

_RSS_CHILD = """
import sys, torch
sys.path.insert(0, {here!r})
from memory_efficient import build
torch.set_num_threads(1)

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

model = build({variant!r}, {width!r})
x = torch.randn(1, 3, 224, 224)
deltas = []
with torch.no_grad():
    for _ in range(3):
        model(x)
    for _ in range(7):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the high-water mark to the current RSS
        base = status("VmRSS:")
        y = model(x)
        del y
        deltas.append(status("VmHWM:") - base)
print(sorted(deltas)[len(deltas) // 2])
"""


def rss_peak(variant: str, width: float = 1.0) -> int | None:
    """Median growth of the resident set during one forward, in a fresh process."""
    if not Path("/proc/self/clear_refs").exists():
        return None
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0", OMP_NUM_THREADS="1")
    code = _RSS_CHILD.format(here=str(Path(__file__).parent), variant=variant, width=width)
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600, check=True
        )
    except (subprocess.SubprocessError, OSError) as error:
        print(f"RSS cross-check failed for {variant}: {error}", file=sys.stderr)
        return None
    return int(out.stdout.strip().splitlines()[-1])


# -------------------------------------------------------------------------- timing


def latencies(models: dict[str, nn.Module], x: Tensor, runs: int, warmup: int = 10) -> dict[str, list[float]]:
    """Per-call wall time, rounds interleaved so that drift in the machine's load hits
    every variant alike."""
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.no_grad():
        for _ in range(warmup):
            for model in models.values():
                model(x)
        for _ in range(runs):
            for name, model in models.items():
                start = time.perf_counter()
                model(x)
                times[name].append(time.perf_counter() - start)
    return times


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


# ------------------------------------------------------------------ per-layer table


def per_layer(model: nn.Module, x: Tensor) -> list[tuple[str, int, int, int]]:
    """For each entry of ``features`` (then the head): the bytes of its input, of its
    output, and the measured peak of its call (input held by the caller, excluded)."""
    rows = []
    with torch.no_grad():
        for index, layer in enumerate(model.features):
            layer(x)
            peak = measure_peak_memory(lambda layer=layer, x=x: layer(x)).peak_bytes
            y = layer(x)
            rows.append((f"features.{index} {_describe(layer)}", nbytes(x), nbytes(y), peak))
            x = y
        peak = measure_peak_memory(lambda: model.head(x)).peak_bytes
        rows.append(("head", nbytes(x), nbytes(model.head(x)), peak))
    return rows


def auto_chunks(model: nn.Module, x: Tensor) -> list[object]:
    """The k each entry of ``features`` (then the head) uses under ``chunks="auto"``."""
    ks: list[object] = []
    with torch.no_grad():
        model(x)  # sets the budgets for this input size
        for layer in model.features:
            ks.append(layer.chunk_count(x) if isinstance(layer, ChunkedInvertedResidual) else "")
            x = layer(x)
    return [*ks, ""]


def _describe(layer: nn.Module) -> str:
    hidden = getattr(layer, "hidden_channels", None)
    if hidden is not None:
        return f"{layer.in_channels}->{hidden}->{layer.out_channels} s{layer.stride}"
    return type(layer).__name__


# --------------------------------------------------------------------------- layout


def layout_probe() -> list[tuple[str, int, int]]:
    """A depthwise 3x3 conv on one 4-channel 112x112 chunk, NCHW against NHWC: what
    oneDNN allocates beside the output (why the executor's chunks are channels-last)."""
    weight = torch.randn(4, 1, 3, 3)
    rows = []
    for name, fmt in (("NCHW", torch.contiguous_format), ("NHWC (channels-last)", torch.channels_last)):
        x = torch.randn(1, 4, 112, 112).contiguous(memory_format=fmt)
        with torch.no_grad():
            y = nn.functional.conv2d(x, weight, None, 1, 1, 1, 4)
            trace = measure_peak_memory(lambda x=x: nn.functional.conv2d(x, weight, None, 1, 1, 1, 4))
        rows.append((name, nbytes(y), trace.peak_bytes))
    return rows


# ----------------------------------------------------------------------------- main


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("", platform.machine()):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    isa = ", ".join(
        f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile") if f in flags
    )
    onednn = torch.backends.mkldnn.is_available()
    return (
        f"{cpu} ({os.cpu_count()} logical CPUs; {isa or 'ISA flags unknown'}), {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, PyTorch {torch.__version__} "
        f"(oneDNN {'on' if onednn else 'off'}), 1 intra-op thread"
    )


def table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50, help="timed runs per variant (default 50)")
    parser.add_argument("--chunks", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument(
        "--chunk-kib", type=int, nargs="*", default=[256, 512], help="chunk_bytes variants, in KiB"
    )
    parser.add_argument("--check-chunks", type=int, default=8, help="k used for the issue's check")
    parser.add_argument("--no-rss", action="store_true", help="skip the RSS cross-check")
    parser.add_argument("--output", type=Path, default=RESULTS / "memory_efficient.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    command = shlex.join(["python", "benchmarks/memory_efficient.py", *sys.argv[1:]])
    load_before = os.getloadavg()
    started = time.time()

    x = torch.randn(1, 3, 224, 224)
    plain = build("plain")
    analyser = {
        "block": activation_memory(plain, (3, 224, 224), "block", bytes_per_element=4),
        "trick": activation_memory(
            plain, (3, 224, 224), "block", bytes_per_element=4, first_layer_trick=True
        ),
        "layer": activation_memory(plain, (3, 224, 224), "layer", bytes_per_element=4),
    }
    bound = analyser["block"].peak_bytes
    chunks = sorted(set(args.chunks) | {args.check_chunks})
    variants = ["plain", "plain-cl"] + [f"chunked-{k}" for k in chunks]
    variants += [f"bytes-{kib * 1024}" for kib in args.chunk_kib]
    variants += ["auto", f"noinplace-{args.check_chunks}"]
    try:
        import lightnets.deploy.fold  # noqa: F401

        variants.append(f"folded-{args.check_chunks}")
    except ImportError:
        pass
    models = {v: (plain if v == "plain" else build(v)) for v in variants}

    with torch.no_grad():
        reference = plain(x)
        diffs = {v: (m(x) - reference).abs().max().item() for v, m in models.items()}
    peaks = {v: profiler_peak(m, x) for v, m in models.items()}
    rss = {v: (None if args.no_rss else rss_peak(v)) for v in variants}
    print("memory measured; timing ...", file=sys.stderr)
    times = latencies(models, x, args.runs)
    base_ms = statistics.median(times["plain"]) * 1e3

    rows = []
    for v in variants:
        median = statistics.median(times[v]) * 1e3
        rows.append(
            [
                label(v),
                f"{peaks[v] / MB:.3f}",
                "n/a" if rss[v] is None else f"{rss[v] / MB:.2f}",
                f"{peaks[v] / peaks['plain']:.3f}",
                f"{peaks[v] / bound:.3f}",
                f"{diffs[v]:.1e}",
                f"{median:.1f}",
                f"{p90(times[v]) * 1e3:.1f}",
                f"{median / base_ms:.2f}x",
            ]
        )
    k = args.check_chunks
    checked = peaks[f"chunked-{k}"]
    ok_third = checked <= peaks["plain"] / 3
    ok_bound = bound <= checked <= 1.25 * bound
    auto_peak = peaks["auto"]
    auto_ok = auto_peak <= peaks["plain"] / 3 and bound <= auto_peak <= 1.25 * bound

    layers_plain = per_layer(plain, x)
    layers_chunked = per_layer(models[f"chunked-{k}"], x)
    layers_auto = per_layer(models["auto"], x)
    auto_k = auto_chunks(models["auto"], x)
    layer_rows = []
    for (name, inp, out, peak), (_, c_inp, _, c_peak), (_, a_inp, _, a_peak), ak in zip(
        layers_plain, layers_chunked, layers_auto, auto_k, strict=True
    ):
        layer_rows.append(
            [
                name,
                f"{(inp + out) / MB:.3f}",
                f"{(inp + peak) / MB:.3f}",
                f"{(c_inp + c_peak) / MB:.3f}",
                f"{(a_inp + a_peak) / MB:.3f}",
                ak,
            ]
        )

    widths = []
    for width in (0.35, 0.5, 0.75, 1.0, 1.4):
        m = build("plain", width)
        b = activation_memory(m, (3, 224, 224), "block", bytes_per_element=4).peak_bytes
        p = profiler_peak(m, x)
        c = profiler_peak(memory_efficient(m, chunks=k), x)
        a = profiler_peak(memory_efficient(m, chunks="auto"), x)
        widths.append(
            [width, f"{p / MB:.3f}", f"{b / MB:.3f}"]
            + [f"{v / MB:.3f} ({v / p:.3f} / {v / b:.3f})" for v in (c, a)]
        )

    probe = layout_probe()
    load_after = os.getloadavg()
    elapsed = time.time() - started

    image = nbytes(x)
    rss_diffs = [rss[v] - peaks[v] for v in variants if rss[v] is not None]
    rss_over = max([0, *rss_diffs])
    rss_under = max([0, *(-d for d in rss_diffs)])
    header = [
        "forward",
        "measured peak (MB, profiler)",
        "RSS cross-check (MB)",
        "/ plain",
        "/ block bound",
        "max abs diff of logits",
        "median ms",
        "p90 ms",
        "latency / plain",
    ]
    verdict = (
        f"**The issue's check** (k = {k}): measured peak {checked / MB:.3f} MB against the plain "
        f"forward's {peaks['plain'] / MB:.3f} MB, ratio {checked / peaks['plain']:.3f} (needs <= 1/3: "
        f'**{"yes" if ok_third else "NO"}**); against the analyser\'s "block as one operation" bound '
        f"of {bound / MB:.3f} MB, ratio {checked / bound:.3f} (needs within 25%: "
        f'**{"yes" if ok_bound else "NO"}**). With `chunks="auto"`: {auto_peak / MB:.3f} MB, '
        f"ratios {auto_peak / peaks['plain']:.3f} and {auto_peak / bound:.3f} "
        f"(**{'yes' if auto_ok else 'NO'}**), at {statistics.median(times['auto']) / statistics.median(times['plain']):.2f}x "
        "the plain forward's latency."
    )
    bounds = (
        "Analyser (`activation_memory(model, (3, 224, 224), execution=..., bytes_per_element=4)`): "
        f"block as one operation **{bound / MB:.3f} MB** (at `{analyser['block'].peak_at}`: the "
        "stem's 32x112x112 output in, 16x112x112 out); with the first-layer trick "
        f"{analyser['trick'].peak_bytes / MB:.3f} MB (at `{analyser['trick'].peak_at}`); layer by "
        f"layer {analyser['layer'].peak_bytes / MB:.3f} MB (at `{analyser['layer'].peak_at}`)."
    )
    sections = [
        "# Memory-efficient inference: MobileNetV2 1.0-224, batch 1",
        f"Generated by `{command}` in {elapsed:.0f} s on {machine()}. Load average "
        f"{load_before[0]:.1f} before and {load_after[0]:.1f} after: the machine was shared, so "
        "latencies are noisy; memory figures are not (they repeat to the byte).",
        verdict,
        "## Peak activation memory and latency",
        bounds,
        table(header, rows),
        f"Latency: median and p90 of {args.runs} interleaved runs per variant after 10 warm-up "
        "rounds, one thread, random weights with non-trivial BatchNorm statistics (logits "
        "compared with the plain forward's). Chunking costs time through per-chunk operator "
        "overhead (each chunk is a handful of small matrix products and a small depthwise "
        'convolution): a large fixed k pays it in every block; `chunk_bytes` and `chunks="auto"` split '
        "the large early blocks finely and the late ones little or not at all.",
        "## Where the peak is",
        "Live bytes while each layer runs: its input (held by the caller) plus the measured peak "
        "of its call. The analyser's block bound for a layer is its input plus its output. The "
        "chunked stem holds a channels-last copy of the image while it runs (the network's "
        f"input, {image / MB:.3f} MB, is the image itself).",
        table(
            [
                "layer",
                "input + output (MB)",
                "plain (MB)",
                f"chunked k = {k} (MB)",
                'chunks="auto" (MB)',
                '"auto" k',
            ],
            layer_rows,
        ),
        "## Other widths (memory only)",
        table(
            [
                "width",
                "plain (MB)",
                "block bound (MB)",
                f"chunked k = {k} (MB; / plain / bound)",
                'chunks="auto" (MB; / plain / bound)',
            ],
            widths,
        ),
        "Widths 0.35 and 0.5 share their first layers (16-channel stem, 8-channel block 1 after "
        "rounding to multiples of 8), where both peaks are.",
        "## How it is measured, and what is compared",
        "\n".join(
            [
                "- **Measured, not computed.** `measure_peak_memory(fn)` "
                "(`lightnets.deploy.memory_efficient`) runs `fn` under PyTorch's profiler with "
                "memory recording. c10's CPU allocator then reports every allocation and free with "
                "its size and time stamp; the maximum of their running sum is the peak the call "
                "added. That includes the scratch tensors kernels make for themselves (oneDNN's "
                "blocked-layout copies), which an operator-level tracker (a `TorchDispatchMode` "
                "over op outputs) would miss. Memory that exists before the call (input, weights) "
                "is outside the sum, for the plain and the chunked forward alike; the output "
                "(4 kB of logits) is inside.",
                "- **Cross-check.** The RSS column is the growth of the resident set during one "
                "forward in a fresh process, with glibc mmapping every block of 64 KiB or more so "
                "that a free returns memory at once. It also sees allocations made behind "
                "PyTorch's back (MKL's packing buffers, oneDNN's own). "
                + (
                    "It is never above the profiler's figure"
                    if rss_over < 0.005 * MB
                    else f"It is at most {rss_over / MB:.2f} MB above the profiler's figure"
                )
                + " here, so nothing large escapes the profiler's view; it falls below it by up to "
                f"{rss_under / MB:.2f} MB because Linux's per-CPU RSS counters are approximate and "
                "blocks under 64 KiB come from heap pages that are already resident.",
                "- **Which bound, and the input.** The analyser's block-mode peak is the input and "
                "output of the largest block (block 1); the network input is dead by then in its "
                "model, so excluding the image from the measurement is like for like. In a real "
                f"process the caller holds the image ({image / MB:.3f} MB) through the whole "
                "forward: added to both measured peaks, the process's view is "
                f"{(peaks['plain'] + image) / MB:.3f} MB plain and {(checked + image) / MB:.3f} MB "
                f"chunked (k = {k}), ratio {(checked + image) / (peaks['plain'] + image):.3f}. "
                "The executor computes the stem's output whole, "
                "as the block bound assumes. The first-layer trick (computing the stem piecewise "
                "and feeding it straight into block 1) would lower the bound to "
                f"{analyser['trick'].peak_bytes / MB:.3f} MB; the executor does not implement it, "
                "so that figure is not its target.",
                "- **In place.** The bound counts BatchNorm and activations as in place. The "
                "executor folds each chunk's BatchNorm into that chunk's slice of the weights "
                "(exact to float rounding), applies activations in place, and runs the stem and "
                "the last 1x1 layer with BatchNorm and activation in place on their output. The "
                "`inplace_convs=False` row shows what a plain stem costs (its output, BatchNorm's "
                "copy of it, and oneDNN's scratch).",
                "- **Layout.** Chunks and block outputs are channels-last. Given NCHW tensors, "
                "oneDNN makes blocked copies of a convolution's input and output padded to 16 "
                "channels; for a chunk of a few channels that is several times the chunk:",
            ]
        ),
        table(
            ["depthwise 3x3 on a 4x112x112 chunk", "output (bytes)", "measured peak (bytes)"],
            [list(r) for r in probe],
        ),
    ]
    text = "\n\n".join(sections) + "\n"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)
    print(f"written {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
