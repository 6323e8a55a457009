"""Proxy trainings: what the search predicts, checked by training the candidates.

The accuracy curve knows the papers' ImageNet numbers, not the data at hand. With
``lightnets search --train DATA``, chosen members of the front are trained from scratch
by ``lightnets train`` for a fixed wall-clock budget on DATA (the design studies' proxy
protocol), and their validation top-1 is reported beside the prediction, with the rank
correlation of the two. Each run has its own folder under the search's; a finished run
is read back, and one a kill cut short starts again (its budget is minutes).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..train import TrainConfig, train
from .search import Evaluated

SUMMARY = "summary.json"


def spread(front: Sequence[Evaluated], count: int) -> list[Evaluated]:
    """``count`` members of the front, evenly spread over it, the most accurate first."""
    if count < 1:
        return []
    best_first = list(reversed(front))
    picks = sorted({round(i) for i in np.linspace(0, len(best_first) - 1, min(count, len(best_first)))})
    return [best_first[i] for i in picks]


def run_folder(out: Path, row: Evaluated) -> Path:
    return out / "proxy" / re.sub(r"[^A-Za-z0-9_.=@-]+", "_", row.candidate.label).strip("_")


def proxy_train(
    rows: Sequence[Evaluated], data: str, budget_s: float, out: Path, seed: int = 0, progress: bool = True
) -> None:
    """Train each row's candidate on ``data`` for ``budget_s`` seconds and set its ``proxy_top1``."""
    for row in rows:
        folder = run_folder(out, row)
        summary = folder / SUMMARY
        if not summary.is_file():
            if folder.exists():
                shutil.rmtree(folder)
            if progress:
                print(f"proxy training {row.candidate.label} for {budget_s:g} s on {data}", flush=True)
            train(
                TrainConfig(
                    model=row.candidate.model,
                    model_kwargs=row.candidate.options,
                    data=str(data),
                    out=str(folder),
                    resolution=row.candidate.resolution,
                    time_budget=budget_s,
                    seed=seed,
                    progress=progress,
                )
            )
        recommended = json.loads(summary.read_text()).get("recommended") or {}
        top1 = recommended.get("val_top1")
        if top1 is None:
            raise ValueError(
                f"{data} has no validation images to score the proxy training of {row.candidate.label}"
            )
        row.proxy_top1 = float(top1)
