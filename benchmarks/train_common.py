"""What every training benchmark records: the machine, the versions, the command, the load."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
IMAGENETTE = SHARED / "data" / "imagenette2-224-subset"
CIFAR_JPEG = SHARED / "data" / "cifar10-jpg" / "CIFAR-10-images.tar.gz"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


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
        command = f"{env + ' ' if env else ''}nice -n 10 {argv}"
    return (
        f"# {title}\n\n"
        f"- Machine: {cpu_name()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.machine()}\n"
        f"- Python {platform.python_version()}, PyTorch {torch.__version__}, "
        f"{torch.get_num_threads()} PyTorch threads\n"
        f"- Load average (1, 5, 15 min) when the script ended: {load_average()} "
        "(the machine is shared: other jobs ran on the same 2 cores)\n"
        f"- Command: `{command}`\n"
    )
