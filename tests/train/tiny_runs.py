"""The training tests' tiny runs: MobileNetV2 0.35 at 32 px, batch 4, one epoch, one
thread, quiet; each test overrides what it is about."""

from __future__ import annotations

from pathlib import Path

from lightnets.train import TrainConfig

TINY = {
    "model": "mobilenet_v2",
    "model_kwargs": {"width": 0.35},
    "threads": 1,
    "progress": False,
    "log_every": 1,
}


def tiny_config(data: str | Path, out: str | Path, **options) -> TrainConfig:
    """A tiny run on ``data`` into ``out``; ``options`` override any field."""
    values = {**TINY, "epochs": 1, "batch_size": 4, "resolution": 32, **options}
    return TrainConfig(data=str(data), out=str(out), **values)
