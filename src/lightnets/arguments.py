"""Argument types for the commands: each refuses a bad value with the accepted range.

argparse turns the ``ValueError`` of a type function into a one-line usage error that
names the option, so ``--topk 0`` or ``--threads -3`` end as a message, not a traceback.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def at_least(low: int) -> Callable[[str], int]:
    """An integer type accepting ``low`` and above."""

    def parse(text: str) -> int:
        value = _integer(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is out of range: give a whole number >= {low}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


positive_int = at_least(1)
non_negative_int = at_least(0)


def number_in(low: float, high: float, *, high_open: bool = False) -> Callable[[str], float]:
    """A float type accepting ``[low, high]`` (``[low, high)`` with ``high_open``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        inside = math.isfinite(value) and low <= value and (value < high if high_open else value <= high)
        if not inside:
            bounds = f"[{low:g}, {high:g}{')' if high_open else ']'}"
            raise argparse.ArgumentTypeError(f"{text} is out of range: give a number in {bounds}")
        return value

    parse.__name__ = "number"
    return parse
