"""Feature levels and ``forward_intermediates`` on every registered model (timm's interface).

Shapes are checked at each model's smallest input on models whose weights are left
zero (built on the meta device, then given zeroed CPU storage: VGG16 costs nothing
to build); the values on small, initialised models.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import nn

import lightnets
from lightnets.models import get_entry
from lightnets.models.base import FeatureInfo
from lightnets.tasks import TASK_FAMILIES

# The classifiers: task models (segmentation) have no feature levels of their own.
NAMES = [n for n in lightnets.list_models() if get_entry(n).family not in TASK_FAMILIES]
LIGHT = ("mobilenet_v1_025", "mobilenet_v2_035", "shufflenet_v1_g8_025", "squeezenet1_1")
# The families whose blocks have an inner tensor, and the module it comes from.
INNER = {
    "mobilenet_v1": "depthwise",
    "mobilenet_v2": "expand",
    "shufflenet_v1": "compress",
    "squeezenet": "squeeze",
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny inputs: a second thread only adds synchronisation, a lot on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


def meta_model(name: str, location: str = "output") -> nn.Module:
    with torch.device("meta"):
        model = lightnets.create_model(name).eval()
    model.feature_location = location
    return model


@functools.cache
def _shape_model(name: str) -> nn.Module:
    model = meta_model(name).to_empty(device="cpu")
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.zero_()  # not garbage memory: denormal or NaN values slow every operation
    return model


def shape_model(name: str, location: str = "output") -> nn.Module:
    """A model for shapes only: zero weights, built without the cost of initialising."""
    model = _shape_model(name)
    model.feature_location = location
    return model


def real_model(name: str, location: str = "output") -> nn.Module:
    torch.manual_seed(0)
    model = lightnets.create_model(name).eval()
    model.feature_location = location
    return model


def small_input(model: nn.Module) -> torch.Tensor:
    return torch.zeros(1, 3, model.min_input_size, model.min_input_size)


def layer_outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    outputs = []
    for layer in model.features:
        x = layer(x)
        outputs.append(x)
    return outputs


def module_outputs(model: nn.Module, names: list[str], x: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """``model.forward_features(x)`` and the outputs of the named modules, by hooks."""
    captured: dict[str, torch.Tensor] = {}
    handles = [
        model.get_submodule(name).register_forward_hook(
            lambda _m, _i, out, name=name: captured.setdefault(name, out.clone())
        )
        for name in names
    ]
    try:
        final = model.forward_features(x)
    finally:
        for handle in handles:
            handle.remove()
    return final, captured


@pytest.mark.parametrize("name", NAMES)
def test_one_level_per_output_stride_at_its_last_layer(name):
    model = meta_model(name)
    info = model.feature_info
    strides = [level.reduction for level in info]
    assert strides == sorted(set(strides)) == model.feature_strides()
    assert strides[-1] == model.total_stride
    last_at = {entry.reduction: entry.index for entry in model.layer_info}
    assert [level.index for level in info] == [last_at[s] for s in strides]
    assert [level.module for level in info] == [f"features.{i}" for i in last_at.values()]
    assert all(level.location == "output" for level in info)
    # timm's accessors: keys and the list's helpers.
    assert info[-1]["num_chs"] == info.channels(-1) == info.channels()[-1] == model.num_features or name in (
        "alexnet",
        "vgg16",  # their heads end in 4096-wide hidden layers
    )
    assert info.reduction() == strides and info.module_name(0) == info[0]["module"]


@pytest.mark.parametrize("location", ["output", "expansion"])
@pytest.mark.parametrize("name", NAMES)
def test_intermediates_have_the_channels_of_feature_info(name, location):
    model = shape_model(name, location)
    x = small_input(model)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        assert final.shape == model.forward_features(x).shape
    assert len(maps) == len(model.feature_info)
    for fmap, level in zip(maps, model.feature_info, strict=True):
        assert fmap.shape[:2] == (1, level.num_chs), level


@pytest.mark.parametrize(
    "family", ["mobilenet_v1", "mobilenet_v2", "shufflenet_v1", "squeezenet1_0", "reference"]
)
def test_levels_are_at_their_strides_at_224(family):
    # On the meta device: shapes without arithmetic, so the heavy models cost little.
    names = lightnets.list_models("*") if family == "reference" else [family]
    names = [n for n in names if family != "reference" or lightnets.models.get_entry(n).family == "reference"]
    for name in names:
        for location in ("output",) if family == "reference" else ("output", "expansion"):
            model = meta_model(name, location)
            maps = model.forward_intermediates(
                torch.empty(1, 3, 224, 224, device="meta"), intermediates_only=True
            )
            for fmap, level in zip(maps, model.feature_info, strict=True):
                # Unpadded layers (SqueezeNet, Inception v3) lose a few pixels on the way.
                assert round(math.log2(224 / fmap.shape[-1])) == math.log2(level.reduction), (name, level)


@pytest.mark.parametrize("name", NAMES)
def test_indices_stop_early_only_and_nhwc(name):
    model = shape_model(name)
    x = small_input(model)
    levels = model.feature_info
    n = len(levels)
    outputs = layer_outputs(model, x)

    def shapes(maps):
        return [tuple(m.shape) for m in maps]

    every = [tuple(outputs[level.index].shape) for level in levels]
    assert shapes(model.forward_intermediates(x, intermediates_only=True)) == every
    # An int: the last n levels. A list: those levels, negative from the end, in level order.
    assert shapes(model.forward_intermediates(x, indices=2)[1]) == every[-2:]
    assert shapes(model.forward_intermediates(x, indices=[0, -1])[1]) == [every[0], every[-1]]
    assert shapes(model.forward_intermediates(x, indices=[-1, 0])[1]) == [every[0], every[-1]]
    # stop_early: the final features are the last chosen level's map.
    final, maps = model.forward_intermediates(x, indices=[1], stop_early=True)
    assert shapes(maps) == [every[1]] and tuple(final.shape) == every[1]
    final, _ = model.forward_intermediates(x, indices=[1])
    assert final.shape == outputs[-1].shape
    nhwc = model.forward_intermediates(x, indices=[0, -1], output_fmt="NHWC", intermediates_only=True)
    assert shapes(nhwc) == [(s[0], s[2], s[3], s[1]) for s in (every[0], every[-1])]
    for bad in (0, n + 1, [n], [-n - 1], []):
        with pytest.raises(ValueError, match="out of range|no feature level"):
            model.forward_intermediates(x, indices=bad)
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NLC")


@pytest.mark.parametrize("name", NAMES)
def test_expansion_location_gives_the_inner_tensor_of_the_named_module(name):
    model = shape_model(name, "expansion")
    family = lightnets.models.get_entry(name).family
    inner = [level for level in model.feature_info if level.location == "expansion"]
    if family not in INNER or name == "mobilenet_v1_conv":
        assert inner == []  # the reference models and Conv MobileNet keep their outputs
        return
    assert inner and all(level.module.endswith("." + INNER[family]) for level in inner)
    output_levels = meta_model(name).feature_info
    assert [level.reduction for level in model.feature_info] == [level.reduction for level in output_levels]
    x = small_input(model)
    _, captured = module_outputs(model, [level.module for level in model.feature_info], x)
    maps = model.forward_intermediates(x, intermediates_only=True)
    for fmap, level in zip(maps, model.feature_info, strict=True):
        block = model.features[level.index]
        if level.location == "expansion":
            assert level.num_chs == block.inner_channels
        assert fmap.shape == captured[level.module].shape, level


@pytest.mark.parametrize("location", ["output", "expansion"])
@pytest.mark.parametrize("name", LIGHT)
def test_intermediates_are_the_named_modules_outputs(name, location):
    model = real_model(name, location)
    side = model.min_input_size
    x = torch.randn(1, 3, side, side)
    with torch.no_grad():
        final, captured = module_outputs(model, [level.module for level in model.feature_info], x)
        got_final, maps = model.forward_intermediates(x)
        nhwc = model.forward_intermediates(x, output_fmt="NHWC", intermediates_only=True)
        early = model.forward_intermediates(x, indices=[-2], stop_early=True, intermediates_only=True)
    assert torch.allclose(got_final, final)
    for fmap, channels_last, level in zip(maps, nhwc, model.feature_info, strict=True):
        assert torch.allclose(fmap, captured[level.module]), level
        assert torch.equal(channels_last, fmap.permute(0, 2, 3, 1))
    assert torch.allclose(early[0], maps[-2])


def test_mobilenet_v2_expansion_levels():
    info = meta_model("mobilenet_v2", "expansion").feature_info
    assert [(i.module, i.num_chs, i.reduction) for i in info] == [
        ("features.2.expand", 96, 2),  # 16 * 6, the first t = 6 block
        ("features.4.expand", 144, 4),
        ("features.7.expand", 192, 8),
        ("features.14.expand", 576, 16),
        ("features.18", 1280, 32),  # no block leaves stride 32: the last 1x1 conv's output
    ]


def test_expansion_location_of_the_other_families():
    shufflenet = meta_model("shufflenet_v1", "expansion").feature_info  # g = 3: 240, 480, 960
    assert [(i.module, i.num_chs) for i in shufflenet] == [
        ("features.0", 24),  # the stem, then the max pool: no unit at stride 2
        ("features.2.compress", 60),  # the bottleneck of stage 2's first unit
        ("features.6.compress", 120),
        ("features.14.compress", 240),
        ("features.17.compress", 240),  # nothing leaves stride 32: the last unit's own
    ]
    squeezenet = meta_model("squeezenet1_0", "expansion").feature_info
    assert [(i.module, i.num_chs) for i in squeezenet] == [
        ("features.0", 96),
        ("features.4.squeeze", 32),  # fire4, pooled after
        ("features.9.squeeze", 64),  # fire8
        ("features.11.squeeze", 64),  # fire9
    ]
    mobilenet_v1 = meta_model("mobilenet_v1", "expansion").feature_info
    assert [(i.module, i.num_chs) for i in mobilenet_v1] == [
        ("features.1.depthwise", 32),
        ("features.3.depthwise", 128),
        ("features.5.depthwise", 256),
        ("features.11.depthwise", 512),
        ("features.13.depthwise", 1024),
    ]


def test_feature_location_switches_back_and_refuses_unknown_names():
    model = meta_model("mobilenet_v2")
    before = list(model.feature_info)
    model.feature_location = "expansion"
    assert model.feature_location == "expansion" and model.feature_info != before
    model.feature_location = "output"
    assert list(model.feature_info) == before
    with pytest.raises(ValueError, match="unknown feature location 'depthwise'"):
        model.feature_location = "depthwise"


def test_feature_info_reads_as_a_dict():
    info = FeatureInfo(3, 24, 4, "features.3")
    assert info["num_chs"] == 24 and info["reduction"] == 4 and info["module"] == "features.3"
    assert dict(info) == {
        "index": 3,
        "num_chs": 24,
        "reduction": 4,
        "module": "features.3",
        "location": "output",
    }
    assert info.get("stage", 7) == 7 and "num_chs" in info
    with pytest.raises(KeyError):
        info["stage"]


def test_prune_intermediate_layers():
    model = real_model("mobilenet_v2_035")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        wanted = model.forward_intermediates(x, indices=[1, 3], intermediates_only=True)
        assert model.prune_intermediate_layers([1, 3]) == [1, 3]
        assert len(model.features) == 14 and len(model.feature_info) == 4  # up to features.13
        assert model.total_stride == 16 and model.num_classes == 0
        kept = model.forward_intermediates(x, indices=[1, 3], intermediates_only=True)
        assert all(torch.equal(a, b) for a, b in zip(wanted, kept, strict=True))
        assert model(x).shape == (1, model.feature_info[-1].num_chs)
    with pytest.raises(ValueError, match="pruned"):
        model.feature_location = "expansion"  # features.14 went with the pruning

    model = real_model("mobilenet_v2_035", "expansion")
    model.prune_intermediate_layers(2)  # the last two levels: nothing to drop
    assert len(model.features) == 19 and len(model.feature_info) == 5
    model.prune_intermediate_layers([-2])
    assert len(model.features) == 15  # the stride-16 expansion is inside features.14
    with pytest.raises(ValueError, match="prune_head=True"):
        real_model("mobilenet_v2_035").prune_intermediate_layers([0], prune_head=False)
    real_model("mobilenet_v2_035").prune_intermediate_layers(2, prune_head=False)  # all layers kept
