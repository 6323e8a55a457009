"""Every registered model, swept from the registry (a new preset is tested without
editing this file): it builds, runs at its smallest valid input, is profiled, folds,
and exports to ONNX with the same outputs."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from random_statistics import randomise_batchnorm

import lightnets
from lightnets.deploy import export_onnx, fold_batchnorm
from lightnets.models import get_entry
from lightnets.tasks import TASK_FAMILIES

# The heavy reference networks take tens of seconds each to export: their ONNX step runs with -m slow.
HEAVY = {"vgg16", "inception_v3", "alexnet", "googlenet", "resnet50"}


def smallest_input(model: torch.nn.Module) -> int:
    return int(model.min_input_size)


# The classifiers; the task models (segmentation, tests/tasks) score pixels, not images.
CLASSIFIERS = [n for n in lightnets.list_models() if get_entry(n).family not in TASK_FAMILIES]


@pytest.fixture(params=CLASSIFIERS, scope="module")
def built(request):
    torch.manual_seed(0)
    model = lightnets.create_model(request.param, num_classes=7).eval()
    randomise_batchnorm(model)
    return request.param, model


def test_forward_at_the_smallest_input(built):
    name, model = built
    size = smallest_input(model)
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 7), name
    with pytest.raises(ValueError, match="too small"):
        model(torch.randn(1, 3, size - 1, size - 1))


def test_profile_counts_parameters_as_pytorch_does(built):
    name, model = built
    size = smallest_input(model)
    report = lightnets.profile(model, (3, size, size))
    total = sum(p.numel() for p in model.parameters())
    assert report.params + report.bn_params == total, name
    assert report.madds > 0


def test_folding_keeps_the_outputs(built):
    name, model = built
    size = max(smallest_input(model), 32)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        folded = fold_batchnorm(model)(x)
        plain = model(x)
    assert torch.allclose(folded, plain, atol=1e-4, rtol=1e-4), name


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in CLASSIFIERS]
)
def test_onnx_export_gives_the_same_outputs(name, tmp_path):
    torch.manual_seed(0)
    model = lightnets.create_model(name, num_classes=7).eval()
    randomise_batchnorm(model)
    size = max(smallest_input(model), 32)
    path = export_onnx(model, tmp_path / f"{name}.onnx", input_size=size)
    x = torch.randn(2, 3, size, size)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=1e-3)
