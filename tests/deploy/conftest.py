"""Fixtures for the deploy tests: real photographs prepared as each model expects."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from lightnets.deploy import calibration_files, prepare_images
from lightnets.zoo import transform_of


@pytest.fixture
def image_files(imagenet_sample) -> list[Path]:
    """Six real photographs spread over the sample's classes."""
    return calibration_files(imagenet_sample / "images", 6)


@pytest.fixture
def real_batch(image_files):
    """``real_batch(model)``: the photographs prepared with the model's own transform."""

    def prepare(model: nn.Module, count: int | None = None) -> torch.Tensor:
        return prepare_images(image_files[:count], transform_of(model))

    return prepare
