"""SSD / SSDLite detectors on Penn-Fudan (or coco128): train under a time budget, then measure.

    .venv/bin/python benchmarks/detect_pennfudan.py --model ssdlite_mobilenet_v2 --minutes 20
    .venv/bin/python benchmarks/detect_pennfudan.py --model ssdlite_mobilenet_v1 --minutes 20
    .venv/bin/python benchmarks/detect_pennfudan.py --model ssdlite_mobilenet_v2 --data coco128 --minutes 10
    .venv/bin/python benchmarks/detect_pennfudan.py --model ssdlite_mobilenet_v2 --measure-only

Trains with ``lightnets.tasks.dettrain`` in the task loop (the recipe of ``lightnets
train --task detection``: AdamW, warm-up and poly decay fitted to the budget of the
whole run, bfloat16 where the CPU has it, both cores) from the imported ImageNet weights
of the backbone, at 320x320. Penn-Fudan is scored on its fixed validation split (28
photos); coco128 on its own photos, as is customary for that set (a check of the
pipeline, not of accuracy). Then, for the trained detector: COCO-style mAP, AP50, AP75
(pycocotools), its cost at 320 by part, latency of one image with one thread under
PyTorch eager, PyTorch with BatchNorm folded and ONNX Runtime (the exported file), with
the peak memory of each (fresh processes, ``lightnets.deploy.bench``), and a picture of
its detections on validation photos. Writes ``results/detect_<data>_<model>.md`` and ``.json`` beside the picture.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from _output import benchmark_parser, side_by_side
from _paths import RESULTS, SHARED, use_shared_weights
from train_common import backbone_run_header, load_average

import lightnets
from lightnets.deploy.bench import benchmark, model_targets
from lightnets.files import write_json, write_text
from lightnets.tasks.costs import cost_by_part
from lightnets.tasks.detdata import open_detection_data
from lightnets.tasks.detect import DRAW_THRESHOLD, detect_images
from lightnets.tasks.dettrain import DetectionTask
from lightnets.tasks.task_training import TaskRun, train_task

DATA = {"pennfudan": SHARED / "data" / "pennfudan", "coco128": SHARED / "data" / "coco128"}
BACKBONE_WEIGHTS = {
    "ssdlite_mobilenet_v2": ("mobilenet_v2_100_224.tflite_uint8", {}),
    "ssdlite_mobilenet_v1": ("mobilenet_v1_075_192.tflite_uint8", {"width": 0.75}),
    "ssd300_mobilenet_v1": ("mobilenet_v1_075_192.tflite_uint8", {"width": 0.75}),
    "ssdlite_squeezenet1_1": ("squeezenet1_1.gluon_npy", {}),
}
PICTURE_PHOTOS = 3


def picture(model_name: str, weights: str, data_name: str, out: Path, work: Path) -> Path:
    """Detections (score >= DRAW_THRESHOLD) on the first validation photos, side by side."""
    from PIL import Image

    model = lightnets.create_model(model_name, weights=weights).eval()
    data = open_detection_data(DATA[data_name], "val")
    paths = [item.image for item in data.items[:PICTURE_PHOTOS]]
    records = detect_images(model, paths, work, threshold=DRAW_THRESHOLD)
    side_by_side([Image.open(r["drawing"]).convert("RGB") for r in records], height=360).save(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--model", default="ssdlite_mobilenet_v2", choices=sorted(BACKBONE_WEIGHTS))
    parser.add_argument("--data", default="pennfudan", choices=sorted(DATA))
    parser.add_argument("--minutes", type=float, default=20.0, help="the whole run's budget")
    parser.add_argument("--resolution", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--zoom-out", type=float, default=None, help="default: the task's")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--run", default=None, help="run folder (default runs/detect_<data>_<model>)")
    parser.add_argument("--measure-only", action="store_true", help="measure the run folder's trained model")
    parser.add_argument("--calls", type=int, default=50, help="timed calls per runtime")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    use_shared_weights()
    name = f"detect_{args.data}_{args.model.removeprefix('ssdlite_').removeprefix('ssd300_')}"
    if args.model.startswith("ssd300_"):
        name += "_ssd300"
    run_dir = Path(args.run or f"runs/{name}")
    backbone_weights, kwargs = BACKBONE_WEIGHTS[args.model]
    load_start = load_average()
    if not args.measure_only:
        options = {} if args.zoom_out is None else {"zoom_out": args.zoom_out}
        if args.data == "coco128":
            options["val_data"] = str(DATA["coco128"])  # trained and scored on itself
        run = TaskRun(
            model=args.model, data=str(DATA[args.data]), out=str(run_dir), resolution=args.resolution,
            batch_size=args.batch_size, minutes=args.minutes, lr=args.lr, backbone_weights=backbone_weights,
            threads=args.threads, model_kwargs=kwargs, options=options,
        )  # fmt: skip
        train_task(run, DetectionTask())
    summary = json.loads((run_dir / "summary.json").read_text())
    weights = summary["weights"]
    size = summary["run"]["resolution"]
    model = lightnets.create_model(args.model, weights=weights).eval()
    report = lightnets.profile(model, (3, size, size))
    costs = {"params": report.params, "madds": report.madds,
             "by_part": {p.part: {"params": p.params, "madds": p.madds} for p in cost_by_part(report, model)}}  # fmt: skip
    targets = model_targets(args.model, weights=weights, backends=("eager", "folded", "ort_fp32"), input_size=size,
                            workdir=run_dir / "onnx", label=args.model)  # fmt: skip
    timing = [m.__dict__ for m in benchmark(targets, threads=(1,), runs=args.calls, batch=4, progress=False)]
    image = (
        picture(args.model, weights, args.data, RESULTS / f"{name}.png", run_dir / "drawn")
        if args.data == "pennfudan"
        else None
    )
    val = summary["val"]  # the recommended weights'
    result = {"model": args.model, "data": args.data, "backbone_weights": backbone_weights, "summary": summary,
              "timing": timing, "costs": costs, "load_at_start": load_start, "load_at_end": load_average(),
              "picture": image.name if image else None}  # fmt: skip
    write_json(RESULTS / f"{name}.json", result)
    scored_on = (
        f"the fixed validation split ({summary['val_images']} photos, {val['objects']} people)"
        if args.data == "pennfudan"
        else f"its own {summary['val_images']} photos ({val['objects']} objects): a pipeline check, not accuracy"
    )
    seconds = summary["seconds"]
    lines = [
        *backbone_run_header(f"{args.model} on {args.data}", load_start, backbone_weights, kwargs),
        "",
        "## Training",
        "",
        f"{summary['train_images']} training photos, {summary['steps']} steps of batch {summary['run']['batch_size']} "
        f"({summary['epochs']} epochs) at {size}x{size}, {summary['machine']['threads']} PyTorch threads, "
        f"bfloat16: {summary['machine']['bf16']}; {seconds['training'] / 60:.1f} min of training, "
        f"{seconds['evaluation']:.0f} s of evaluation, {seconds['total'] / 60:.1f} min in all "
        f"(budget {summary['run']['minutes']:g} min for the whole run). Plan: {json.dumps(summary['plan'])}; "
        f"settings: lr {summary['run']['lr']:g}, options {json.dumps(summary['run']['options'])}.",
        "",
        f"## Scores on {scored_on}",
        "",
        "| weights | mAP@[.5:.95] | AP50 | AP75 |",
        "| --- | --- | --- | --- |",
        *[
            f"| {label}{' (recommended: model.safetensors)' if key == summary['recommended'] else ''} | "
            f"{scores['mAP']:.4f} | {scores['AP50']:.4f} | {scores['AP75']:.4f} |"
            for label, key, scores in (
                ("the last weights", "last", summary["val_last"]),
                ("their EMA", "ema", summary["val_ema"]),
            )
        ],
        "",
        "## Cost at the training side, latency and memory (one image, one thread, fresh processes)",
        "",
        f"{costs['params'] / 1e6:.3f} M parameters, {costs['madds'] / 1e9:.3f} B multiply-adds at {size}x{size}; "
        + ", ".join(f"{part} {c['madds'] / 1e9:.3f} B" for part, c in costs["by_part"].items())
        + " (up to the raw box and class outputs: no NMS).",
        "",
        "| runtime | median ms | p90 ms | images/s at batch 4 | peak memory above the process's start (MB) |",
        "| --- | --- | --- | --- | --- |",
        *[
            f"| {t['backend']} | {t['latency_ms']:.1f} | {t['latency_p90_ms']:.1f} | {t['throughput']:.1f} | "
            f"{t['peak_memory_mb'] if t['peak_memory_mb'] is None else round(t['peak_memory_mb'])} |"
            for t in timing
        ],
        "",
    ]
    if image:
        lines += [f"![detections on validation photos]({image.name}) (score >= {DRAW_THRESHOLD})", ""]
    write_text(RESULTS / f"{name}.md", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
