"""Shared fixtures: the real weights and data sets that sit beside the repository.

Tests and CI read the original weight files from ``../shared/weights`` (as a user
would through ``$LIGHTNETS_WEIGHTS``, which overrides it) and never download. Every
path to ``../shared`` is worked out here, once; tests ask for it through a fixture.
"""

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"  # beside the repository
WEIGHTS_ROOT = Path(os.environ.get("LIGHTNETS_WEIGHTS") or SHARED / "weights")
IMAGENET_SAMPLE = SHARED / "data" / "imagenet-sample"
IMAGENETTE = SHARED / "data" / "imagenette2-224-subset"


@pytest.fixture(autouse=True)
def offline_weights(monkeypatch, tmp_path):
    """Point lightnets at the shared weights and an empty cache of the test's own."""
    monkeypatch.setenv("LIGHTNETS_WEIGHTS", str(WEIGHTS_ROOT))
    monkeypatch.setenv("LIGHTNETS_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def weights_root() -> Path:
    if not WEIGHTS_ROOT.is_dir():
        pytest.skip(f"no weights at {WEIGHTS_ROOT}")
    return WEIGHTS_ROOT


@pytest.fixture(scope="session")
def imagenet_sample() -> Path:
    """500 real ImageNet validation images (``images/``) with their labels."""
    if not IMAGENET_SAMPLE.is_dir():
        pytest.skip(f"no ImageNet sample at {IMAGENET_SAMPLE}")
    return IMAGENET_SAMPLE


@pytest.fixture(scope="session")
def imagenette() -> Path:
    """The Imagenette subset (``train/`` and ``val/``, 10 class folders each)."""
    if not (IMAGENETTE / "train").is_dir():
        pytest.skip(f"no Imagenette subset at {IMAGENETTE}")
    return IMAGENETTE
