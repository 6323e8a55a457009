"""The process's resident memory, as Linux reports it (``/proc/self/status``).

``VmRSS`` is the memory resident now and ``VmHWM`` its peak; writing 5 to
``/proc/self/clear_refs`` resets the peak to the current value, so the peak of one stretch
of work can be read on its own. Elsewhere the kernel does not say, and both give None.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["reset_peak", "resident_kb"]


def resident_kb(key: str = "VmRSS") -> int | None:
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last reset) in kB; None if unknown."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    found = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) if found else None


def reset_peak() -> bool:
    """Reset ``VmHWM`` to ``VmRSS``; False where that cannot be done."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False
