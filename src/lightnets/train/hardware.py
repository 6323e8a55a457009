"""What the machine can do fast: bfloat16 units on this CPU, fused optimiser steps.

bfloat16 autocast only pays on CPUs that compute in bfloat16 natively (AVX512_BF16, or
Intel's AMX tiles): elsewhere PyTorch emulates it, slower than float32. So the flags in
``/proc/cpuinfo`` decide, and a CPU whose flags cannot be read counts as having none.
"""

from __future__ import annotations

from ..cpu import cpu_has_bf16


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
