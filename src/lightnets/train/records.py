"""What a run leaves behind to read: metrics as CSV and JSON lines, and a plot of them.

Two kinds of record: ``step`` (every few steps: loss, accuracy, learning rate, images
per second) and ``epoch`` (training averages and validation accuracy). Both go to
``metrics.jsonl``, one object per line; epoch records also go to ``metrics.csv``. When a
killed run resumes from step k, records after step k (written after its last
checkpoint; the checkpoint counts the records before it) are dropped first, so the
files read as if the run had never stopped.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

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
        temporary = self.jsonl.with_name(f".{JSONL}.tmp")
        temporary.write_text("".join(json.dumps(r) + "\n" for r in records))
        temporary.replace(self.jsonl)
        epochs = [r for r in records if r["kind"] == "epoch"]
        self.csv.unlink(missing_ok=True)
        for record in epochs:
            self._append_csv(record)

    def write(self, record: dict[str, Any]) -> None:
        with open(self.jsonl, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        self.count += 1
        if record["kind"] == "epoch":
            self._append_csv(record)

    def _append_csv(self, record: dict[str, Any]) -> None:
        row = {k: v for k, v in record.items() if k != "kind"}
        new = not self.csv.is_file()
        if not new:
            with open(self.csv, newline="") as handle:
                header = next(csv.reader(handle), [])
            if header != list(row):
                # Another set of columns (e.g. validation added on resume): rewrite with the union.
                with open(self.csv, newline="") as handle:
                    rows = [*csv.DictReader(handle), row]
                columns = list(dict.fromkeys([*header, *row]))
                with open(self.csv, "w", newline="") as handle:
                    writer = csv.DictWriter(handle, columns)
                    writer.writeheader()
                    writer.writerows(rows)
                return
        with open(self.csv, "a", newline="") as handle:
            writer = csv.DictWriter(handle, list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)


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
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
