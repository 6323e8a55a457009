"""What this CPU can do, read from its flags rather than assumed.

The machines lightnets runs on differ (AVX2 only, AVX-512 with VNNI and bfloat16, AMX):
int8 kernels without VNNI saturate 8-bit x 8-bit products unless activations keep to 7
bits, and bfloat16 only pays where the CPU computes in it natively. A CPU whose flags
cannot be read counts as having none.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

BF16_FLAGS = ("avx512_bf16", "amx_bf16")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


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
    return any(flag in cpu_flags() for flag in BF16_FLAGS)


@functools.cache
def cpu_has_vnni() -> bool:
    """Whether this CPU multiplies 8-bit integers into 32-bit sums in one step (VNNI, AMX)."""
    return any(flag in cpu_flags() for flag in VNNI_FLAGS)


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), or what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def all_threads() -> int:
    """The logical CPUs this process may run on (its affinity), the "all cores" of thread options."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
