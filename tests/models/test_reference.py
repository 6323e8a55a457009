"""The heavy reference models: interface, shapes, and costs against torchvision.

Their costs against the papers are checked with the other figures in test_papers.py.

The big models are built and profiled on the meta device (shapes only, no arithmetic);
only small models get real forwards, at small inputs.
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

import lightnets
from lightnets.cost import CostReport, profile
from peers import torchvision_or_skip

NAMES = ("alexnet", "vgg16", "googlenet", "resnet50", "inception_v3")
INPUT_SIDE = {"alexnet": 227, "vgg16": 224, "googlenet": 224, "resnet50": 224, "inception_v3": 299}


def meta_model(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return lightnets.create_model(name, **kwargs).eval()


@functools.cache
def cost(name: str) -> CostReport:
    side = INPUT_SIDE[name]
    return profile(meta_model(name), (3, side, side))


def test_registered():
    assert set(NAMES) <= set(lightnets.list_models())


@pytest.mark.parametrize("name", NAMES)
def test_interface_and_shapes(name):
    model = meta_model(name, num_classes=10, dropout=0.2)
    assert isinstance(model.features, nn.Sequential)
    assert len(model.layer_info) == len(model.features)
    assert model.num_classes == 10
    for side in (INPUT_SIDE[name], model.min_input_size):
        x = torch.empty(2, 3, side, side, device="meta")
        assert model(x).shape == (2, 10)
    features = model.forward_features(x)
    assert features.shape[1] == model.feature_info[-1].num_chs
    assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)
    model.reset_classifier(0)
    assert model.num_classes == 0
    assert model(x).shape == (2, model.num_features)


@pytest.mark.parametrize("name", NAMES)
def test_feature_info(name):
    model = meta_model(name)
    side = INPUT_SIDE[name]
    x = torch.empty(1, 3, side, side, device="meta")
    for info, layer in zip(model.layer_info, model.features, strict=True):
        x = layer(x)
        assert x.shape[1] == info.num_chs, info
        if side == 224:  # 227 (AlexNet) and 299 (Inception v3) do not divide evenly
            assert x.shape[-1] == side // info.reduction, info
    assert model.total_stride == 32


@pytest.mark.parametrize("name", ["alexnet", "vgg16", "inception_v3"])
def test_min_input_size(name):
    model = meta_model(name)
    side = model.min_input_size
    assert model.features(torch.empty(1, 3, side, side, device="meta")).shape[-1] == 1
    with pytest.raises(RuntimeError):  # the layers themselves refuse one pixel less
        model.features(torch.empty(1, 3, side - 1, side - 1, device="meta"))
    with pytest.raises(ValueError, match="too small"):
        model(torch.empty(1, 3, side - 1, side - 1, device="meta"))
    assert {"alexnet": 67, "vgg16": 32, "inception_v3": 75}[name] == side


def test_alexnet_is_the_two_gpu_network():
    groups = [m.groups for m in meta_model("alexnet").modules() if isinstance(m, nn.Conv2d)]
    assert groups == [1, 2, 1, 2, 2]  # conv2, conv4, conv5 stay on their own GPU


def test_googlenet_has_5x5_branches():
    kernels = [m.kernel_size for m in meta_model("googlenet").modules() if isinstance(m, nn.Conv2d)]
    assert kernels.count((5, 5)) == 9  # one per Inception module (torchvision uses 3x3)
    assert cost("googlenet").bn_params == 0


def test_resnet50_stride_on_first_1x1():
    model = meta_model("resnet50")
    block = model.features[2 + 3]  # stem conv and pool, three conv2_x blocks: first conv3_x
    assert (block.reduce.conv.stride, block.conv.conv.stride) == ((2, 2), (1, 1))


# Same architecture in torchvision: equal totals. Its ResNet-50 is "v1.5" (the stride
# on the 3x3 conv: 4.09 G MAdds), so only the parameters compare. Its GoogLeNet uses
# 3x3 convs in the "5x5" branch and its AlexNet is the one-GPU variant: no comparison.
TORCHVISION = {
    "vgg16": ({}, ("params", "madds")),
    "resnet50": ({}, ("params", "bn_params")),
    "inception_v3": ({"aux_logits": False, "init_weights": False}, ("params", "madds", "bn_params")),
}


@pytest.mark.parametrize("name", list(TORCHVISION))
def test_same_cost_as_torchvision(name):
    tvm = torchvision_or_skip()
    kwargs, metrics = TORCHVISION[name]
    with torch.device("meta"):
        theirs = getattr(tvm, name)(**kwargs)
    side = INPUT_SIDE[name]
    reference = profile(theirs, (3, side, side))
    for metric in metrics:
        assert getattr(cost(name), metric) == getattr(reference, metric), metric


@pytest.mark.parametrize(("name", "side"), [("resnet50", 64), ("googlenet", 64)])
def test_real_forward(name, side):
    torch.manual_seed(0)
    model = lightnets.create_model(name, num_classes=10).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, side, side))
    assert out.shape == (1, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_bad_arguments(name):
    with pytest.raises(ValueError, match="dropout"):
        meta_model(name, dropout=1.0)
    with pytest.raises(ValueError, match="num_classes"):
        meta_model(name, num_classes=-1)
