"""Rows of results as text: an aligned table, Markdown, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from tabulate import tabulate

FORMATS = ("table", "markdown", "csv", "json")


def render(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "table", floatfmt: str = ".2f"
) -> str:
    """Render ``rows`` under ``headers``; JSON gives a list of objects keyed by header."""
    if fmt == "table":
        return tabulate(rows, headers=headers, floatfmt=floatfmt, intfmt=",", disable_numparse=False)
    if fmt == "markdown":
        return tabulate(rows, headers=headers, tablefmt="github", floatfmt=floatfmt, intfmt=",")
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(headers)
        writer.writerows(rows)
        return buffer.getvalue().rstrip("\n")
    if fmt == "json":
        return json.dumps([dict(zip(headers, row, strict=True)) for row in rows], indent=2)
    raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
