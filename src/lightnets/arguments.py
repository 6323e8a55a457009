"""Argument types for the commands: each refuses a bad value with the accepted range.

argparse turns the ``ValueError`` of a type function into a one-line usage error that
names the option, so ``--topk 0`` or ``--threads -3`` end as a message, not a traceback.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any


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


def _positive(text: str, suffixes: dict[str, float], expected: str) -> float:
    """A finite number above zero, optionally followed by one of ``suffixes`` (its factor)."""
    cleaned = text.strip().upper()
    suffix = cleaned[-1:] if cleaned[-1:] in suffixes else ""
    try:
        value = float(cleaned[: len(cleaned) - len(suffix)]) * suffixes.get(suffix, 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {expected}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(
            f"{text} is out of range: give a positive {'amount' if suffixes else 'number'}"
        )
    return value


def quantity(text: str) -> float:
    """A positive amount with an optional decimal suffix: ``50M`` = 50,000,000, ``1.5G``, ``300K``."""
    return _positive(text, {"K": 1e3, "M": 1e6, "G": 1e9}, "an amount; give e.g. 50M, 1.5G or 300K")


def positive_number(text: str) -> float:
    """A finite number above zero."""
    return _positive(text, {}, "a number")


quantity.__name__ = "amount"
positive_number.__name__ = "number"


def add_command(
    subparsers: Any, name: str, summary: str, description: str, epilog: str
) -> argparse.ArgumentParser:
    """A ``lightnets`` subcommand whose ``--help`` keeps the line breaks of its description
    and examples."""
    return subparsers.add_parser(
        name,
        help=summary,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
