"""Shared fixtures: the real weights and data sets that sit beside the repository.

Tests and CI read the original weight files from ``../shared/weights`` (as a user
would through ``$LIGHTNETS_WEIGHTS``) and never download.
"""

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
WEIGHTS_ROOT = Path(os.environ.get("LIGHTNETS_WEIGHTS") or SHARED / "weights")
IMAGENET_SAMPLE = SHARED / "data" / "imagenet-sample"


@pytest.fixture(autouse=True)
def offline_weights(monkeypatch, tmp_path):
    """Point lightnets at the shared weights and an empty cache of the test's own."""
    monkeypatch.setenv("LIGHTNETS_WEIGHTS", str(WEIGHTS_ROOT))
    monkeypatch.setenv("LIGHTNETS_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def weights_root() -> Path:
    if not WEIGHTS_ROOT.is_dir():
        pytest.skip(f"no weights at {WEIGHTS_ROOT}")
    return WEIGHTS_ROOT


@pytest.fixture
def imagenet_sample() -> Path:
    if not IMAGENET_SAMPLE.is_dir():
        pytest.skip(f"no ImageNet sample at {IMAGENET_SAMPLE}")
    return IMAGENET_SAMPLE
