"""DeepLabv3 on Penn-Fudan (person / background): train under a time budget, then measure.

    .venv/bin/python benchmarks/segment_pennfudan.py --model deeplabv3_mobilenet_v2 --minutes 20
    .venv/bin/python benchmarks/segment_pennfudan.py --model deeplabv3_mobilenet_v2 --measure-only

Trains from the imported ImageNet weights of the backbone (``lightnets.tasks.segtrain``
in the task loop: AdamW, warm-up and poly decay fitted to the time budget, one PyTorch thread), evaluates person IoU and
mIoU on the fixed validation split (28 photos, scored at their full size), then times
the trained model at the training resolution and at 512x512 (median of single-image
forward passes, one thread) with its peak resident memory measured in a fresh process,
draws a segmented validation photo, and writes ``results/segment_pennfudan_<model>.md``
and ``.json`` beside the picture. ``--measure-only`` measures an earlier run's folder.
"""

from __future__ import annotations

import json
import multiprocessing
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from _output import benchmark_parser, side_by_side
from _paths import RESULTS, SHARED
from train_common import backbone_run_header, load_average

import lightnets
from lightnets.files import write_json, write_text
from lightnets.tasks.costs import cost_by_part
from lightnets.tasks.segdata import pennfudan
from lightnets.tasks.segment import overlay, predict_classes
from lightnets.tasks.segtrain import SegmentationTask
from lightnets.tasks.task_model import normalise_of
from lightnets.tasks.task_training import TaskRun, train_task

DATA = SHARED / "data" / "pennfudan"
BACKBONE_WEIGHTS = {
    "deeplabv3_mobilenet_v2": ("mobilenet_v2_100_224.tflite_uint8", {}),
    "deeplabv3_mobilenet_v1": ("mobilenet_v1_075_192.tflite_uint8", {"width": 0.75, "aspp": False}),
    "deeplabv3_squeezenet1_1": ("squeezenet1_1.gluon_npy", {}),
}


def measure_in_fresh_process(model_name: str, weights: str, size: int, calls: int) -> dict:
    """Median latency (ms) of one image and the process's peak RSS (MB), one thread."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_measure, args=(model_name, weights, size, calls, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def _measure(model_name: str, weights: str, size: int, calls: int, queue) -> None:  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    model = lightnets.create_model(model_name, weights=weights).eval()
    x = torch.randn(1, 3, size, size)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = []
    with torch.no_grad():
        model(x)  # warm-up: primitives for this shape
        for _ in range(calls):
            start = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - start) * 1000)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put({"size": size, "median_ms": statistics.median(times), "min_ms": min(times),
               "calls": calls, "peak_rss_mb": peak, "rss_before_mb": baseline})  # fmt: skip


def picture(model_name: str, weights: str, size: int, out: Path, index: int) -> Path:
    """A validation photo's labels (left) and the model's prediction (right)."""
    model = lightnets.create_model(model_name, weights=weights).eval()
    val = pennfudan(DATA, "val")
    photo, truth = val.arrays(index)
    predicted = predict_classes(model, photo, size, normalise_of(model))
    side_by_side([overlay(photo, truth), overlay(photo, predicted)]).save(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--model", default="deeplabv3_mobilenet_v2", choices=sorted(BACKBONE_WEIGHTS))
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--resolution", type=int, default=224, help="training crop side")
    parser.add_argument("--eval-size", type=int, default=384, help="shorter side of the photos at evaluation")
    parser.add_argument(
        "--scale",
        type=float,
        nargs=2,
        default=(0.6, 1.2),
        help="training photos' shorter side, times --eval-size",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--run", default=None, help="run folder (default runs/segment_<model>)")
    parser.add_argument("--measure-only", action="store_true", help="measure the run folder's trained model")
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--picture-index", type=int, default=0, help="which validation photo to draw")
    args = parser.parse_args(argv)
    from _paths import use_shared_weights

    use_shared_weights()
    short = args.model.removeprefix("deeplabv3_")
    run_dir = Path(args.run or f"runs/segment_{short}")
    backbone_weights, kwargs = BACKBONE_WEIGHTS[args.model]
    load_start = load_average()
    if not args.measure_only:
        run = TaskRun(
            model=args.model, data=str(DATA), out=str(run_dir), resolution=args.resolution,
            batch_size=args.batch_size, minutes=args.minutes, lr=args.lr,
            backbone_weights=backbone_weights, threads=1, model_kwargs=kwargs,
            options={"eval_size": args.eval_size, "scale": tuple(args.scale)},
        )  # fmt: skip
        train_task(run, SegmentationTask())
    summary = json.loads((run_dir / "summary.json").read_text())
    weights = summary["weights"]
    size = summary["run"]["resolution"]
    eval_size = summary["run"]["options"].get("eval_size") or size
    sizes = sorted({size, eval_size, 512})
    timing = [measure_in_fresh_process(args.model, weights, s, args.calls) for s in sizes]
    model = lightnets.create_model(args.model, weights=weights)
    costs = {}
    for s in sizes:
        report = lightnets.profile(model, (3, s, s))
        costs[s] = {"params": report.params, "madds": report.madds,
                    "by_part": {p.part: p.madds for p in cost_by_part(report, model)}}  # fmt: skip
    image = picture(
        args.model, weights, eval_size, RESULTS / f"segment_pennfudan_{short}.png", args.picture_index
    )
    val = summary["val"]
    result = {"model": args.model, "backbone_weights": backbone_weights, "summary": summary,
              "timing": timing, "costs": costs, "load_at_start": load_start, "load_at_end": load_average(),
              "picture": image.name}  # fmt: skip
    write_json(RESULTS / f"segment_pennfudan_{short}.json", result)
    lines = [
        *backbone_run_header(
            f"DeepLabv3 ({args.model}) on Penn-Fudan, person / background",
            load_start,
            backbone_weights,
            kwargs,
        ),
        "",
        "## Training",
        "",
        f"{summary['train_images']} training photos, {summary['steps']} steps of batch "
        f"{summary['run']['batch_size']} ({summary['epochs']} epochs) at {size}x{size} crops in "
        f"{summary['seconds']['training'] / 60:.1f} minutes (budget {summary['run']['minutes']} min for the whole "
        f"run), one PyTorch thread, bfloat16: {summary['machine']['bf16']}; the photos' shorter side scaled to "
        f"{eval_size} x U{tuple(summary['run']['options']['scale'])} before cropping.",
        "",
        f"## Validation (28 photos, fixed split, scored at full size, shorter side {eval_size} at the input)",
        "",
        "| class | IoU |",
        "| --- | --- |",
        *[f"| {name} | {value:.4f} |" for name, value in val["iou"].items()],
        f"| **mIoU** | {val['miou']:.4f} |",
        f"| pixel accuracy | {val['pixel_accuracy']:.4f} |",
        "",
        "## Latency and peak memory (one image, one thread, fresh process)",
        "",
        "| input | MAdds (B) | backbone / head MAdds (B) | median ms | RSS after loading (MB) | peak RSS (MB) |",
        "| --- | --- | --- | --- | --- | --- |",
        *[
            f"| {t['size']}x{t['size']} | {costs[t['size']]['madds'] / 1e9:.2f} | "
            f"{costs[t['size']]['by_part']['backbone'] / 1e9:.2f} / {costs[t['size']]['by_part']['head'] / 1e9:.2f} | "
            f"{t['median_ms']:.0f} | {t['rss_before_mb']:.0f} | {t['peak_rss_mb']:.0f} |"
            for t in timing
        ],
        "",
        f"![a segmented validation photo]({image.name}) (left: the labels, right: the prediction)",
        "",
    ]
    write_text(RESULTS / f"segment_pennfudan_{short}.md", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
