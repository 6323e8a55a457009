"""What the machine can do fast: bfloat16 units on this CPU, fused optimiser steps.

bfloat16 autocast only pays on CPUs that compute in bfloat16 natively (AVX512_BF16, or
Intel's AMX tiles): elsewhere PyTorch emulates it, slower than float32. So the flags in
``/proc/cpuinfo`` decide, and a CPU whose flags cannot be read counts as having none.
"""

from __future__ import annotations

import functools
from pathlib import Path

BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The flags of the first CPU listed in ``cpuinfo`` (empty if unreadable)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512_BF16 or AMX-BF16)."""
    flags = cpu_flags()
    return any(flag in flags for flag in BF16_FLAGS)


def auto_amp(device_type: str, dtype: str) -> str:
    """What ``--amp auto`` means here: fp16 on CUDA, bf16 on a CPU with native bfloat16,
    off elsewhere (and always off for float64 runs)."""
    if dtype != "float32":
        return "off"
    if device_type == "cuda":
        return "fp16"
    if device_type == "cpu" and cpu_has_bf16():
        return "bf16"
    return "off"
