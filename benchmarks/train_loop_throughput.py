"""Training throughput of the whole loop, data included: the old defaults, the new ones,
and a plain PyTorch float32 loop, in one run with their steps alternating.

    nice -n 10 .venv/bin/python benchmarks/train_loop_throughput.py [--rounds 6] [--steps 2]

MobileNetV2 1.0 on the shared Imagenette subset's train/ at 128 px, batch 64, 2 threads,
no loader workers (the default). Each arm takes its batches from its own data path:

- **old default**: ``lightnets train`` as it was: NCHW, float32, the optimiser's
  per-parameter loop, every JPEG decoded and augmented every step;
- **new default**: ``lightnets train`` as it is: channels-last, bfloat16 autocast where
  the CPU has native bfloat16 (float32 here otherwise), fused SGD, images decoded once
  into the memory-mapped uint8 cache and augmented from it;
- **plain PyTorch**: torchvision's MobileNetV2, NCHW float32, ``torch.optim.SGD``, on
  batches decoded and augmented from the JPEGs every step (what a hand-written loop over
  an image folder does).

The arms are measured in alternation, ``--rounds`` times ``--steps`` steps each (the
order flips every round), so the load of other jobs falls on all alike; the median
images/s and the paired ratios (within a round) are reported.
Writes results/train_loop_throughput_<precision>.md and .csv, the precision the new
default chose on this CPU (float32, or bfloat16 where the CPU has it natively), so the
measurements of both kinds of machine stand side by side; another resolution or thread
count than 128 px and 2 threads adds ``_<resolution>px_<threads>t`` to the name.
"""

from __future__ import annotations

import csv
import shutil
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _output import benchmark_parser  # noqa: E402
from _paths import IMAGENETTE, RESULTS  # noqa: E402
from train_common import machine_header  # noqa: E402

from lightnets.files import atomic_write, write_text  # noqa: E402
from lightnets.train import TrainConfig, distributed  # noqa: E402
from lightnets.train.data import AugmentedImages, loader  # noqa: E402
from lightnets.train.recipes import parameter_groups  # noqa: E402
from lightnets.train.trainer import Trainer  # noqa: E402
from peers import import_torchvision  # noqa: E402


def batches(data_loader):
    while True:
        yield from data_loader


def trainer_arm(name: str, runs: Path, args, **options):
    out = runs / name
    shutil.rmtree(out, ignore_errors=True)
    config = TrainConfig(
        model="mobilenet_v2", data=str(IMAGENETTE), out=str(out), resolution=args.resolution,
        batch_size=args.batch, progress=False, log_every=0, **options,
    )  # fmt: skip
    trainer = Trainer(config, distributed.setup("cpu"))
    if name == "old":  # the optimiser as it was built: no foreach, no fused kernel
        groups = parameter_groups(trainer.model, config.resolved().weight_decay or 0.0)
        trainer.optimizer = torch.optim.SGD(groups, lr=trainer.config.lr, momentum=0.9, nesterov=True)
    trainer._loaders()
    stream = batches(trainer.train_loader)

    def step() -> None:
        trainer.train_step(next(stream))

    return trainer, step


def plain_arm(trainer: Trainer, args):
    tvm = import_torchvision()
    model = tvm.mobilenet_v2(num_classes=len(trainer.classes)).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.025, momentum=0.9)
    source = trainer.train_source.source if hasattr(trainer.train_source, "source") else trainer.train_source
    stream = batches(loader(AugmentedImages(source, trainer.transform, 0), trainer.sampler, 0))

    def step() -> None:
        batch = next(stream)
        loss = F.cross_entropy(model(batch.images), batch.labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=2, help="steps per arm per round")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", default="/tmp/lightnets_loop_throughput")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs = Path(args.runs)
    old, old_step = trainer_arm("old", runs, args, channels_last=False, amp="off", cache=False)
    new, new_step = trainer_arm("new", runs, args)
    started = time.perf_counter()
    new_step()  # builds the cache (timed separately), then one warm-up step
    cache_s = time.perf_counter() - started
    arms = {"old default": old_step, "new default": new_step, "plain PyTorch fp32": plain_arm(new, args)}
    for step in arms.values():
        step()
    rates: dict[str, list[float]] = {name: [] for name in arms}
    for r in range(args.rounds):
        order = list(arms) if r % 2 == 0 else list(arms)[::-1]
        for name in order:
            start = time.perf_counter()
            for _ in range(args.steps):
                arms[name]()
            rates[name].append(args.batch * args.steps / (time.perf_counter() - start))
        print({k: round(v[-1], 1) for k, v in rates.items()}, flush=True)
    medians = {k: statistics.median(v) for k, v in rates.items()}
    paired = {
        k: statistics.median(a / b for a, b in zip(rates["new default"], rates[k], strict=True))
        for k in ("old default", "plain PyTorch fp32")
    }
    # The default configuration keeps the plain name; others say their resolution and threads.
    config = "" if (args.resolution, args.threads) == (128, 2) else f"_{args.resolution}px_{args.threads}t"
    stem = RESULTS / f"train_loop_throughput_{new.precision.split()[0]}{config}"
    with atomic_write(stem.with_suffix(".csv"), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["arm", "median_img_s", "rounds_img_s"])
        for k, v in rates.items():
            writer.writerow([k, round(medians[k], 2), " ".join(f"{x:.1f}" for x in v)])
    lines = [
        machine_header("Training loop throughput, data included: old default, new default, plain PyTorch"),
        f"- Precision of the new default here: {new.precision} (bfloat16 autocast only on CPUs with "
        "native bfloat16: AVX512_BF16 or AMX)",
        "",
        f"MobileNetV2 1.0, {args.resolution} px, batch {args.batch}, {args.threads} threads, no loader "
        f"workers, {args.rounds} alternating rounds of {args.steps} steps per arm after a warm-up step; "
        f"median images/s. The new default's first step, which builds the image cache of the "
        f"5,500 training images when it is missing (it is reused by later runs), took {cache_s:.0f} s.",
        "",
        "| arm | img/s (median) | new default / arm (paired median) |",
        "|---|---:|---:|",
    ]
    for k in arms:
        ratio = "1" if k == "new default" else f"{paired[k]:.2f}"
        lines.append(f"| {k} | {medians[k]:.1f} | {ratio} |")
    lines += ["", "Rounds (images/s):", ""] + [
        f"- {k}: " + " ".join(f"{x:.1f}" for x in v) for k, v in rates.items()
    ]
    write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    for t in (old, new):
        t.close()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
