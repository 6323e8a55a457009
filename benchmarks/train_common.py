"""What every training benchmark records: the machine, the versions, the command, the load."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from pathlib import Path

import torch
from _paths import use_shared_weights

from lightnets.deploy.bench_report import cpu_name


def load_average() -> str:
    try:
        return ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def machine_header(title: str, command: str | None = None) -> str:
    """A Markdown preamble: what was measured, where, with what, and how to rerun it."""
    if command is None:
        env = " ".join(
            f"{k}={os.environ[k]}" for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS") if k in os.environ
        )
        argv = " ".join(shlex.quote(a) for a in [".venv/bin/python", *sys.argv])
        niceness = os.nice(0)
        command = f"{env + ' ' if env else ''}{f'nice -n {niceness} ' if niceness else ''}{argv}"
    return (
        f"# {title}\n\n"
        f"- Machine: {cpu_name()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.machine()}\n"
        f"- Python {platform.python_version()}, PyTorch {torch.__version__}, "
        f"{torch.get_num_threads()} PyTorch threads\n"
        f"- Load average (1, 5, 15 min) when the script ended: {load_average()} "
        "(the machine is shared: other jobs ran on the same 2 cores)\n"
        f"- Command: `{command}`\n"
    )


def train_command(options: list[str], out: Path, quiet: bool = False) -> dict:
    """Run ``python -m lightnets.train OPTIONS --out OUT --no-progress`` as a subprocess (a
    fresh folder: its time covers the whole command) and return its summary, with the
    seconds it took, the load before and after, and the command as a repository-relative
    string."""
    import json
    import shutil
    import subprocess
    import time

    from _paths import REPO

    if out.exists():
        shutil.rmtree(out)
    command = [str(REPO / ".venv" / "bin" / "python"), "-m", "lightnets.train", *options, "--out", str(out),
               "--no-progress"]  # fmt: skip
    load_before = load_average()
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL if quiet else None)
    took = time.perf_counter() - started
    summary = json.loads((out / "summary.json").read_text())
    return summary | {
        "command_s": took,
        "load_before": load_before,
        "load_after": load_average(),
        "command": " ".join(shlex.quote(a) for a in command).replace(str(REPO) + "/", ""),
    }


def run_or_reuse(config, reuse: bool = False):
    """``lightnets.train.train(config)``, or with ``reuse`` the result of a finished run of
    the same configuration already in ``config.out`` (so a benchmark can add a row without
    training the others again)."""
    import json
    import shutil

    from lightnets.train import TrainConfig, TrainResult, train

    out = Path(config.out)
    execution = {"out", "workers", "threads", "progress", "log_every", "checkpoint_every", "device"}

    def comparable(c: TrainConfig) -> dict:
        return {k: v for k, v in c.resolved().to_dict().items() if k not in execution}

    if reuse and (out / "summary.json").is_file() and (out / "config.json").is_file():
        if comparable(TrainConfig.load(out)) == comparable(config):
            summary = json.loads((out / "summary.json").read_text())
            last = summary["last_epoch"]
            print(f"reusing the finished run in {out}", flush=True)
            return TrainResult(
                out,
                summary["epochs"],
                summary["steps"],
                last["train_loss"],
                last["train_accuracy"],
                last["val_top1"],
                last["val_top1_ema"],
                summary["wall_time"],
                out / "model.safetensors",
            )
    shutil.rmtree(out, ignore_errors=True)
    return train(config)


def add_run_options(parser, runs: str) -> None:
    """The options every training benchmark shares: loading, threads, where runs go."""
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reuse", action="store_true", help="reuse finished runs of the same configuration")
    parser.add_argument("--runs", default=runs)


def start(args) -> None:
    """Before training: the shared weights as default weights root, the thread count."""
    use_shared_weights()
    torch.set_num_threads(args.threads)


def backbone_run_header(title: str, load_start: str, backbone_weights: str, kwargs: dict) -> list[str]:
    """The preamble of a segmentation or detection benchmark's results: the machine, the
    load when it started and ended, the ImageNet backbone it trained from."""
    import json

    return [
        machine_header(title, None).rstrip(),
        f"- Load average when the script started: {load_start}",
        f"- Backbone: {backbone_weights} (ImageNet), {json.dumps(kwargs) if kwargs else 'default options'}",
    ]
