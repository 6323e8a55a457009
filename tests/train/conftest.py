"""Fixtures of the training tests: tiny real image sets cut from the shared Imagenette
(the ``imagenette`` fixture of ``tests/conftest.py``)."""

import shutil
from pathlib import Path

import pytest


@pytest.fixture
def tiny_imagenette(imagenette, tmp_path):
    """``make(classes, train_per_class, val_per_class)``: a train/ + val/ copy of real images."""

    def make(classes: int = 2, train: int = 8, val: int = 2) -> Path:
        root = tmp_path / f"imagenette_{classes}_{train}_{val}"
        for split, count in (("train", train), ("val", val)):
            for folder in sorted((imagenette / split).iterdir())[:classes]:
                target = root / split / folder.name
                target.mkdir(parents=True, exist_ok=True)
                for image in sorted(folder.iterdir())[:count]:
                    shutil.copy(image, target / image.name)
        return root

    return make
