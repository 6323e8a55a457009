"""Models for the deploy tests: every family at two sizes, with real BatchNorm statistics."""

from __future__ import annotations

import torch
from random_statistics import randomise_batchnorm
from torch import nn

import lightnets

# Every family at two (or more) sizes. Random weights, but BatchNorm statistics and
# affine parameters that are far from the identity, so folding is really exercised.
FAMILY_CONFIGS = [
    ("mobilenet_v1", {"width": 0.25}),
    ("mobilenet_v1", {"width": 0.5, "act": "relu6", "padding": "tf_same"}),
    ("mobilenet_v2", {"width": 0.35}),
    ("mobilenet_v2", {"width": 0.75, "padding": "tf_same"}),
    ("squeezenet1_0", {}),
    ("squeezenet1_1", {"bypass": "complex"}),
    ("squeezenet1_1", {"base_e": 64, "incr_e": 64}),  # half the expand filters
    ("shufflenet_v1", {"groups": 3, "scale": 0.5}),
    ("shufflenet_v1", {"groups": 8, "scale": 0.25}),
    ("shufflenet_v1", {"groups": 1, "scale": 0.5}),
]


def config_id(config: tuple[str, dict]) -> str:
    name, kwargs = config
    return "-".join([name] + [f"{k}={v}" for k, v in kwargs.items()])


def family_model(config: tuple[str, dict], seed: int = 0) -> nn.Module:
    name, kwargs = config
    torch.manual_seed(seed)
    return randomise_batchnorm(lightnets.create_model(name, **kwargs), seed)
