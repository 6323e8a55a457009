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
    """Render ``rows`` under ``headers``; JSON gives a list of objects keyed by header.

    Strings are printed as given (a paper's "4.2" stays "4.2"); in the text formats
    integers get thousands separators and floats ``floatfmt``.
    """
    if fmt in ("table", "markdown"):
        text_rows = [[_cell(value, floatfmt) for value in row] for row in rows]
        numeric = [
            all(isinstance(row[i], (int, float)) or row[i] in ("", None) for row in rows)
            for i in range(len(headers))
        ]
        align = ["right" if is_numeric else "left" for is_numeric in numeric]
        tablefmt = "simple" if fmt == "table" else "github"
        return tabulate(text_rows, headers=headers, tablefmt=tablefmt, disable_numparse=True, colalign=align)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(headers)
        writer.writerows(rows)
        return buffer.getvalue().rstrip("\n")
    if fmt == "json":
        return json.dumps([dict(zip(headers, row, strict=True)) for row in rows], indent=2)
    raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")


def _cell(value: Any, floatfmt: str) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return format(value, floatfmt)
    return str(value)
