"""What a run leaves behind to read: metrics as CSV and JSON lines, and a plot of them.

Two kinds of record: ``step`` (every few steps: loss, accuracy, learning rate, images
per second) and ``epoch`` (training averages and validation accuracy). Both go to
``metrics.jsonl``, one object per line; epoch records also go to ``metrics.csv``. When a
killed run resumes from step k, records after step k (written after its last
checkpoint; the checkpoint counts the records before it) are dropped first, so the
files read as if the run had never stopped.

The logs are strict JSON (a non-finite number is written ``null``, never ``NaN``) and
grow one whole line per write, flushed; files rewritten whole are replaced atomically.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from ..files import append_line, finite_json, write_figure, write_text

JSONL = "metrics.jsonl"
CSV = "metrics.csv"
PLOT = "curves.png"


class MetricsLog:
    """Appends records to ``folder/metrics.jsonl`` and epoch records to ``metrics.csv``."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.jsonl = self.folder / JSONL
        self.csv = self.folder / CSV
        self.count = len(self.read())  # records written so far

    def read(self) -> list[dict[str, Any]]:
        if not self.jsonl.is_file():
            return []
        records = []
        for line in self.jsonl.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut short by a kill: it and anything after it are dropped
        return records

    def truncate(self, count: int) -> None:
        """Keep only the first ``count`` records (those a checkpoint had seen written)."""
        kept = self.read()[:count]
        self._rewrite(kept)
        self.count = len(kept)

    def _rewrite(self, records: list[dict[str, Any]]) -> None:
        write_text(self.jsonl, "".join(_json_line(r) + "\n" for r in records))
        epochs = [_csv_row(r) for r in records if r["kind"] == "epoch"]
        if epochs:
            columns = list(dict.fromkeys(key for row in epochs for key in row))
            write_text(self.csv, _csv_text(columns, epochs, header=True))
        else:
            self.csv.unlink(missing_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        append_line(self.jsonl, _json_line(record))
        self.count += 1
        if record["kind"] == "epoch":
            self._append_csv(record)

    def _append_csv(self, record: dict[str, Any]) -> None:
        row = _csv_row(record)
        if not self.csv.is_file():
            write_text(self.csv, _csv_text(list(row), [row], header=True))
            return
        with open(self.csv, newline="") as handle:
            header = next(csv.reader(handle), [])
        if header != list(row):
            # Another set of columns (e.g. validation added on resume): rewrite with the union.
            with open(self.csv, newline="") as handle:
                rows = [*csv.DictReader(handle), row]
            columns = list(dict.fromkeys([*header, *row]))
            write_text(self.csv, _csv_text(columns, rows, header=True))
            return
        append_line(self.csv, _csv_text(list(row), [row], header=False))


def _json_line(record: dict[str, Any]) -> str:
    return json.dumps(finite_json(record), allow_nan=False)


def _csv_row(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in finite_json(record).items() if k != "kind"}


def _csv_text(columns: list[str], rows: list[dict[str, Any]], header: bool) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def plot_curves(records: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Training loss and accuracy per step, validation top-1 per epoch, and the learning rate."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display is needed or assumed
    import matplotlib.pyplot as plt

    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), dpi=110)
    loss_ax, acc_ax, lr_ax = axes
    if steps:
        x = [r["epoch_float"] for r in steps]
        loss_ax.plot(x, [r["loss"] for r in steps], lw=1, label="train (running)")
        acc_ax.plot(x, [r["accuracy"] for r in steps], lw=1, label="train (running)")
        lr_ax.plot(x, [r["lr"] for r in steps], lw=1)
    if epochs:
        x = [r["epoch"] for r in epochs]
        if any("val_loss" in r for r in epochs):
            loss_ax.plot(x, [r.get("val_loss") for r in epochs], "o-", label="validation")
        for key, label in (("val_top1", "validation"), ("val_top1_ema", "validation, EMA weights")):
            if any(key in r for r in epochs):
                acc_ax.plot(x, [r.get(key) for r in epochs], "o-", label=label)
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss")
    acc_ax.set(xlabel="epoch", ylabel="top-1 %", title="accuracy")
    lr_ax.set(xlabel="epoch", ylabel="learning rate", title="learning rate")
    for ax in axes:
        ax.grid(alpha=0.3)
    loss_ax.legend()
    acc_ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return write_figure(fig, path)
